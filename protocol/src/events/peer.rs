//! Which change in this node's view of its peers is an event: a node seen
//! alive for the first time (or restarted), declared dead by the failure
//! detector, alive again, draining or not. Each node tells what its own
//! failure detector decided, so a death is told by every node that saw it.

use std::collections::BTreeMap;

use super::EventKind;
use crate::gossip::{PeerState, PeerView};
use crate::ids::NodeId;

/// What was last reported of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMark {
    state: PeerState,
    generation: u64,
    draining: bool,
}

/// What was last reported of every peer.
pub type PeerMarks = BTreeMap<NodeId, PeerMark>;

/// The events between `before` and the view `now`, as (kind, peer,
/// reason), and the marks to compare the next view with. This node
/// itself appears only when it starts or stops draining.
pub fn changes(
    before: &PeerMarks,
    now: &[PeerView],
) -> (Vec<(EventKind, NodeId, String)>, PeerMarks) {
    let mut events = Vec::new();
    let mut marks = PeerMarks::new();
    for p in now {
        let draining = p.info.as_ref().is_some_and(|i| i.draining);
        let mark = PeerMark {
            state: p.state,
            generation: p.generation,
            draining,
        };
        marks.insert(p.node.clone(), mark);
        let old = before.get(&p.node);
        if draining != old.is_some_and(|o| o.draining) && (old.is_some() || draining) {
            let (kind, why) = if draining {
                (
                    EventKind::PeerDrained,
                    "takes no new work; its tasks may move",
                )
            } else {
                (EventKind::PeerUndrained, "takes work again")
            };
            events.push((kind, p.node.clone(), why.to_owned()));
        }
        if p.is_self {
            continue;
        }
        let version = p
            .info
            .as_ref()
            .map(|i| format!(", version {}", i.version))
            .unwrap_or_default();
        let heard = p
            .last_heard_ms
            .map(|ms| format!("nothing heard from it for {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "nothing heard from it".into());
        let event = match (old.map(|o| o.state), p.state) {
            (None, PeerState::Alive) => Some((
                EventKind::PeerJoined,
                format!("seen alive at {}{version}", p.gossip_addr),
            )),
            (Some(PeerState::Alive), PeerState::Alive)
                if old.is_some_and(|o| o.generation != p.generation) =>
            {
                Some((
                    EventKind::PeerJoined,
                    format!("restarted (generation {}){version}", p.generation),
                ))
            }
            (Some(PeerState::Dead), PeerState::Alive) => {
                Some((EventKind::PeerAlive, format!("heard from again{version}")))
            }
            (Some(PeerState::Alive), PeerState::Dead) => Some((
                EventKind::PeerDead,
                format!("failure detector: {heard}; its tasks' keepers will re-place them"),
            )),
            _ => None,
        };
        if let Some((kind, why)) = event {
            events.push((kind, p.node.clone(), why));
        }
    }
    (events, marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(node: &str, state: PeerState, generation: u64, is_self: bool) -> PeerView {
        PeerView {
            node: NodeId::new(node).unwrap(),
            state,
            is_self,
            generation,
            gossip_addr: "10.0.0.2:7946".parse().unwrap(),
            info: None,
            error: None,
            last_heard_ms: Some(4_200),
            verified: true,
        }
    }

    fn kinds(events: &[(EventKind, NodeId, String)]) -> Vec<(EventKind, String)> {
        events.iter().map(|(k, n, _)| (*k, n.to_string())).collect()
    }

    #[test]
    fn join_death_return_and_restart() {
        let (e, marks) = changes(
            &PeerMarks::new(),
            &[
                view("n1", PeerState::Alive, 1, true),
                view("n2", PeerState::Alive, 1, false),
            ],
        );
        assert_eq!(kinds(&e), vec![(EventKind::PeerJoined, "n2".into())]);
        let (e, marks) = changes(&marks, &[view("n2", PeerState::Dead, 1, false)]);
        assert_eq!(kinds(&e), vec![(EventKind::PeerDead, "n2".into())]);
        assert!(
            e[0].2.contains("nothing heard from it for 4.2 s"),
            "{}",
            e[0].2
        );
        let (e, marks) = changes(&marks, &[view("n2", PeerState::Alive, 1, false)]);
        assert_eq!(kinds(&e), vec![(EventKind::PeerAlive, "n2".into())]);
        let (e, marks) = changes(&marks, &[view("n2", PeerState::Alive, 2, false)]);
        assert_eq!(kinds(&e), vec![(EventKind::PeerJoined, "n2".into())]);
        let (e, _) = changes(&marks, &[view("n2", PeerState::Alive, 2, false)]);
        assert!(e.is_empty());
    }

    #[test]
    fn a_dead_node_first_seen_dead_is_not_news() {
        let (e, _) = changes(&PeerMarks::new(), &[view("n3", PeerState::Dead, 1, false)]);
        assert!(e.is_empty());
    }
}
