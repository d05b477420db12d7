//! The peer list as this node sees it: chitchat's cluster state, the failure
//! detector's verdict, when each peer was last heard from (suspect when
//! quiet too long, `mesh_protocol::gossip::peer_state`) and the
//! transport's certificate names, folded into `PeerView`s. Pure: the
//! caller gathers the inputs.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mesh_protocol::NodeId;
use mesh_protocol::gossip::{NodeInfo, PeerView, peer_state};

/// One chitchat node state, reduced to what the view needs.
#[derive(Debug, Clone)]
pub struct Observed {
    pub node_id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub alive: bool,
    pub is_self: bool,
    pub pairs: BTreeMap<String, String>,
    pub last_heard_ms: Option<u64>,
    /// The name the certificate at `gossip_addr` gave, if we ever connected.
    pub cert_name: Option<String>,
}

/// What to show, and the identities refused because a certificate at their
/// address names another node. `gossip_interval_ms` sets how long a peer
/// may be quiet before it is suspect.
pub fn peer_views(
    gossip_interval_ms: u64,
    observed: Vec<Observed>,
) -> (Vec<PeerView>, Vec<String>) {
    // Identities a certificate contradicts go first, so that an impostor
    // cannot hide the real node behind a higher generation.
    let mut impostors = Vec::new();
    let mut newest: BTreeMap<String, Observed> = BTreeMap::new();
    for o in observed {
        if let Some(name) = &o.cert_name
            && !o.is_self
            && name != &o.node_id
        {
            impostors.push(format!(
                "{} claims to be {} but its certificate names {name}",
                o.gossip_addr, o.node_id
            ));
            continue;
        }
        // Newest generation of each node id wins (a restarted node rejoins
        // with a higher generation; its old incarnation fades out).
        // A node that just restarted shows its new generation as not yet
        // alive (heard once) while its old one still is: it is alive, not
        // dead, or keepers would re-place the tasks it still runs.
        // Likewise it was heard when either incarnation last was.
        match newest.get_mut(&o.node_id) {
            Some(seen) if seen.generation >= o.generation => {
                seen.alive |= o.alive;
                seen.last_heard_ms = latest(seen.last_heard_ms, o.last_heard_ms);
            }
            Some(seen) => {
                let (older_alive, older_heard) = (seen.alive, seen.last_heard_ms);
                *seen = o;
                seen.alive |= older_alive;
                seen.last_heard_ms = latest(seen.last_heard_ms, older_heard);
            }
            None => {
                newest.insert(o.node_id.clone(), o);
            }
        }
    }
    let mut views = Vec::new();
    for (_, o) in newest {
        let Ok(node) = NodeId::new(o.node_id.as_str()) else {
            impostors.push(format!("{:?}: invalid node id", o.node_id));
            continue;
        };
        let verified = o.is_self || o.cert_name.as_deref() == Some(o.node_id.as_str());
        let (info, error) = match NodeInfo::from_lookup(|k| o.pairs.get(k).map(String::as_str)) {
            Ok(i) => (Some(i), None),
            Err(e) => (None, Some(e.to_string())),
        };
        views.push(PeerView {
            node,
            state: peer_state(o.alive, o.is_self, o.last_heard_ms, gossip_interval_ms),
            is_self: o.is_self,
            generation: o.generation,
            gossip_addr: o.gossip_addr,
            info,
            error,
            last_heard_ms: o.last_heard_ms,
            verified,
        });
    }
    (views, impostors)
}

/// The more recent of two "heard this long ago" (None: seen just now).
fn latest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::gossip::PeerState;

    /// The gossip interval of the tests, in ms.
    const EVERY: u64 = 200;

    fn obs(id: &str, generation: u64, port: u16, alive: bool, cert: Option<&str>) -> Observed {
        Observed {
            node_id: id.into(),
            generation,
            gossip_addr: SocketAddr::from(([10, 0, 0, 1], port)),
            alive,
            is_self: false,
            pairs: BTreeMap::new(),
            last_heard_ms: Some(5),
            cert_name: cert.map(str::to_owned),
        }
    }

    #[test]
    fn newest_generation_wins_and_impostors_are_dropped() {
        let (views, impostors) = peer_views(
            EVERY,
            vec![
                obs("n1", 1, 1, false, Some("n1")),
                obs("n1", 2, 1, true, Some("n1")),
                obs("n2", 1, 2, true, None),
                obs("n3", 1, 3, true, Some("evil")),
                // An impostor with a higher generation does not hide the real n2.
                obs("n2", 9, 4, true, Some("evil")),
            ],
        );
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].generation, 2);
        assert_eq!(views[0].state, PeerState::Alive);
        assert!(views[0].verified);
        assert!(!views[1].verified, "n2 only heard of through gossip");
        assert!(views[1].error.is_some(), "no values published yet");
        assert_eq!(views[1].generation, 1);
        assert_eq!(impostors.len(), 2);
    }

    #[test]
    fn a_peer_with_a_malformed_image_filter_is_shown_but_not_used() {
        use mesh_protocol::gossip::keys;
        let good = NodeInfo {
            quic: SocketAddr::from(([10, 0, 0, 1], 1)),
            api: SocketAddr::from(([10, 0, 0, 1], 2)),
            version: "0.1.0".into(),
            topology: mesh_protocol::load::TopologySummary::parse("1;4;1").unwrap(),
            load: mesh_protocol::load::Load::parse("4;0;0;0").unwrap(),
            draining: false,
            services: BTreeMap::new(),
            images: Default::default(),
            service_images: Default::default(),
        };
        let with_img = |img: Option<&str>| {
            let mut o = obs("n1", 1, 1, true, Some("n1"));
            o.pairs = good.to_pairs().into_iter().collect();
            match img {
                Some(v) => o.pairs.insert(keys::IMAGES.into(), v.into()),
                None => o.pairs.remove(keys::IMAGES),
            };
            o
        };
        let (views, _) = peer_views(EVERY, vec![with_img(None)]);
        assert_eq!(views[0].info.as_ref(), Some(&good), "img is optional");
        for bad in ["1;7;!!", "1;0;", "x", &format!("0;7;{}", "A".repeat(4_000))] {
            let (views, _) = peer_views(EVERY, vec![with_img(Some(bad))]);
            assert_eq!(views[0].info, None, "{bad}");
            let error = views[0].error.as_deref().unwrap();
            assert!(error.contains("\"img\""), "{error}");
            assert!(super::super::candidates_of(&views).is_empty());
        }
    }

    #[test]
    fn a_quiet_peer_is_suspect_and_this_node_never_is() {
        let mut quiet = obs("n1", 1, 1, true, Some("n1"));
        quiet.last_heard_ms = Some(EVERY * 5);
        let mut me = obs("me", 1, 2, true, None);
        me.is_self = true;
        me.last_heard_ms = Some(EVERY * 5);
        let mut dead = obs("n2", 1, 3, false, Some("n2"));
        dead.last_heard_ms = Some(EVERY * 50);
        let (views, _) = peer_views(EVERY, vec![quiet, me, dead]);
        let states: Vec<_> = views.iter().map(|v| (v.node.as_str(), v.state)).collect();
        assert_eq!(
            states,
            [
                ("me", PeerState::Alive),
                ("n1", PeerState::Suspect),
                ("n2", PeerState::Dead)
            ]
        );
    }

    #[test]
    fn a_restarted_node_was_heard_when_either_incarnation_was() {
        let mut old = obs("n1", 1, 1, false, Some("n1"));
        old.last_heard_ms = Some(300);
        let mut new = obs("n1", 2, 1, false, Some("n1"));
        new.last_heard_ms = Some(9_000);
        let (views, _) = peer_views(EVERY, vec![new.clone(), old.clone()]);
        assert_eq!(views[0].last_heard_ms, Some(300));
        let (views, _) = peer_views(EVERY, vec![old, new]);
        assert_eq!(views[0].last_heard_ms, Some(300));
    }
}
