//! Tasks crossing nodes: taking a peer's offer, and handing a queued task
//! to the mover (and back, or forgetting it once it moved), and stopping
//! the running tasks of a node drained with `--migrate` so they move.

use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskState};
use tracing::{error, info};

use super::{Supervisor, jobs, queued, refused};
use crate::runtime::ContainerRuntime;
use crate::supervisor::SupervisorError;

impl<R: ContainerRuntime> Supervisor<R> {
    pub(super) fn begin_move(&mut self, id: &TaskId, to: NodeId) -> Option<TaskRecord> {
        // Started, killed or on offer since the mover saw the queue head.
        if !self.queue.contains(id) {
            return None;
        }
        let r = self.records.get_mut(id)?;
        if let Err(e) = r.offer_to(to) {
            refused(&e);
            return None;
        }
        self.queue.remove(id);
        let snapshot = r.clone();
        self.persist(id);
        Some(snapshot)
    }

    pub(super) fn end_move(&mut self, id: &TaskId, moved: bool) {
        let Some(r) = self.records.get_mut(id) else {
            return;
        };
        // Not on offer: settled already.
        let Some(to) = r.offered_to.clone() else {
            return;
        };
        if moved && r.state == TaskState::Queued {
            info!(task_id = %id, %to, "task moved to another node");
            self.records.remove(id);
            // Left in the store, it names the node it was offered to: a
            // restart asks that node, finds it there and forgets it.
            if let Err(e) = self.store.delete(id.as_str()) {
                error!(task_id = %id, error = %e, "could not forget a moved task");
                self.write_failed(&e);
            }
            return;
        }
        // Refused, or killed while on offer (it stays as it ended here).
        if let Err(e) = r.offer_withdrawn() {
            return refused(&e);
        }
        if r.state == TaskState::Queued {
            self.queue.put(queued(r));
        }
        self.persist(id);
    }

    /// Holds a task whose offer to `to` got no answer while it was being
    /// placed from here: out of the queue, on offer, until the mover learns
    /// from `to` whether it took it (as for a move in doubt). Offered to
    /// another node meanwhile, it could run twice.
    pub(super) fn hold_in_doubt(
        &mut self,
        mut record: TaskRecord,
        to: NodeId,
    ) -> Result<(), SupervisorError> {
        self.may_take(&record)?;
        let conflict =
            |e: mesh_protocol::task::TransitionError| SupervisorError::Conflict(e.to_string());
        record
            .adopted(self.cfg.node.clone(), self.next_seq)
            .map_err(conflict)?;
        record.offer_to(to.clone()).map_err(conflict)?;
        self.store_new(&record)?;
        self.next_seq = self.next_seq.saturating_add(1);
        info!(task_id = %record.id, node = %to, "held here on offer until that node says whether it took it");
        let id = record.id.clone();
        self.records.insert(id.clone(), record);
        self.tell(&id);
        Ok(())
    }

    /// Takes a peer's task only if it can start at once: Docker is there,
    /// nobody waits here already, and the cores are free.
    pub(super) fn offer(&mut self, mut record: TaskRecord) -> Result<(), SupervisorError> {
        let refuse = |why: String| Err(SupervisorError::Busy(why));
        if self.draining {
            return refuse("this node is draining".into());
        }
        if !self.docker.reachable || !self.reconciled {
            return refuse("Docker is not available here".into());
        }
        if self.records.contains_key(&record.id) {
            return refuse(format!("task {} is known here already", record.id));
        }
        if self.disclaimed.holds(&record.id, self.now_ms()) {
            // Its offering node asked after it before this offer arrived,
            // heard "not here", and may have placed it elsewhere.
            return Err(SupervisorError::Conflict(format!(
                "task {} was disclaimed here: its offer came after the question whether this node held it",
                record.id
            )));
        }
        // Tasks larger than this host wait here for a larger node, and
        // never for these cores.
        let waiting = self
            .queue
            .iter()
            .filter(|t| self.alloc.can_ever_fit(t.cores).is_ok())
            .count();
        if waiting > 0 {
            return refuse(format!("{waiting} tasks wait here already"));
        }
        if let Err(e) = self.alloc.plan(record.spec.cores) {
            return refuse(e.to_string());
        }
        let now = self.now_ms();
        record
            .taken_here(self.cfg.node.clone(), self.next_seq, now)
            .map_err(|e| SupervisorError::Conflict(e.to_string()))?;
        self.store_new(&record)?;
        self.claim_copy(&record);
        self.next_seq = self.next_seq.saturating_add(1);
        self.queue.put(queued(&record));
        info!(task_id = %record.id, "took a task offered by a peer");
        let id = record.id.clone();
        self.records.insert(id.clone(), record);
        self.tell(&id);
        Ok(())
    }

    /// The record of a task whose offer went unanswered, or, when this node
    /// does not hold it, `NotFound`, after which its offer is refused.
    pub(super) fn disclaim(&mut self, id: TaskId) -> Result<TaskRecord, SupervisorError> {
        if let Some(r) = self.records.get(&id) {
            return Ok(r.clone());
        }
        let now = self.now_ms();
        self.disclaimed.disclaim(id.clone(), now);
        Err(SupervisorError::NotFound(id.to_string()))
    }

    /// Stops every running task so it queues again and moves elsewhere.
    pub(super) fn migrate_running(&mut self) {
        let ids: Vec<TaskId> = self
            .records
            .values()
            .filter(|r| matches!(r.state, TaskState::Starting | TaskState::Running))
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            let Some(r) = self.records.get_mut(&id) else {
                continue;
            };
            if let Err(e) = r.stop_to_migrate() {
                refused(&e);
                continue;
            }
            if let Some(c) = r.container.clone() {
                info!(task_id = %id, "stopping to migrate off this draining node");
                self.spawn(jobs::kill(self.runtime.clone(), id.clone(), c));
            }
            self.persist(&id);
        }
    }
}
