//! The supervisor's part in failover: holding copies of tasks other agents
//! run (as their keeper), adopting re-placed tasks, and stopping an attempt
//! that was superseded while this node was away. The decisions are
//! `mesh_protocol::failover`'s; this applies them to state and store.

use mesh_protocol::confirm::Stamp;
use mesh_protocol::failover::{self, Verdict};
use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskState};
use tracing::{debug, error, info, warn};

use super::{Supervisor, jobs, queued};
use crate::runtime::ContainerRuntime;
use crate::supervisor::SupervisorError;

impl<R: ContainerRuntime> Supervisor<R> {
    /// Queues an existing record here, whatever the load (it waits its turn),
    /// and whatever its size: placement refused what no node of the mesh
    /// can fit, and one larger than this host waits for the mover to hand
    /// it to a node that fits it (a larger one that was busy).
    pub(super) fn adopt(
        &mut self,
        mut record: TaskRecord,
        fresh: bool,
    ) -> Result<(), SupervisorError> {
        self.may_take(&record)?;
        record
            .adopted(self.cfg.node.clone(), self.next_seq)
            .map_err(|e| SupervisorError::Conflict(e.to_string()))?;
        if fresh && self.queue.len() >= self.cfg.max_queue {
            return Err(SupervisorError::Busy(
                mesh_protocol::queue::QueueFull(self.queue.len()).to_string(),
            ));
        }
        self.store_new(&record)?;
        self.claim_copy(&record);
        self.next_seq = self.next_seq.saturating_add(1);
        self.queue.put(queued(&record));
        info!(task_id = %record.id, attempt = record.attempt, keeper = ?record.keeper, "task adopted into the queue");
        let id = record.id.clone();
        self.records.insert(id.clone(), record);
        self.tell(&id);
        Ok(())
    }

    /// Whether this node may take `record` as a new attempt: not while it
    /// holds an unfinished (or later) attempt of it, nor while an earlier
    /// attempt's container still holds its cores.
    pub(super) fn may_take(&self, record: &TaskRecord) -> Result<(), SupervisorError> {
        if let Some(r) = self.records.get(&record.id)
            && (!r.state.is_terminal() || r.attempt > record.attempt)
        {
            return Err(SupervisorError::Conflict(format!(
                "task {} is here already ({}, attempt {})",
                record.id, r.state, r.attempt
            )));
        }
        if self.alloc.allocation(&record.id).is_some() {
            return Err(SupervisorError::Busy(format!(
                "task {}'s earlier attempt here still holds its cores until its container is gone",
                record.id
            )));
        }
        Ok(())
    }

    /// Judges a runner's push against the copy held, or, when this node
    /// runs the task itself (a runner that came back may pick the node
    /// that took its task over as its new keeper), against its own record.
    /// `Keep` only once the copy is on disk: a copy that cannot be written
    /// is an error to the runner, which pushes it again next round.
    pub(super) fn replicate(
        &mut self,
        record: TaskRecord,
        caller: NodeId,
    ) -> Result<Verdict, SupervisorError> {
        let me = &self.cfg.node;
        let held = self.copies.get(&record.id).or_else(|| {
            self.records
                .get(&record.id)
                .filter(|r| &r.node == me && r.offered_to.is_none())
        });
        let verdict = failover::judge(held, &record, &caller);
        if verdict == Verdict::Keep {
            self.keep_copy(record)?;
        }
        Ok(verdict)
    }

    pub(super) fn hold(&mut self, record: TaskRecord) -> Result<(), SupervisorError> {
        self.keep_copy(record)
    }

    /// Writes a copy, then holds it; a failed write keeps nothing.
    fn keep_copy(&mut self, record: TaskRecord) -> Result<(), SupervisorError> {
        if let Err(e) = self.store.put_copy(&record) {
            error!(task_id = %record.id, error = %e, "could not store a task copy");
            self.write_failed(&e);
            return Err(SupervisorError::Storage(format!(
                "{} did not keep the copy: {e}",
                self.cfg.node
            )));
        }
        self.unsaved_copies.remove(&record.id);
        self.copies.insert(record.id.clone(), record);
        Ok(())
    }

    /// This node takes a task it holds a copy of: the copy now names this
    /// node and the attempt it will run, so it is never re-placed from here
    /// and still tells a stale runner that it was superseded.
    pub(super) fn claim_copy(&mut self, record: &TaskRecord) {
        let me = self.cfg.node.clone();
        if let Some(c) = self.copies.get_mut(&record.id) {
            c.claimed_by(me, record.epoch, record.attempt.saturating_add(1));
            self.persist_copy(&record.id);
        }
    }

    pub(super) fn replaced(&mut self, id: &TaskId, node: NodeId, epoch: u32, attempt: u32) {
        let Some(c) = self.copies.get_mut(id) else {
            return;
        };
        if let Err(e) = c.replaced_by(node, epoch, attempt) {
            // The new runner's push got here first: it is newer.
            debug!(task_id = %id, error = %e, "re-placement not recorded");
            return;
        }
        self.persist_copy(id);
    }

    /// What this node holds of `ids`: its own record and its copy of each.
    pub(super) fn stamps(&self, ids: &[TaskId]) -> Vec<Stamp> {
        ids.iter()
            .flat_map(|id| [self.records.get(id), self.copies.get(id)])
            .flatten()
            .map(Stamp::of)
            .collect()
    }

    /// Forgets a copy a newer record elsewhere says ended: kept, it would
    /// be re-placed the day its named runner died.
    pub(super) fn forget_copy(&mut self, id: &TaskId) {
        if !self.copies.contains_key(id) {
            return;
        }
        if let Err(e) = self.store.forget(&[], std::slice::from_ref(id)) {
            error!(task_id = %id, error = %e, "could not forget a stale copy");
            self.write_failed(&e);
            return;
        }
        self.copies.remove(id);
        info!(task_id = %id, "forgot a stale copy: the task ended under another keeper");
    }

    pub(super) fn set_keeper(&mut self, id: &TaskId, keeper: NodeId) {
        if let Some(r) = self.records.get_mut(id) {
            r.keeper_set(keeper);
            self.persist(id);
        }
    }

    /// Stops this node's attempt of a task the mesh re-placed elsewhere.
    pub(super) fn supersede(&mut self, id: &TaskId, why: String) {
        let now = self.now_ms();
        let Some(r) = self.records.get_mut(id) else {
            return;
        };
        let container = r.container.clone();
        let active = matches!(r.state, TaskState::Starting | TaskState::Running);
        if r.superseded(why.clone(), now).is_err() {
            // Ended already: only stop pushing it.
            r.keeper_dropped();
            self.persist(id);
            return;
        }
        warn!(task_id = %id, why, "this attempt was superseded; stopping it");
        self.queue.remove(id);
        // The attempt's cores stay held until its container is gone: the
        // job that follows it reports the end (`on_ended`), a start still
        // in flight is removed as soon as it completes (`on_started`), and
        // a container nobody follows is found by reconciliation.
        if !active {
            self.alloc.release(id);
        } else if let Some(c) = container {
            self.spawn(jobs::remove(self.runtime.clone(), c, "superseded attempt"));
        }
        self.persist(id);
    }
    /// This node lost its lease on the task (`mesh_protocol::lease`): a
    /// running attempt is stopped and the task waits here, held, until its
    /// keeper answers; whichever side of a split has the majority may take
    /// it over meanwhile.
    pub(super) fn fence(&mut self, id: &TaskId, why: String) {
        let now = self.now_ms();
        let Some(r) = self.records.get_mut(id) else {
            return;
        };
        if r.is_held() {
            return;
        }
        if let Err(e) = r.fence(why.clone(), now) {
            debug!(task_id = %id, error = %e, "not fenced");
            return;
        }
        warn!(task_id = %id, why, "fenced: stopping this attempt until its keeper answers");
        match (r.state, r.container.clone()) {
            (TaskState::Queued, _) => self.queue.put(queued(r)),
            // A starting attempt is stopped once its container exists.
            (_, Some(c)) => self.spawn(jobs::kill(self.runtime.clone(), id.clone(), c)),
            (_, None) => {}
        }
        self.persist(id);
    }

    /// The keeper kept this node's push of a held task: it may start.
    pub(super) fn unhold(&mut self, id: &TaskId) {
        let now = self.now_ms();
        let Some(r) = self.records.get_mut(id) else {
            return;
        };
        if r.release(now).is_err() {
            return;
        }
        info!(task_id = %id, "its keeper answered: the held task may start");
        if r.state == TaskState::Queued {
            self.queue.put(queued(r));
        }
        self.persist(id);
    }
}
