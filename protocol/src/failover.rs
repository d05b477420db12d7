//! Who re-places a task whose runner died, and what a runner that comes back
//! is told: pure decisions over a keeper's copies.
//!
//! Every task placed in a mesh of two or more agents has a keeper: the agent
//! that accepted it (when another runs it) or a backup chosen by rendezvous
//! hashing. The runner pushes its record to the keeper on every change; the
//! keeper re-places the task when the failure detector declares the runner
//! dead. One keeper per task, so one adopter: a dead runner's task is
//! re-placed once. The keeper's copy names the current runner and attempt;
//! a runner that comes back and pushes an older attempt is told it was
//! superseded, and stops it.

use std::collections::BTreeSet;

use crate::ids::NodeId;
use crate::placement::adopter;
use crate::task::TaskRecord;

/// The keeper's answer to a runner's push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store the pushed record as the copy.
    Keep,
    /// The caller's attempt is not current: the task runs on `node` now.
    Superseded { node: NodeId, attempt: u32 },
}

/// Judges a push of `incoming` by `caller`, given the copy held.
///
/// Attempts are compared by generation, (re-placement epoch, attempt): a
/// keeper's re-placement opens a new epoch, so it outranks every push of
/// the runner it replaced, however many attempts that runner counted while
/// its pushes were lost. Within an epoch a higher attempt than the copy's
/// wins: attempts only grow through a legitimate move, and its runner may
/// push before the keeper has recorded where it went. An older generation,
/// or the same one from another node, is superseded.
pub fn judge(held: Option<&TaskRecord>, incoming: &TaskRecord, caller: &NodeId) -> Verdict {
    match held {
        Some(h)
            if incoming.generation() < h.generation()
                || (incoming.generation() == h.generation() && &h.node != caller) =>
        {
            Verdict::Superseded {
                node: h.node.clone(),
                attempt: h.attempt,
            }
        }
        _ => Verdict::Keep,
    }
}

/// The copies this keeper must re-place now: unfinished, run by another node
/// that the failure detector declared dead.
/// A copy whose kill was asked for is not re-placed.
pub fn orphans<'a>(
    copies: &'a [TaskRecord],
    me: &NodeId,
    dead: &BTreeSet<NodeId>,
) -> Vec<&'a TaskRecord> {
    copies
        .iter()
        .filter(|c| {
            !c.state.is_terminal() && !c.kill_requested && &c.node != me && dead.contains(&c.node)
        })
        .collect()
}

/// A keeper for a task run by `runner`: the accepting node if it is another
/// one, else the rendezvous choice among the other live nodes.
pub fn choose_keeper(
    task: &crate::ids::TaskId,
    runner: &NodeId,
    origin: &NodeId,
    live: &[NodeId],
) -> Option<NodeId> {
    if origin != runner && live.contains(origin) {
        return Some(origin.clone());
    }
    adopter(task, live.iter().filter(|n| *n != runner)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
    use crate::task::{TaskSpec, TaskState};

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn rec(node: &str, attempt: u32, state: TaskState) -> TaskRecord {
        let spec = TaskSpec::builder("i").build().unwrap();
        let mut r = TaskRecord::new(TaskId::new("t1").unwrap(), spec, n(node), 0, 0);
        r.attempt = attempt;
        r.state = state;
        r
    }

    #[test]
    fn a_runner_that_was_replaced_is_told_so() {
        let held = rec("b", 2, TaskState::Queued);
        // The old runner comes back with attempt 1.
        assert_eq!(
            judge(Some(&held), &rec("a", 1, TaskState::Running), &n("a")),
            Verdict::Superseded {
                node: n("b"),
                attempt: 2
            }
        );
        // The new runner's pushes are kept.
        assert_eq!(
            judge(Some(&held), &rec("b", 2, TaskState::Running), &n("b")),
            Verdict::Keep
        );
        // A first push is kept.
        assert_eq!(
            judge(None, &rec("a", 1, TaskState::Running), &n("a")),
            Verdict::Keep
        );
        // The same runner cannot go back in attempts.
        assert!(matches!(
            judge(Some(&held), &rec("b", 1, TaskState::Running), &n("b")),
            Verdict::Superseded { .. }
        ));
        // A newer attempt wins even before the keeper recorded its runner.
        assert_eq!(
            judge(Some(&held), &rec("c", 3, TaskState::Running), &n("c")),
            Verdict::Keep
        );
    }

    #[test]
    fn a_replacement_outranks_the_old_runners_retries() {
        // The keeper re-placed the task from a (at attempt 1) onto b: epoch 1.
        let mut held = rec("b", 2, TaskState::Queued);
        held.epoch = 1;
        // a retried twice while its pushes were lost, then pushes attempt 3.
        assert_eq!(
            judge(Some(&held), &rec("a", 3, TaskState::Running), &n("a")),
            Verdict::Superseded {
                node: n("b"),
                attempt: 2
            }
        );
        // The new runner's retries within the epoch are kept.
        let mut next = rec("b", 3, TaskState::Running);
        next.epoch = 1;
        assert_eq!(judge(Some(&held), &next, &n("b")), Verdict::Keep);
        // A later re-placement (by a new keeper) wins over the copy.
        let mut later = rec("c", 1, TaskState::Running);
        later.epoch = 2;
        assert_eq!(judge(Some(&held), &later, &n("c")), Verdict::Keep);
    }

    #[test]
    fn only_unfinished_tasks_of_dead_runners_are_orphans() {
        let copies = vec![
            rec("a", 1, TaskState::Running),
            rec("a", 1, TaskState::Succeeded),
            rec("b", 1, TaskState::Running),
            rec("me", 1, TaskState::Running),
        ];
        let dead = BTreeSet::from([n("a"), n("me")]);
        let o = orphans(&copies, &n("me"), &dead);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].node, n("a"));
    }

    #[test]
    fn keeper_is_the_origin_or_a_stable_other_node() {
        let t = TaskId::new("t9").unwrap();
        let live = vec![n("a"), n("b"), n("c")];
        assert_eq!(choose_keeper(&t, &n("b"), &n("a"), &live), Some(n("a")));
        let k = choose_keeper(&t, &n("a"), &n("a"), &live).unwrap();
        assert_ne!(k, n("a"));
        assert_eq!(
            choose_keeper(&t, &n("a"), &n("a"), &live),
            Some(k),
            "deterministic"
        );
        assert_eq!(
            choose_keeper(&t, &n("a"), &n("a"), &[n("a")]),
            None,
            "alone: no keeper"
        );
    }
}
