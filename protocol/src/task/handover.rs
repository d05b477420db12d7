//! Transitions of a record crossing nodes: offered by its holder to another
//! node, taken or adopted there, and, on the keeper's side, the copy that
//! follows the task's newest runner and attempt; for failover, a dead
//! runner's task made ready to be placed again, and a stale attempt stopped.

use super::{StaleAttempt, TaskRecord, TaskState, TransitionError};

/// `not_before_ms` of a held task: never due until released.
const HELD: u64 = u64::MAX;
use crate::ids::NodeId;

impl TaskRecord {
    /// queued -> on offer to `node`: out of the queue until the answer is
    /// known, so it never starts in two places. A task already on offer is
    /// not offered again.
    pub fn offer_to(&mut self, node: NodeId) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued || self.kill_requested || self.offered_to.is_some() {
            return Err(self.refuse("be offered to another node"));
        }
        self.offered_to = Some(node);
        Ok(())
    }

    /// The offer is over and the task stays here: the node refused it, or
    /// it ended here (killed) while on offer.
    pub fn offer_withdrawn(&mut self) -> Result<(), TransitionError> {
        if self.offered_to.is_none() {
            return Err(self.refuse("withdraw an offer it is not on"));
        }
        self.offered_to = None;
        Ok(())
    }

    /// The copy its keeper gets once the holder knows where the task is:
    /// `node` runs or queues it, and no offer is pending.
    pub fn placed_on(&mut self, node: NodeId) {
        self.node = node;
        self.offered_to = None;
    }

    /// A queued task another node offered, taken by `node` to start at
    /// once: it queues there at place `seq`, due now.
    pub fn taken_here(&mut self, node: NodeId, seq: u64, now: u64) -> Result<(), TransitionError> {
        self.queue_here(node, seq, "be taken from an offer")?;
        self.not_before_ms = now;
        self.updated_ms = now;
        Ok(())
    }

    /// A queued task (new, or a keeper's replacement) adopted by `node` to
    /// wait in its queue at place `seq`, keeping its backoff.
    pub fn adopted(&mut self, node: NodeId, seq: u64) -> Result<(), TransitionError> {
        self.queue_here(node, seq, "be adopted into a queue")
    }

    fn queue_here(
        &mut self,
        node: NodeId,
        seq: u64,
        action: &'static str,
    ) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued {
            return Err(self.refuse(action));
        }
        self.node = node;
        self.offered_to = None;
        self.queue_seq = seq;
        Ok(())
    }

    /// The keeper's copy of a task that `node` now runs as (at least)
    /// `attempt` of re-placement `epoch`: it names that node, so the copy
    /// is never re-placed from there and still tells a stale runner it was
    /// superseded. Neither the epoch nor, within it, the attempt goes down.
    pub fn claimed_by(&mut self, node: NodeId, epoch: u32, attempt: u32) {
        self.node = node;
        if epoch > self.epoch {
            self.epoch = epoch;
            self.attempt = attempt;
        } else if epoch == self.epoch {
            self.attempt = self.attempt.max(attempt);
        }
    }

    /// The keeper's copy of a dead runner's task, re-placed on `node` as
    /// `attempt` of re-placement `epoch`: queued there. A generation no
    /// newer than the copy's is refused (the new runner's own push got there
    /// first). This is the one way a copy's ended state changes: it follows
    /// the newest attempt.
    pub fn replaced_by(
        &mut self,
        node: NodeId,
        epoch: u32,
        attempt: u32,
    ) -> Result<(), StaleAttempt> {
        if (epoch, attempt) <= self.generation() {
            return Err(StaleAttempt {
                task: self.id.clone(),
                current: self.generation(),
                given: (epoch, attempt),
            });
        }
        self.node = node;
        self.epoch = epoch;
        self.attempt = attempt;
        self.state = TaskState::Queued;
        Ok(())
    }

    /// `keeper` holds the durable copy of this task from now on.
    pub fn keeper_set(&mut self, keeper: NodeId) {
        self.keeper = Some(keeper);
    }

    /// Nobody keeps a copy any more: its changes are no longer pushed.
    pub fn keeper_dropped(&mut self) {
        self.keeper = None;
    }

    /// This node lost its lease on the task (cut off from its keeper and
    /// most of the mesh): a running attempt stops and, like a queued task,
    /// waits here, held, until the keeper answers (see `lease`). Queued
    /// tasks on offer and ended tasks are left as they are.
    pub fn fence(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        match self.state {
            TaskState::Starting | TaskState::Running => self.migrating = true,
            TaskState::Queued if self.offered_to.is_none() => {}
            _ => return Err(self.refuse("be fenced")),
        }
        self.not_before_ms = HELD;
        self.message = Some(why);
        self.updated_ms = now;
        Ok(())
    }

    /// This node restarted with this task queued, or starting (now queued
    /// again): its keeper may have re-placed it while the node was down, so
    /// it waits, held, for the keeper's word (the runner's next push: kept,
    /// it may start; superseded, it stops). A task without a keeper, on
    /// offer, or being killed is left as it is.
    pub fn hold_after_restart(&mut self, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued
            || self.offered_to.is_some()
            || self.keeper.is_none()
            || self.kill_requested
        {
            return Err(self.refuse("be held for its keeper after a restart"));
        }
        self.not_before_ms = HELD;
        self.message = Some(
            "this node restarted: it waits for its keeper, which may have re-placed it meanwhile"
                .into(),
        );
        self.updated_ms = now;
        Ok(())
    }

    /// Whether this task waits for its keeper's word before it may start.
    pub fn is_held(&self) -> bool {
        self.not_before_ms == HELD
    }

    /// The keeper kept this node's push of a held task: it may start.
    pub fn release(&mut self, now: u64) -> Result<(), TransitionError> {
        if !self.is_held() {
            return Err(self.refuse("be released"));
        }
        self.not_before_ms = now;
        self.message = Some("its keeper answered again: it may start".into());
        self.updated_ms = now;
        Ok(())
    }

    /// A copy of this task, made ready to be placed again as a new attempt
    /// because its runner is gone (only its keeper calls this).
    pub fn replacement(&self, why: String, now: u64) -> TaskRecord {
        let mut r = self.clone();
        r.state = TaskState::Queued;
        r.container = None;
        r.offered_to = None;
        r.keeper = None;
        r.exit_code = None;
        r.kill_requested = false;
        r.epoch = self.epoch.saturating_add(1);
        r.message = Some(why);
        r.not_before_ms = now;
        r.updated_ms = now;
        r
    }

    /// This node's attempt was re-placed elsewhere while it was away or cut
    /// off: it must not run or be reported as current. An attempt that has
    /// ended already is left as it ended.
    pub fn superseded(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        if self.state.is_terminal() {
            return Err(self.refuse("be superseded"));
        }
        self.container = None;
        self.message = Some(why);
        self.keeper = None;
        self.finish(TaskState::Lost, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
    use crate::task::TaskSpec;

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn rec() -> TaskRecord {
        let spec = TaskSpec::builder("img").build().unwrap();
        TaskRecord::new(TaskId::new("t1").unwrap(), spec, node("a"), 0, 100)
    }

    fn ended() -> TaskRecord {
        let mut r = rec();
        r.kill(5).unwrap();
        r
    }

    #[test]
    fn an_offer_takes_a_queued_task_once_and_is_withdrawn_once() {
        let mut r = rec();
        assert!(r.offer_withdrawn().is_err(), "not on offer yet");
        r.offer_to(node("b")).unwrap();
        assert_eq!(r.offered_to, Some(node("b")));
        let before = r.clone();
        assert!(r.offer_to(node("c")).is_err(), "on offer already");
        assert_eq!(r, before, "a refused transition changes nothing");
        r.offer_withdrawn().unwrap();
        assert_eq!(r.offered_to, None);
    }

    #[test]
    fn an_ended_task_is_not_offered_but_its_offer_can_be_withdrawn() {
        let mut r = ended();
        assert!(r.offer_to(node("b")).is_err());
        let mut on_offer = rec();
        on_offer.offer_to(node("b")).unwrap();
        on_offer.kill(7).unwrap();
        on_offer.offer_withdrawn().unwrap();
        assert_eq!(
            (on_offer.state, on_offer.offered_to),
            (TaskState::Killed, None)
        );
    }

    #[test]
    fn the_keepers_copy_names_where_an_offer_settled() {
        let mut r = rec();
        r.offer_to(node("b")).unwrap();
        r.placed_on(node("b"));
        assert_eq!((r.node.clone(), r.offered_to.clone()), (node("b"), None));
        let mut kept_here = rec();
        kept_here.offer_to(node("b")).unwrap();
        kept_here.placed_on(node("a"));
        assert_eq!(
            (kept_here.node, kept_here.offered_to, kept_here.state),
            (node("a"), None, TaskState::Queued)
        );
    }

    #[test]
    fn taken_here_queues_it_due_now_off_offer() {
        let mut r = rec();
        r.not_before_ms = 5_000;
        r.offer_to(node("b")).unwrap();
        r.taken_here(node("b"), 9, 200).unwrap();
        assert_eq!(r.node, node("b"));
        assert_eq!(r.offered_to, None);
        assert_eq!((r.queue_seq, r.not_before_ms, r.updated_ms), (9, 200, 200));
    }

    #[test]
    fn adopted_keeps_its_backoff() {
        let mut r = rec();
        r.not_before_ms = 5_000;
        r.adopted(node("b"), 4).unwrap();
        assert_eq!((r.node.clone(), r.queue_seq), (node("b"), 4));
        assert_eq!((r.not_before_ms, r.updated_ms), (5_000, 100));
    }

    #[test]
    fn only_a_queued_task_is_taken_or_adopted() {
        let mut r = ended();
        let before = r.clone();
        assert!(r.taken_here(node("b"), 1, 200).is_err());
        assert!(r.adopted(node("b"), 1).is_err());
        assert_eq!(r, before);
    }

    #[test]
    fn a_claim_never_lowers_the_generation() {
        let mut c = rec();
        c.attempt = 3;
        c.claimed_by(node("b"), 0, 2);
        assert_eq!((c.node.clone(), c.generation()), (node("b"), (0, 3)));
        c.claimed_by(node("c"), 0, 5);
        assert_eq!((c.node.clone(), c.generation()), (node("c"), (0, 5)));
        // A re-placement's epoch outranks the attempts of the one before.
        c.claimed_by(node("d"), 1, 1);
        assert_eq!((c.node.clone(), c.generation()), (node("d"), (1, 1)));
        c.claimed_by(node("e"), 0, 9);
        assert_eq!((c.node.clone(), c.generation()), (node("e"), (1, 1)));
    }

    #[test]
    fn a_replacement_opens_a_new_epoch() {
        let mut c = rec();
        c.attempt = 4;
        let r = c.replacement("runner died".into(), 300);
        assert_eq!((r.epoch, r.attempt), (1, 4));
        c.epoch = 1;
        assert_eq!(c.replacement("again".into(), 400).epoch, 2);
    }

    #[test]
    fn a_copy_follows_only_a_newer_replacement() {
        let mut c = rec();
        c.attempt = 2;
        let before = c.clone();
        assert_eq!(
            c.replaced_by(node("b"), 0, 2),
            Err(StaleAttempt {
                task: c.id.clone(),
                current: (0, 2),
                given: (0, 2)
            })
        );
        assert_eq!(c, before);
        c.kill(3).unwrap();
        c.replaced_by(node("b"), 0, 3).unwrap();
        assert_eq!(
            (c.state, c.node.clone(), c.attempt),
            (TaskState::Queued, node("b"), 3)
        );
        // A later epoch wins whatever its attempt.
        c.replaced_by(node("c"), 1, 1).unwrap();
        assert_eq!((c.node.clone(), c.generation()), (node("c"), (1, 1)));
    }

    #[test]
    fn keeper_is_set_and_dropped() {
        let mut r = rec();
        r.keeper_set(node("k"));
        assert_eq!(r.keeper, Some(node("k")));
        r.keeper_dropped();
        assert_eq!(r.keeper, None);
    }

    #[test]
    fn superseded_ends_a_live_attempt_as_lost_and_leaves_an_ended_one() {
        let mut r = rec();
        r.keeper_set(node("k"));
        r.superseded("re-placed".into(), 300).unwrap();
        assert_eq!((r.state, r.keeper.clone()), (TaskState::Lost, None));
        assert_eq!(r.finished_ms, Some(300));
        let mut done = ended();
        let before = done.clone();
        assert!(done.superseded("re-placed".into(), 300).is_err());
        assert_eq!(done, before);
    }

    #[test]
    fn a_replacement_is_a_fresh_queued_copy() {
        let mut r = rec();
        r.keeper_set(node("k"));
        r.offer_to(node("b")).unwrap();
        let n = r.replacement("runner died".into(), 400);
        assert_eq!(n.state, TaskState::Queued);
        assert_eq!((n.offered_to, n.keeper), (None, None));
        assert_eq!((n.not_before_ms, n.updated_ms), (400, 400));
    }

    #[test]
    fn a_restart_holds_a_kept_queued_task_until_its_keeper_answers() {
        let mut r = rec();
        assert!(
            r.hold_after_restart(500).is_err(),
            "no keeper: nobody else can have re-placed it"
        );
        r.keeper_set(node("k"));
        r.hold_after_restart(500).unwrap();
        assert!(r.is_held());
        assert_eq!(r.updated_ms, 500);
        r.release(600).unwrap();
        assert!(!r.is_held());
        let mut offered = rec();
        offered.keeper_set(node("k"));
        offered.offer_to(node("b")).unwrap();
        assert!(offered.hold_after_restart(500).is_err());
        let mut done = ended();
        done.keeper_set(node("k"));
        assert!(done.hold_after_restart(500).is_err());
    }
}
