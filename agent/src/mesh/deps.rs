//! `--after`: a queued task that waits for others starts once they all
//! succeeded, and fails with the reason as soon as one of them ends
//! otherwise. The tasks waited for may run anywhere in the mesh.

use mesh_protocol::rpc::{Request, Response};
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use tracing::debug;

use super::Mesh;
use super::place::{self, CALL_TIMEOUT, Found};
use crate::supervisor::SupervisorHandle;

/// Where a dependency stands: its record, or None if nobody knows it now.
async fn lookup(supervisor: &SupervisorHandle, mesh: &Mesh, id: &TaskId) -> Option<TaskRecord> {
    match place::find(supervisor, mesh, id).await.ok()? {
        Found::Here => supervisor.get(id.clone()).await.ok(),
        Found::At(_, addr, record) => match mesh
            .call(addr, &Request::Get(id.clone()), CALL_TIMEOUT)
            .await
        {
            Ok(Response::Record(r)) => Some(*r),
            _ => Some(*record),
        },
    }
}

/// One round: settles every waiting task whose dependencies have ended.
pub async fn resolve(mesh: &Mesh, supervisor: &SupervisorHandle) {
    let Ok(blocked) = supervisor.blocked().await else {
        return;
    };
    'task: for (id, after) in blocked {
        for dep in &after {
            let Some(r) = lookup(supervisor, mesh, dep).await else {
                // Unknown for now (its node may be away): keep waiting.
                continue 'task;
            };
            match r.state {
                TaskState::Succeeded => {}
                s if s.is_terminal() => {
                    let why = format!("task {dep} it waits for ended {s}, so it will not run");
                    let _ = supervisor.dependency_failed(id.clone(), why).await;
                    continue 'task;
                }
                _ => continue 'task,
            }
        }
        debug!(task_id = %id, "every task it waits for succeeded");
        let _ = supervisor.unblock(id).await;
    }
}
