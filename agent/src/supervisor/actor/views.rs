//! Read-only views of the supervisor's state: where a task's output is and
//! the node's cores, queue and Docker health, and its tasks counted by state.

use mesh_protocol::TaskId;
use mesh_protocol::TaskState;
use mesh_protocol::api::{CoreHold, NodeView};

use super::Supervisor;
use crate::runtime::ContainerRuntime;
use crate::supervisor::{LogsAt, SupervisorError};

impl<R: ContainerRuntime> Supervisor<R> {
    pub(super) fn logs_at(&self, id: &TaskId) -> Result<LogsAt, SupervisorError> {
        let r = self
            .records
            .get(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))?;
        Ok(match (&r.container, r.state) {
            (Some(c), TaskState::Running) => LogsAt::Container(c.clone(), r.id.clone(), r.attempt),
            _ if r.attempt > 0 && !matches!(r.state, TaskState::Queued | TaskState::Starting) => {
                LogsAt::Saved(r.id.clone(), r.attempt)
            }
            // A retry waiting in the queue: show the last attempt's output.
            (_, TaskState::Queued) if r.attempt > 0 => LogsAt::Saved(r.id.clone(), r.attempt),
            _ => LogsAt::NotYet,
        })
    }

    /// Every state with how many records are in it.
    pub(super) fn task_counts(&self) -> Vec<(TaskState, usize)> {
        TaskState::ALL
            .iter()
            .map(|&s| (s, self.records.values().filter(|r| r.state == s).count()))
            .collect()
    }

    pub(super) fn node_view(&self) -> NodeView {
        let cores = self
            .alloc
            .topology()
            .cores()
            .map(|(numa, c)| CoreHold {
                core: c.id,
                numa,
                pus: c.pus.iter().copied().collect(),
                task: self.alloc.holder(c.id).cloned(),
            })
            .collect();
        NodeView {
            node: self.cfg.node.clone(),
            version: mesh_protocol::build_info::VERSION.into(),
            topology: self.alloc.topology().clone(),
            mapping: self.cfg.topology.mapping.clone(),
            cores,
            load: self.alloc.load(),
            queued: self.queue.len(),
            running: self
                .records
                .values()
                .filter(|r| matches!(r.state, TaskState::Starting | TaskState::Running))
                .count(),
            max_queue: self.cfg.max_queue,
            docker: self.docker.clone(),
            mesh: None,
        }
    }
}
