//! Tasks crossing nodes: taking a peer's offer, and handing a queued task
//! to the mover (and back, or forgetting it once it moved).

use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskState};
use tracing::{error, info};

use super::{Supervisor, queued};
use crate::runtime::ContainerRuntime;
use crate::supervisor::SupervisorError;

impl<R: ContainerRuntime> Supervisor<R> {
    pub(super) fn begin_move(&mut self, id: &TaskId, to: NodeId) -> Option<TaskRecord> {
        let r = self.records.get_mut(id)?;
        if r.state != TaskState::Queued || r.kill_requested {
            return None;
        }
        self.queue.remove(id)?;
        r.offered_to = Some(to);
        let snapshot = r.clone();
        self.persist(id);
        Some(snapshot)
    }

    pub(super) fn end_move(&mut self, id: &TaskId, moved: bool) {
        let Some(r) = self.records.get_mut(id) else {
            return;
        };
        if r.offered_to.is_none() {
            return;
        }
        if r.state != TaskState::Queued {
            // Killed while on offer: it stays as it ended here.
            r.offered_to = None;
            self.persist(id);
            return;
        }
        if moved {
            info!(task_id = %id, to = ?r.offered_to, "task moved to another node");
            self.records.remove(id);
            if let Err(e) = self.store.delete(id.as_str()) {
                error!(task_id = %id, error = %e, "could not forget a moved task");
            }
        } else {
            r.offered_to = None;
            self.queue.put(queued(r));
            self.persist(id);
        }
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
        if !self.queue.is_empty() {
            return refuse(format!("{} tasks wait here already", self.queue.len()));
        }
        if let Err(e) = self.alloc.plan(record.spec.cores) {
            return refuse(e.to_string());
        }
        let now = self.now_ms();
        record.node = self.cfg.node.clone();
        record.offered_to = None;
        self.claim_copy(&record);
        record.state = TaskState::Queued;
        record.queue_seq = self.next_seq;
        record.not_before_ms = now;
        record.updated_ms = now;
        self.store
            .put(&record)
            .map_err(|e| SupervisorError::Busy(format!("task not accepted: {e}")))?;
        self.next_seq += 1;
        self.queue.put(queued(&record));
        info!(task_id = %record.id, "took a task offered by a peer");
        self.records.insert(record.id.clone(), record);
        Ok(())
    }
}
