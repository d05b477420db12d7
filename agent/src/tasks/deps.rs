//! `--after`: a queued task that waits for others starts once they all
//! succeeded, and fails with the reason as soon as one of them ends
//! otherwise. The tasks waited for may run anywhere in the mesh.

use mesh_protocol::TaskState;
use tracing::{debug, warn};

use super::Tasks;

/// One round: settles every waiting task whose dependencies have ended.
pub async fn resolve(tasks: &Tasks) {
    let supervisor = tasks.supervisor();
    let Ok(blocked) = supervisor.blocked().await else {
        return;
    };
    'task: for (id, after) in blocked {
        for dep in &after {
            // Unknown for now (its node may be away): keep waiting.
            let Ok(found) = tasks.find(dep).await else {
                continue 'task;
            };
            match found.record.state {
                TaskState::Succeeded => {}
                s if s.is_terminal() => {
                    let why = format!("task {dep} it waits for ended {s}, so it will not run");
                    if let Err(e) = supervisor.dependency_failed(id.clone(), why).await {
                        warn!(task_id = %id, error = %e, "cannot fail a task whose dependency failed");
                    }
                    continue 'task;
                }
                _ => continue 'task,
            }
        }
        debug!(task_id = %id, "every task it waits for succeeded");
        if let Err(e) = supervisor.unblock(id.clone()).await {
            warn!(task_id = %id, error = %e, "cannot unblock a task");
        }
    }
}
