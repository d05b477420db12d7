//! Who goes to the registry first when several nodes need one new image at
//! once (a new service's pre-pull reaches every node within a gossip round):
//! with `peers-first`, a node that finds no peer holding the image waits for
//! a peer that is already downloading it, or for one that outranks it for
//! this image and is also getting it, and then fetches from that peer. The
//! node ranked first downloads from the registry, so the registry sends
//! the image once instead of once per node.
//!
//! Waits only ever go to a node that is downloading (which needs no one) or
//! up the ranking (which ends at a node that outranks all others), so no two
//! nodes wait for each other; and no wait outlasts [`MAX_WAIT_MS`].

use crate::ids::NodeId;
use crate::load::fnv1a;

/// Longest a node waits for peers before it goes to the registry itself.
pub const MAX_WAIT_MS: u64 = 10 * 60 * 1_000;
/// How often a waiting node asks its peers again.
pub const POLL_MS: u64 = 1_000;

/// A peer that does not hold the image but is getting it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Getting {
    pub node: NodeId,
    /// Its bytes are coming (from its registry or a peer); otherwise it is
    /// itself waiting for a peer.
    pub downloading: bool,
}

/// What a node that lacks the image does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Fetch it from a peer that holds it.
    Fetch,
    /// Ask again in [`POLL_MS`]: a peer will hold it soon.
    Wait,
    /// Get it from the registry.
    Registry,
}

/// The rank of `node` for `image`: the order in which nodes are asked for
/// it ([`super::share::peers_to_ask`]) and in which they go to the
/// registry. Higher goes first; ties (of hash) by the smaller node id.
pub fn rank(image: &str, node: &NodeId) -> (u64, std::cmp::Reverse<String>) {
    (
        fnv1a(&[image.as_bytes(), node.as_str().as_bytes()]),
        std::cmp::Reverse(node.as_str().to_owned()),
    )
}

/// What `me`, lacking `image`, does after asking its peers: fetch if one
/// holds it; wait for one that is downloading it, or that outranks `me`
/// and is getting it; else (or once `waited_ms` reaches the bound) go to
/// the registry.
pub fn next_step(
    me: &NodeId,
    image: &str,
    held_by_a_peer: bool,
    getting: &[Getting],
    waited_ms: u64,
) -> Next {
    if held_by_a_peer {
        return Next::Fetch;
    }
    if waited_ms >= MAX_WAIT_MS {
        return Next::Registry;
    }
    let mine = rank(image, me);
    let worth_waiting = getting
        .iter()
        .filter(|g| g.node != *me)
        .any(|g| g.downloading || rank(image, &g.node) > mine);
    if worth_waiting {
        Next::Wait
    } else {
        Next::Registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn getting(n: &str, downloading: bool) -> Getting {
        Getting {
            node: node(n),
            downloading,
        }
    }

    /// The nodes n0..n(count) ordered best first for `image`.
    fn ranked(image: &str, count: usize) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = (0..count).map(|i| node(&format!("n{i}"))).collect();
        nodes.sort_by_key(|n| std::cmp::Reverse(rank(image, n)));
        nodes
    }

    #[test]
    fn a_holder_is_fetched_from_and_no_one_getting_it_means_the_registry() {
        let me = node("n1");
        assert_eq!(next_step(&me, "app:1", true, &[], 0), Next::Fetch);
        assert_eq!(next_step(&me, "app:1", false, &[], 0), Next::Registry);
        // Its own entry (a peer echoing it) changes nothing.
        assert_eq!(
            next_step(&me, "app:1", false, &[getting("n1", true)], 0),
            Next::Registry
        );
    }

    #[test]
    fn a_peer_downloading_is_waited_for_whatever_its_rank() {
        let order = ranked("app:1", 4);
        let (top, last) = (&order[0], &order[3]);
        assert_eq!(
            next_step(top, "app:1", false, &[getting(last.as_str(), true)], 0),
            Next::Wait
        );
    }

    #[test]
    fn among_nodes_all_waiting_only_the_first_ranked_goes_to_the_registry() {
        let order = ranked("app:1", 5);
        let all: Vec<Getting> = order.iter().map(|n| getting(n.as_str(), false)).collect();
        let steps: Vec<Next> = order
            .iter()
            .map(|me| next_step(me, "app:1", false, &all, 0))
            .collect();
        assert_eq!(steps[0], Next::Registry);
        assert!(steps[1..].iter().all(|s| *s == Next::Wait), "{steps:?}");
    }

    #[test]
    fn a_waiting_peer_ranked_below_is_not_waited_for() {
        let order = ranked("app:1", 3);
        let below = getting(order[2].as_str(), false);
        assert_eq!(
            next_step(&order[0], "app:1", false, std::slice::from_ref(&below), 0),
            Next::Registry
        );
        assert_eq!(
            next_step(&order[1], "app:1", false, &[below], 0),
            Next::Registry
        );
    }

    #[test]
    fn no_wait_outlasts_the_bound() {
        let me = node("n1");
        let busy = [getting("n2", true)];
        assert_eq!(
            next_step(&me, "app:1", false, &busy, MAX_WAIT_MS - 1),
            Next::Wait
        );
        assert_eq!(
            next_step(&me, "app:1", false, &busy, MAX_WAIT_MS),
            Next::Registry
        );
    }

    #[test]
    fn ranks_differ_by_image_so_registry_pulls_spread() {
        let firsts: std::collections::BTreeSet<NodeId> = (0..20)
            .map(|i| ranked(&format!("app:{i}"), 5)[0].clone())
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }
}
