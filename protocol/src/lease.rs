//! Leases that keep a task from running in two places when the mesh splits:
//! pure decisions over what a node has heard of the others.
//!
//! A runner holds the lease of a kept task while it hears the task's keeper
//! or a majority of the nodes it knows. A runner that has heard neither for
//! `fence_after` stops the task's attempt and holds it (it fences itself):
//! whatever side of a split it is on, the other side may take the task over.
//!
//! A keeper re-places a runner's tasks only while it sees a majority of the
//! nodes it knows alive (a minority never takes over), and only once it has
//! not heard the runner for `fence_after` plus a margin: by then a runner
//! that was cut off, not dead, has fenced itself. It must also have seen a
//! majority without a break for that long: a keeper back from its own cut
//! holds death verdicts reached while it heard no one. Hearing a node means its
//! heartbeat advanced, whichever peer carried it; two majorities share a
//! node, so a runner that hears a majority is heard by any keeper that does.

use std::time::Duration;

use crate::ids::NodeId;

/// What this node knows of one node of the mesh (itself included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub node: NodeId,
    /// This node.
    pub is_self: bool,
    /// The failure detector's verdict.
    pub alive: bool,
    /// Since its heartbeat last advanced here (or since this node first
    /// saw it, which counts as hearing it); None: seen only just now.
    pub heard_ms_ago: Option<u64>,
}

/// How long ago `s` was heard, this node and a node seen only just now
/// counting as now.
fn age(s: &Sighting) -> u64 {
    if s.is_self {
        0
    } else {
        s.heard_ms_ago.unwrap_or(0)
    }
}

/// Nodes that make a majority of `known`.
pub fn majority_of(known: usize) -> usize {
    known / 2 + 1
}

/// Whether a majority of the known nodes (this one counted) was heard within
/// `within`.
fn majority_heard(seen: &[Sighting], within: Duration) -> bool {
    let within = millis(within);
    let heard = seen.iter().filter(|s| age(s) <= within).count();
    heard >= majority_of(seen.len())
}

/// Whether this node sees a majority of the nodes it knows (itself counted)
/// alive.
pub fn sees_majority(seen: &[Sighting]) -> bool {
    let alive = seen.iter().filter(|s| s.is_self || s.alive).count();
    alive >= majority_of(seen.len())
}

/// Whether a runner must fence a task kept by `keeper`: it has heard neither
/// the keeper nor a majority for `fence_after`. A task with no keeper (a
/// mesh of one, or none chosen yet) has nobody to take it over: never.
pub fn must_fence(seen: &[Sighting], keeper: Option<&NodeId>, fence_after: Duration) -> bool {
    let Some(keeper) = keeper else {
        return false;
    };
    let keeper_heard = seen
        .iter()
        .find(|s| &s.node == keeper)
        .is_some_and(|s| age(s) <= millis(fence_after));
    !keeper_heard && !majority_heard(seen, fence_after)
}

/// Whether a keeper may re-place the tasks of `runner`, which its failure
/// detector declared dead: it sees a majority alive and has not heard the
/// runner for `fence_after + margin`, by which time the runner, if only cut
/// off, has fenced itself.
pub fn may_replace(
    seen: &[Sighting],
    runner: &NodeId,
    fence_after: Duration,
    margin: Duration,
) -> bool {
    let Some(r) = seen.iter().find(|s| &s.node == runner && !s.is_self) else {
        return false;
    };
    !r.alive && age(r) > millis(fence_after.saturating_add(margin)) && sees_majority(seen)
}

/// When this node's unbroken sight of a majority began, given when it began
/// as of the last round (`since`) and what it sees at `now_ms`: kept while it
/// still sees one, `now_ms` when it sees one again, None when it does not.
pub fn majority_since(since: Option<u64>, seen: &[Sighting], now_ms: u64) -> Option<u64> {
    if sees_majority(seen) {
        Some(since.unwrap_or(now_ms))
    } else {
        None
    }
}

/// Whether a keeper may act on its failure detector's death verdicts at
/// `now_ms`: it has seen a majority without a break since `since` for more
/// than `fence_after + margin`. A keeper back from its own cut (or just
/// started) holds verdicts it could not have observed, reached while it
/// heard no one: it waits out a whole lease first, by which time a live
/// runner is heard again.
pub fn steady_majority(
    since: Option<u64>,
    now_ms: u64,
    fence_after: Duration,
    margin: Duration,
) -> bool {
    since.is_some_and(|s| now_ms.saturating_sub(s) > millis(fence_after.saturating_add(margin)))
}

/// The margin a keeper adds to `fence_after`: time for the runner's news to
/// cross the mesh (a few gossip rounds) and for its container to stop.
pub fn margin(gossip_interval: Duration) -> Duration {
    Duration::from_secs(2).saturating_add(gossip_interval.saturating_mul(4))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn me() -> Sighting {
        Sighting {
            node: n("me"),
            is_self: true,
            alive: true,
            heard_ms_ago: None,
        }
    }

    fn peer(name: &str, alive: bool, heard_ms_ago: Option<u64>) -> Sighting {
        Sighting {
            node: n(name),
            is_self: false,
            alive,
            heard_ms_ago,
        }
    }

    const F: Duration = Duration::from_secs(10);
    const M: Duration = Duration::from_secs(4);

    #[test]
    fn a_keeper_back_from_its_own_cut_waits_a_lease_before_acting() {
        let all = [me(), peer("a", true, Some(100)), peer("b", true, Some(100))];
        let alone = [
            me(),
            peer("a", false, Some(9_000)),
            peer("b", false, Some(9_000)),
        ];
        // Seen a majority since 0.
        let since = majority_since(None, &all, 0);
        assert_eq!(since, Some(0));
        assert_eq!(majority_since(since, &all, 5_000), Some(0));
        assert!(steady_majority(Some(0), 14_001, F, M));
        // Cut off: the sight is broken.
        let since = majority_since(Some(0), &alone, 20_000);
        assert_eq!(since, None);
        assert!(!steady_majority(since, 20_000, F, M));
        // Back 0.2 s after the heal: not yet, whatever verdicts it holds.
        let since = majority_since(since, &all, 30_000);
        assert_eq!(since, Some(30_000));
        assert!(!steady_majority(since, 30_200, F, M));
        assert!(!steady_majority(since, 44_000, F, M));
        assert!(steady_majority(since, 44_001, F, M));
    }

    #[test]
    fn majorities() {
        assert_eq!(majority_of(1), 1);
        assert_eq!(majority_of(2), 2);
        assert_eq!(majority_of(3), 2);
        assert_eq!(majority_of(4), 3);
        assert_eq!(majority_of(5), 3);
    }

    #[test]
    fn a_runner_keeps_its_lease_while_it_hears_the_keeper_or_a_majority() {
        let k = n("k");
        // Hears the keeper only (a minority of 2 of 5): keeps running.
        let seen = [
            me(),
            peer("k", true, Some(100)),
            peer("a", false, Some(60_000)),
            peer("b", false, Some(60_000)),
            peer("c", false, Some(60_000)),
        ];
        assert!(!must_fence(&seen, Some(&k), F));
        // Hears a majority but not the keeper: keeps running.
        let seen = [
            me(),
            peer("k", false, Some(60_000)),
            peer("a", true, Some(100)),
            peer("b", true, Some(9_000)),
        ];
        assert!(!must_fence(&seen, Some(&k), F));
        // Alone for longer than the lease: fences.
        let seen = [
            me(),
            peer("k", true, Some(10_001)),
            peer("a", true, Some(20_000)),
        ];
        assert!(
            must_fence(&seen, Some(&k), F),
            "the verdict lags: age decides"
        );
        // Not yet for longer than the lease.
        let seen = [me(), peer("k", false, Some(9_999)), peer("a", false, None)];
        assert!(!must_fence(&seen, Some(&k), F));
    }

    #[test]
    fn a_runner_that_just_saw_its_peers_or_has_no_keeper_never_fences() {
        let k = n("k");
        let seen = [me(), peer("k", false, None), peer("a", false, None)];
        assert!(!must_fence(&seen, Some(&k), F), "seen just now");
        assert!(!must_fence(&seen, None, F));
        // A keeper this node does not know counts as not heard.
        let alone = [me(), peer("a", false, Some(60_000))];
        assert!(must_fence(&alone, Some(&k), F));
        // Alone in a mesh of one: its own majority.
        assert!(!must_fence(&[me()], Some(&k), F));
    }

    #[test]
    fn a_keeper_in_a_minority_never_re_places() {
        let r = n("r");
        // 2 of 5 alive: the runner's side may be the majority.
        let seen = [
            me(),
            peer("r", false, Some(60_000)),
            peer("a", true, Some(100)),
            peer("b", false, Some(60_000)),
            peer("c", false, Some(60_000)),
        ];
        assert!(!may_replace(&seen, &r, F, M));
        // Two nodes, one cut off: neither side has a majority.
        let seen = [me(), peer("r", false, Some(60_000))];
        assert!(!may_replace(&seen, &r, F, M));
    }

    #[test]
    fn a_keeper_in_a_majority_waits_out_the_runners_lease() {
        let r = n("r");
        let seen = |heard| {
            [
                me(),
                peer("r", false, Some(heard)),
                peer("a", true, Some(100)),
            ]
        };
        assert!(
            !may_replace(&seen(13_999), &r, F, M),
            "lease + margin not over"
        );
        assert!(may_replace(&seen(14_001), &r, F, M));
        // Alive after all (heard through someone): never.
        let mut back = seen(60_000);
        back[1].alive = true;
        assert!(!may_replace(&back, &r, F, M));
        // A runner seen only just now (a restart's new incarnation): no.
        let new = [me(), peer("r", false, None), peer("a", true, Some(100))];
        assert!(!may_replace(&new, &r, F, M));
        // Unknown runner, or itself: never.
        assert!(!may_replace(&seen(60_000), &n("x"), F, M));
        assert!(!may_replace(&seen(60_000), &n("me"), F, M));
    }

    #[test]
    fn the_keepers_wait_outlasts_any_runners_lease_that_overlaps_it() {
        // Whatever the runner heard, if the keeper may re-place, the runner
        // (heard at most as recently as the keeper heard it, give or take
        // the margin) has fenced: fence_after < fence_after + margin.
        for heard in [0u64, 5_000, 10_000, 14_000, 20_000] {
            let keeper_view = [
                me(),
                peer("r", false, Some(heard)),
                peer("a", true, Some(0)),
            ];
            let runner_view = [
                Sighting {
                    node: n("r"),
                    is_self: true,
                    alive: true,
                    heard_ms_ago: None,
                },
                peer("me", false, Some(heard)),
                peer("a", false, Some(heard)),
            ];
            if may_replace(&keeper_view, &n("r"), F, M) {
                assert!(must_fence(&runner_view, Some(&n("me")), F), "{heard}");
            }
        }
    }
}
