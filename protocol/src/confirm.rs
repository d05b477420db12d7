//! Before a keeper re-places a dead runner's task, it asks the live nodes
//! what they hold of it: pure decisions over their answers.
//!
//! A keeper's copy can be stale. While a keeper is cut off or down, the
//! runner picks a new keeper and pushes its later changes (the end of the
//! task among them) there only; the old keeper comes back still holding
//! "running on R". Were R to die later, the old keeper alone would re-place
//! a task that ended long ago. So a keeper re-places only a copy that no
//! live node holds a newer record of: it asks every live peer for a
//! [`Stamp`] of each orphan, forgets a copy some newer record says ended,
//! and leaves a task alone while a newer unfinished record is held
//! elsewhere (its holder, runner or keeper, is alive and in charge).
//!
//! An orphan that cannot be re-placed (the mesh is full) stays an orphan:
//! [`Backoff`] spaces the asks about the same orphans out, so that it does
//! not cost a call to every live peer each round.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, TaskId};
use crate::lease::majority_of;
use crate::task::TaskRecord;

/// At most this many ids in one ask; more are asked in several.
pub const MAX_IDS: usize = 256;

/// What a node holds of a task, as runner or as keeper: enough to order it
/// against a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub id: TaskId,
    /// The runner the record names.
    pub node: NodeId,
    pub epoch: u32,
    pub attempt: u32,
    /// The runner's clock at its last change.
    pub updated_ms: u64,
    pub finished: bool,
}

impl Stamp {
    pub fn of(r: &TaskRecord) -> Self {
        Self {
            id: r.id.clone(),
            node: r.node.clone(),
            epoch: r.epoch,
            attempt: r.attempt,
            updated_ms: r.updated_ms,
            finished: r.state.is_terminal(),
        }
    }

    /// Whether this record is later than `copy`: a later generation, or the
    /// same one further on (ended, or changed since). Records of one
    /// generation come from one runner, so their times share a clock.
    pub fn is_newer_than(&self, copy: &TaskRecord) -> bool {
        let (mine, theirs) = ((self.epoch, self.attempt), copy.generation());
        mine > theirs
            || (mine == theirs
                && !copy.state.is_terminal()
                && (self.finished || self.updated_ms > copy.updated_ms))
    }
}

/// How many peers were asked and what came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// Nodes the keeper knows, itself counted.
    pub known: usize,
    /// Live peers asked.
    pub asked: usize,
    /// Of those, how many answered.
    pub answered: usize,
    /// The keeper has waited a lease for the silent ones: it goes on with
    /// a majority of answers (itself counted) rather than wait forever on a
    /// peer that answers gossip but not calls.
    pub waited_out: bool,
}

/// What a keeper does with a dead runner's task it holds a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No live node holds anything newer: re-place it.
    Replace,
    /// A newer record says the task ended: the copy is stale; forget it.
    Ended,
    /// A newer unfinished record is held by a live node, which is in charge
    /// of it; or too few peers answered to know. Not now.
    Wait(String),
}

/// The stamps among `heard` that outdate `copy`.
fn newer<'a>(copy: &TaskRecord, heard: &'a [Stamp]) -> Vec<&'a Stamp> {
    heard
        .iter()
        .filter(|s| s.id == copy.id && s.is_newer_than(copy))
        .collect()
}

/// Whether a record newer than `copy` among `heard` says the task ended:
/// the copy is stale and would be re-placed, wrongly, the day the runner
/// it names died. Asked before any death too: a keeper refreshes its
/// unfinished copies from their live runners, since a runner that switched
/// keepers while this one was away pushes its end only to the new one, who
/// may be out of reach (cut off with the runner) when the runner dies.
pub fn ended_elsewhere(copy: &TaskRecord, heard: &[Stamp]) -> bool {
    newer(copy, heard).iter().any(|s| s.finished)
}

/// Judges `copy` against the stamps `heard` from the peers asked.
pub fn standing(copy: &TaskRecord, heard: &[Stamp], asked: Asked) -> Standing {
    if ended_elsewhere(copy, heard) {
        return Standing::Ended;
    }
    let newer = newer(copy, heard);
    if let Some(s) = newer.first() {
        return Standing::Wait(format!(
            "a live node holds a newer record (attempt {} on {})",
            s.attempt, s.node
        ));
    }
    if asked.answered < asked.asked {
        let enough = asked.answered + 1 >= majority_of(asked.known);
        if !(asked.waited_out && enough) {
            return Standing::Wait(format!(
                "{} of {} live peers answered",
                asked.answered, asked.asked
            ));
        }
    }
    Standing::Replace
}

/// The wait after the first ask about a set of orphans; it doubles with
/// each ask about the same set, up to [`BACKOFF_CAP_MS`].
pub const BACKOFF_FIRST_MS: u64 = 1_000;
/// The longest wait between two asks about the same orphans: how late an
/// orphan that was unplaceable is re-placed once a node frees up.
pub const BACKOFF_CAP_MS: u64 = 4_000;

/// What a keeper asks about in one round. Any change is worth an ask at
/// once: a new orphan, a peer that came or went (its answer may settle
/// them), or an orphan whose silent peers no longer hold it up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Question {
    pub orphans: BTreeSet<TaskId>,
    /// The live peers asked.
    pub peers: BTreeSet<NodeId>,
    /// The orphans asked about for longer than a lease (see
    /// [`Asked::waited_out`]).
    pub waited_out: BTreeSet<TaskId>,
}

/// When a keeper asks its peers again about orphans it could not settle:
/// at once for a new [`Question`], then after 1 s, 2 s, 4 s, 4 s... while
/// it stays the same.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// The last question asked.
    asked: Option<Question>,
    /// When the same question may be asked again.
    next_ms: u64,
    /// The wait set at the last ask.
    wait_ms: u64,
}

impl Backoff {
    /// Whether to ask `question` now; if so, the ask is recorded.
    pub fn ask_now(&mut self, question: Question, now_ms: u64) -> bool {
        if self.asked.as_ref() != Some(&question) {
            self.asked = Some(question);
            self.wait_ms = BACKOFF_FIRST_MS;
        } else if now_ms < self.next_ms {
            return false;
        } else {
            self.wait_ms = self.wait_ms.saturating_mul(2).min(BACKOFF_CAP_MS);
        }
        self.next_ms = now_ms.saturating_add(self.wait_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskSpec, TaskState};

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn rec(node: &str, epoch: u32, attempt: u32, updated: u64, state: TaskState) -> TaskRecord {
        let spec = TaskSpec::builder("i").build().unwrap();
        let mut r = TaskRecord::new(TaskId::new("t1").unwrap(), spec, n(node), 0, 0);
        r.epoch = epoch;
        r.attempt = attempt;
        r.updated_ms = updated;
        r.state = state;
        r
    }

    fn all(asked: usize) -> Asked {
        Asked {
            known: asked + 2,
            asked,
            answered: asked,
            waited_out: false,
        }
    }

    #[test]
    fn a_copy_nobody_outdates_is_replaced() {
        let copy = rec("r", 0, 1, 100, TaskState::Running);
        assert_eq!(standing(&copy, &[], all(2)), Standing::Replace);
        // The same record elsewhere (the other keeper candidate, or an
        // older one) changes nothing.
        let same = Stamp::of(&copy);
        let older = Stamp::of(&rec("r", 0, 1, 50, TaskState::Running));
        assert_eq!(standing(&copy, &[same, older], all(2)), Standing::Replace);
    }

    #[test]
    fn a_copy_whose_task_ended_elsewhere_is_forgotten() {
        // The runner switched keepers while this one was away, and its task
        // ended: the new keeper holds the end.
        let copy = rec("r", 0, 1, 100, TaskState::Running);
        let ended = Stamp::of(&rec("r", 0, 1, 900, TaskState::Succeeded));
        assert_eq!(standing(&copy, &[ended], all(2)), Standing::Ended);
        // Ended at the same time (clocks are coarse): still ended.
        let same_ms = Stamp::of(&rec("r", 0, 1, 100, TaskState::Failed));
        assert_eq!(standing(&copy, &[same_ms], all(1)), Standing::Ended);
        // A later attempt that ended.
        let later = Stamp::of(&rec("x", 1, 2, 5, TaskState::Succeeded));
        assert_eq!(standing(&copy, &[later], all(1)), Standing::Ended);
    }

    #[test]
    fn an_older_ended_record_does_not_stop_a_replacement() {
        // Attempt 1 failed and was retried: attempt 2 runs on the dead node.
        let copy = rec("r", 0, 2, 100, TaskState::Running);
        let old = Stamp::of(&rec("r", 0, 1, 500, TaskState::Failed));
        assert_eq!(standing(&copy, &[old], all(1)), Standing::Replace);
    }

    #[test]
    fn a_newer_unfinished_record_elsewhere_waits() {
        let copy = rec("r", 0, 1, 100, TaskState::Running);
        let moved = Stamp::of(&rec("x", 1, 2, 5, TaskState::Running));
        assert!(matches!(
            standing(&copy, &[moved], all(2)),
            Standing::Wait(_)
        ));
        let changed = Stamp::of(&rec("r", 0, 1, 200, TaskState::Running));
        assert!(matches!(
            standing(&copy, &[changed], all(2)),
            Standing::Wait(_)
        ));
    }

    #[test]
    fn silent_peers_hold_it_up_until_waited_out_with_a_majority() {
        let copy = rec("r", 0, 1, 100, TaskState::Running);
        // 5 known: the keeper, the dead runner, 3 live peers; 2 answered.
        let mut asked = Asked {
            known: 5,
            asked: 3,
            answered: 2,
            waited_out: false,
        };
        assert!(matches!(standing(&copy, &[], asked), Standing::Wait(_)));
        asked.waited_out = true;
        assert_eq!(standing(&copy, &[], asked), Standing::Replace);
        // Only 1 of 3 answered: with the keeper 2 of 5, no majority.
        asked.answered = 1;
        assert!(matches!(standing(&copy, &[], asked), Standing::Wait(_)));
    }

    #[test]
    fn stamps_of_other_tasks_are_ignored() {
        let copy = rec("r", 0, 1, 100, TaskState::Running);
        let mut other = Stamp::of(&rec("r", 0, 1, 900, TaskState::Succeeded));
        other.id = TaskId::new("t2").unwrap();
        assert_eq!(standing(&copy, &[other], all(1)), Standing::Replace);
    }

    #[test]
    fn a_runner_that_ended_the_task_outdates_a_stale_copy() {
        // Seed 7: the copy says "running attempt 1 on r"; r finished it
        // and pushed the end to another keeper only.
        let copy = rec("r", 0, 1, 100, TaskState::Running);
        let runner_says = Stamp::of(&rec("r", 0, 1, 5_000, TaskState::Succeeded));
        assert!(ended_elsewhere(&copy, &[runner_says]));
        // Still running there, or an earlier attempt's end: not stale.
        let running = Stamp::of(&rec("r", 0, 1, 5_000, TaskState::Running));
        let earlier = Stamp::of(&rec("r", 0, 0, 5_000, TaskState::Failed));
        assert!(!ended_elsewhere(&copy, &[running, earlier]));
        // A copy that ended already is not stale.
        let done = rec("r", 0, 1, 100, TaskState::Succeeded);
        let later = Stamp::of(&rec("r", 0, 1, 5_000, TaskState::Succeeded));
        assert!(!ended_elsewhere(&done, &[later]));
    }

    fn question(orphans: &[&str], peers: &[&str]) -> Question {
        Question {
            orphans: orphans.iter().map(|t| TaskId::new(*t).unwrap()).collect(),
            peers: peers.iter().map(|p| n(p)).collect(),
            waited_out: BTreeSet::new(),
        }
    }

    /// The times in `0..until_ms` (every 500 ms, a keeper round) at which
    /// `q` is asked.
    fn asks(b: &mut Backoff, q: &Question, from_ms: u64, until_ms: u64) -> Vec<u64> {
        (from_ms..until_ms)
            .step_by(500)
            .filter(|&t| b.ask_now(q.clone(), t))
            .collect()
    }

    #[test]
    fn the_same_orphans_are_asked_about_less_and_less_often_up_to_the_cap() {
        let mut b = Backoff::default();
        let q = question(&["t1"], &["a", "b"]);
        assert_eq!(
            asks(&mut b, &q, 0, 20_000),
            vec![0, 1_000, 3_000, 7_000, 11_000, 15_000, 19_000]
        );
    }

    #[test]
    fn a_change_in_orphans_peers_or_waited_out_asks_at_once_and_starts_over() {
        let mut b = Backoff::default();
        let q = question(&["t1"], &["a", "b"]);
        assert_eq!(asks(&mut b, &q, 0, 8_000), vec![0, 1_000, 3_000, 7_000]);
        // A new orphan.
        let more = question(&["t1", "t2"], &["a", "b"]);
        assert_eq!(
            asks(&mut b, &more, 8_000, 12_000),
            vec![8_000, 9_000, 11_000]
        );
        // A peer gone.
        let fewer = question(&["t1", "t2"], &["a"]);
        assert_eq!(asks(&mut b, &fewer, 12_000, 14_000), vec![12_000, 13_000]);
        // An orphan asked about for a lease: silent peers no longer count.
        let mut waited = fewer.clone();
        waited.waited_out.insert(TaskId::new("t1").unwrap());
        assert!(b.ask_now(waited.clone(), 14_000));
        assert!(!b.ask_now(waited, 14_500));
        // Back to an earlier question: a change too.
        assert!(b.ask_now(q, 14_500));
    }

    #[test]
    fn a_clock_far_out_does_not_overflow() {
        let mut b = Backoff::default();
        let q = question(&["t1"], &[]);
        assert!(b.ask_now(q.clone(), u64::MAX - 1));
        assert!(!b.ask_now(q.clone(), u64::MAX - 1));
        assert!(b.ask_now(q, u64::MAX));
    }
}
