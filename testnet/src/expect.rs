//! What a node's peer list should show, as checks for
//! [`Testnet::wait_views`](crate::Testnet::wait_views) and
//! [`Testnet::hold_views`](crate::Testnet::hold_views). Each returns
//! `Err(what it saw instead)`.

use std::collections::BTreeSet;
use std::fmt;

use mesh_protocol::gossip::{PeerState, PeerView};

/// Exactly `nodes` are alive (or suspect for a moment: not declared
/// dead), and each has published a topology with at least one core. Dead
/// peers may still be listed.
pub fn alive_with_topology<S: fmt::Display>(
    nodes: &[S],
) -> impl Fn(&[PeerView]) -> Result<(), String> + use<S> {
    let want: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    move |peers| {
        let alive: BTreeSet<String> = peers
            .iter()
            .filter(|p| p.state.is_live())
            .map(|p| p.node.to_string())
            .collect();
        if alive != want {
            return Err(format!("alive {} (want {})", list(&alive), list(&want)));
        }
        let bare: Vec<String> = peers
            .iter()
            .filter(|p| p.state.is_live())
            .filter(|p| {
                p.info
                    .as_ref()
                    .is_none_or(|i| i.topology.total_cores() == 0)
            })
            .map(|p| match &p.error {
                Some(e) => format!("{} ({e})", p.node),
                None => p.node.to_string(),
            })
            .collect();
        if !bare.is_empty() {
            return Err(format!("no topology yet from {}", bare.join(", ")));
        }
        Ok(())
    }
}

/// Each of `nodes` is listed as suspect: alive to the failure detector,
/// but quiet for a few gossip rounds.
pub fn suspect<S: fmt::Display>(
    nodes: &[S],
) -> impl Fn(&[PeerView]) -> Result<(), String> + use<S> {
    in_state(nodes, PeerState::Suspect)
}

/// Each of `nodes` is listed as dead.
pub fn dead<S: fmt::Display>(nodes: &[S]) -> impl Fn(&[PeerView]) -> Result<(), String> + use<S> {
    in_state(nodes, PeerState::Dead)
}

/// Each of `nodes` is listed in `state`.
fn in_state<S: fmt::Display>(
    nodes: &[S],
    state: PeerState,
) -> impl Fn(&[PeerView]) -> Result<(), String> + use<S> {
    let want: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    move |peers| {
        let wrong: Vec<String> = want
            .iter()
            .filter_map(|n| match peers.iter().find(|p| p.node.as_str() == n) {
                Some(p) if p.state == state => None,
                Some(p) => Some(format!("{n} is {}", p.state)),
                None => Some(format!("{n} is not listed")),
            })
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join(", "))
        }
    }
}

/// None of `nodes` is listed at all, alive or dead.
pub fn absent<S: fmt::Display>(nodes: &[S]) -> impl Fn(&[PeerView]) -> Result<(), String> + use<S> {
    let banned: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    move |peers| {
        let seen: Vec<String> = peers
            .iter()
            .filter(|p| banned.contains(p.node.as_str()))
            .map(|p| format!("{} ({})", p.node, p.state))
            .collect();
        if seen.is_empty() {
            Ok(())
        } else {
            Err(format!("lists {}", seen.join(", ")))
        }
    }
}

fn list(nodes: &BTreeSet<String>) -> String {
    if nodes.is_empty() {
        "none".to_owned()
    } else {
        nodes.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::NodeId;
    use mesh_protocol::gossip::NodeInfo;
    use mesh_protocol::load::{Load, TopologySummary};

    fn peer(node: &str, state: PeerState, cores: Option<u32>) -> PeerView {
        PeerView {
            node: NodeId::new(node).unwrap(),
            state,
            is_self: false,
            generation: 1,
            gossip_addr: "10.200.0.2:7946".parse().unwrap(),
            info: cores.map(|c| NodeInfo {
                quic: "10.200.0.2:7946".parse().unwrap(),
                api: "10.200.0.2:7700".parse().unwrap(),
                version: "0.1.0".into(),
                topology: TopologySummary {
                    packages: 1,
                    cores_per_numa: vec![c],
                    pus_per_core: 1,
                },
                load: Load::default(),
                draining: false,
                services: Default::default(),
                service_images: Default::default(),
                images: Default::default(),
            }),
            error: None,
            last_heard_ms: Some(10),
            verified: true,
        }
    }

    use PeerState::{Alive, Dead, Suspect};

    #[test]
    fn alive_with_topology_wants_exactly_those_alive_with_cores() {
        let check = alive_with_topology(&["n1", "n2"]);
        assert_eq!(
            check(&[peer("n1", Alive, Some(2)), peer("n2", Alive, Some(2))]),
            Ok(())
        );
        // Dead extras are fine; missing, extra alive or no topology are not.
        assert!(
            check(&[
                peer("n1", Alive, Some(2)),
                peer("n2", Alive, Some(2)),
                peer("n3", Dead, None)
            ])
            .is_ok()
        );
        assert_eq!(
            check(&[peer("n1", Alive, Some(2))]),
            Err("alive n1 (want n1,n2)".into())
        );
        assert!(
            check(&[
                peer("n1", Alive, Some(2)),
                peer("n2", Alive, Some(2)),
                peer("x", Alive, Some(1))
            ])
            .is_err()
        );
        assert_eq!(
            check(&[peer("n1", Alive, Some(2)), peer("n2", Alive, None)]),
            Err("no topology yet from n2".into())
        );
        assert!(check(&[peer("n1", Alive, Some(2)), peer("n2", Alive, Some(0))]).is_err());
    }

    #[test]
    fn dead_and_absent() {
        let peers = [peer("n1", Alive, Some(1)), peer("n5", Dead, Some(1))];
        assert_eq!(dead(&["n5"])(&peers), Ok(()));
        assert_eq!(
            dead(&["n1", "n4"])(&peers),
            Err("n1 is alive, n4 is not listed".into())
        );
        assert_eq!(absent(&["evil"])(&peers), Ok(()));
        assert_eq!(absent(&["n5"])(&peers), Err("lists n5 (dead)".into()));
    }

    #[test]
    fn suspect_is_neither_dead_nor_missing_an_alive_peer() {
        let peers = [peer("n1", Alive, Some(1)), peer("n2", Suspect, Some(1))];
        assert_eq!(suspect(&["n2"])(&peers), Ok(()));
        assert_eq!(suspect(&["n1"])(&peers), Err("n1 is alive".into()));
        assert_eq!(dead(&["n2"])(&peers), Err("n2 is suspect".into()));
        // Not declared dead: still counted among the alive.
        assert_eq!(alive_with_topology(&["n1", "n2"])(&peers), Ok(()));
    }
}
