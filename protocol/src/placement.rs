//! Where a task should run: a pure ranking of the mesh's nodes from one
//! node's gossip view, and the deterministic choice of who adopts a dead
//! node's task.
//!
//! The view may be stale: the chosen node allocates on receipt and refuses
//! if its real state no longer fits; the caller then tries the next
//! candidate. So ranking only has to be good, never authoritative.

use std::cmp::Ordering;

use crate::ids::{NodeId, TaskId};
use crate::load::Candidate;
use crate::load::fnv1a;
use crate::resources::CoreCount;

/// Why no node was ranked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{asked} cores asked but the largest node in the mesh has only {largest}")]
    NeverFits { asked: u32, largest: u32 },
    #[error("no live node can take {asked} cores now")]
    Busy { asked: u32 },
}

/// Ranks nodes for a task asking `cores`: live, not draining, able to fit it
/// (one NUMA node before spread), least utilised first, then fewest running
/// containers, then a tie-break hashed from the task id (so equal nodes
/// share the work instead of all choosing the first).
pub fn rank(
    task: &TaskId,
    cores: CoreCount,
    view: &[Candidate],
) -> Result<Vec<NodeId>, PlacementError> {
    let asked = cores.get();
    let largest = view.iter().map(Candidate::total).max().unwrap_or(0);
    if asked > largest {
        return Err(PlacementError::NeverFits { asked, largest });
    }
    let mut fitting: Vec<(&Candidate, bool)> = view
        .iter()
        .filter(|c| c.alive && !c.draining && c.fits_spread(asked))
        .map(|c| (c, c.fits_one_numa(asked)))
        .collect();
    if fitting.is_empty() {
        return Err(PlacementError::Busy { asked });
    }
    let key = |c: &Candidate| fnv1a(&[task.as_str().as_bytes(), c.node.as_str().as_bytes()]);
    fitting.sort_by(|(a, a_one), (b, b_one)| {
        b_one
            .cmp(a_one)
            .then(a.utilisation_ppm().cmp(&b.utilisation_ppm()))
            .then(a.load.running.cmp(&b.load.running))
            .then(key(a).cmp(&key(b)))
            .then(a.node.cmp(&b.node))
    });
    Ok(fitting.into_iter().map(|(c, _)| c.node.clone()).collect())
}

/// The one live node that adopts `task` when its runner is gone: highest
/// rendezvous hash of (task, node). Every node computes the same answer from
/// the same live set, and when the set changes only the tasks of the nodes
/// that left move.
pub fn adopter<'a>(
    task: &TaskId,
    live: impl IntoIterator<Item = &'a NodeId>,
) -> Option<&'a NodeId> {
    live.into_iter().max_by(|a, b| {
        let ha = fnv1a(&[task.as_str().as_bytes(), a.as_str().as_bytes()]);
        let hb = fnv1a(&[task.as_str().as_bytes(), b.as_str().as_bytes()]);
        ha.cmp(&hb).then_with(|| a.cmp(b)).then(Ordering::Equal)
    })
}

/// A node's reply to a call of placement's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Accepted the offer; holds the task.
    Yes,
    /// Refused the offer; does not hold the task.
    No,
    /// No answer came back (the call timed out or its connection broke):
    /// the node may have acted on the call all the same.
    Silent,
}

/// What became of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    /// The node runs the task.
    Taken,
    /// The node does not hold it: the next one may be offered it.
    Refused,
    /// Unknown: the node may run it. Offered to another node, it could run
    /// twice; it waits until that node says whether it holds it.
    InDoubt,
}

/// Judges an offer from the node's reply to it and, when that was silent,
/// its reply to the question "do you hold this task?" (`holds`).
pub fn offer_outcome(offer: Reply, holds: Option<Reply>) -> OfferOutcome {
    match (offer, holds) {
        (Reply::Yes, _) | (Reply::Silent, Some(Reply::Yes)) => OfferOutcome::Taken,
        (Reply::No, _) | (Reply::Silent, Some(Reply::No)) => OfferOutcome::Refused,
        (Reply::Silent, Some(Reply::Silent) | None) => OfferOutcome::InDoubt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Load, TopologySummary};
    use proptest::prelude::*;

    #[test]
    fn an_offer_whose_answer_and_check_were_lost_is_in_doubt() {
        // Seed 7: n1 took the offer, its answer and the check were lost on
        // connections broken by a partition that had just healed, and the
        // task was offered to n3 as well.
        assert_eq!(
            offer_outcome(Reply::Silent, Some(Reply::Silent)),
            OfferOutcome::InDoubt
        );
        assert_eq!(offer_outcome(Reply::Silent, None), OfferOutcome::InDoubt);
        assert_eq!(
            offer_outcome(Reply::Silent, Some(Reply::Yes)),
            OfferOutcome::Taken
        );
        assert_eq!(
            offer_outcome(Reply::Silent, Some(Reply::No)),
            OfferOutcome::Refused
        );
        assert_eq!(offer_outcome(Reply::Yes, None), OfferOutcome::Taken);
        assert_eq!(offer_outcome(Reply::No, None), OfferOutcome::Refused);
    }

    fn cand(name: &str, free: Vec<u32>, per_numa: u32, running: u32) -> Candidate {
        Candidate {
            node: NodeId::new(name).unwrap(),
            alive: true,
            draining: false,
            topology: TopologySummary {
                packages: 1,
                cores_per_numa: vec![per_numa; free.len()],
                pus_per_core: 1,
            },
            load: Load {
                free_per_numa: free,
                running,
                queued: 0,
                cpu_percent: 0,
            },
        }
    }

    fn tid(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    fn cores(n: u32) -> CoreCount {
        CoreCount::new(n).unwrap()
    }

    #[test]
    fn least_utilised_first_and_unfit_dropped() {
        let view = vec![
            cand("a", vec![1, 1], 4, 3), // 6/8 used
            cand("b", vec![4, 2], 4, 1), // 2/8 used
            cand("c", vec![0, 0], 4, 4), // full
        ];
        let r = rank(&tid("t1"), cores(1), &view).unwrap();
        assert_eq!(
            r,
            vec![NodeId::new("b").unwrap(), NodeId::new("a").unwrap()]
        );
    }

    #[test]
    fn one_numa_fit_beats_a_spread_fit() {
        // a is less utilised but can only spread 3 cores; b fits them in one node.
        let view = vec![cand("a", vec![2, 2], 4, 0), cand("b", vec![3, 0], 4, 0)];
        let r = rank(&tid("t"), cores(3), &view).unwrap();
        assert_eq!(r[0].as_str(), "b");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn dead_and_draining_are_skipped_and_errors_say_why() {
        let mut dead = cand("a", vec![4], 4, 0);
        dead.alive = false;
        let mut draining = cand("b", vec![4], 4, 0);
        draining.draining = true;
        assert_eq!(
            rank(&tid("t"), cores(2), &[dead.clone(), draining.clone()]),
            Err(PlacementError::Busy { asked: 2 })
        );
        assert_eq!(
            rank(&tid("t"), cores(9), &[dead, draining]),
            Err(PlacementError::NeverFits {
                asked: 9,
                largest: 4
            })
        );
    }

    #[test]
    fn equal_nodes_share_work_across_tasks() {
        let view: Vec<Candidate> = ["a", "b", "c"]
            .iter()
            .map(|n| cand(n, vec![4], 4, 0))
            .collect();
        let firsts: std::collections::BTreeSet<String> = (0..30)
            .map(|i| rank(&tid(&format!("t{i}")), cores(1), &view).unwrap()[0].to_string())
            .collect();
        assert_eq!(
            firsts.len(),
            3,
            "ties are broken per task, not always the same node"
        );
    }

    #[test]
    fn adopter_is_stable_when_others_leave() {
        let nodes: Vec<NodeId> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| NodeId::new(*n).unwrap())
            .collect();
        for i in 0..50 {
            let t = tid(&format!("t{i}"));
            let owner = adopter(&t, &nodes).unwrap().clone();
            let without_other: Vec<NodeId> =
                nodes.iter().filter(|n| **n != owner).cloned().collect();
            // Remove a node that is not the adopter: the adopter stays.
            let other = without_other[0].clone();
            let fewer: Vec<NodeId> = nodes.iter().filter(|n| **n != other).cloned().collect();
            assert_eq!(adopter(&t, &fewer), Some(&owner));
        }
        assert_eq!(adopter(&tid("t"), &Vec::<NodeId>::new()), None);
    }

    proptest! {
        /// Ranking only ever returns live, non-draining nodes that can fit
        /// the ask, each once, and is deterministic.
        #[test]
        fn ranking_is_sound(
            specs in proptest::collection::vec((0u32..5, 0u32..5, any::<bool>(), any::<bool>(), 0u32..9), 1..12),
            asked in 1u32..9,
        ) {
            let view: Vec<Candidate> = specs.iter().enumerate().map(|(i, (f0, f1, alive, draining, run))| {
                let mut c = cand(&format!("n{i}"), vec![*f0, *f1], 4, *run);
                c.alive = *alive;
                c.draining = *draining;
                c
            }).collect();
            let t = tid("task");
            match rank(&t, cores(asked), &view) {
                Ok(r) => {
                    prop_assert_eq!(r.clone(), rank(&t, cores(asked), &view).unwrap());
                    let mut seen = std::collections::BTreeSet::new();
                    for n in &r {
                        prop_assert!(seen.insert(n.clone()));
                        let c = view.iter().find(|c| &c.node == n).unwrap();
                        prop_assert!(c.alive && !c.draining && c.load.free_cores() >= asked);
                    }
                }
                Err(PlacementError::Busy { .. }) => {
                    prop_assert!(view.iter().all(|c| !c.alive || c.draining || c.load.free_cores() < asked));
                }
                Err(PlacementError::NeverFits { .. }) => prop_assert!(asked > 8),
            }
        }
    }
}
