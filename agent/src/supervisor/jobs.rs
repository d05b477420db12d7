//! The side effects the supervisor delegates: each runs as its own tokio
//! task and reports back through the event channel, so the supervisor's loop
//! never waits on Docker.

use std::sync::Arc;

use mesh_protocol::TaskId;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, error, info, warn};

use mesh_protocol::image::{PullPolicy, PullProgress};

use crate::images::{EnsureError, Pulls};
use crate::logs::LogDir;
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerSpec, RuntimeError};

/// What a job reports.
#[derive(Debug)]
pub enum Event {
    Ping(Result<String, RuntimeError>),
    Observed(Result<Vec<ContainerInfo>, RuntimeError>),
    /// The attempt's image is being pulled, this far.
    Pulling {
        task: TaskId,
        attempt: u32,
        progress: PullProgress,
    },
    /// The attempt's image could not be made present.
    PullFailed {
        task: TaskId,
        attempt: u32,
        error: EnsureError,
    },
    Started {
        task: TaskId,
        attempt: u32,
        result: Result<String, RuntimeError>,
        /// How long the runtime took to create and start the container
        /// (`None`: it was not asked).
        took: Option<std::time::Duration>,
    },
    Exited {
        task: TaskId,
        attempt: u32,
        code: i64,
    },
    Vanished {
        task: TaskId,
        attempt: u32,
        why: String,
    },
    /// We lost sight of the container (Docker went away); reconcile later.
    Interrupted {
        task: TaskId,
        attempt: u32,
        error: RuntimeError,
    },
}

pub type Events = UnboundedSender<Event>;

pub async fn ping<R: ContainerRuntime>(runtime: Arc<R>, events: Events) {
    let _ = events.send(Event::Ping(runtime.ping().await));
}

/// Lists the containers this node owns.
pub async fn observe<R: ContainerRuntime>(
    runtime: Arc<R>,
    node: String,
    cluster: String,
    events: Events,
) {
    let found = runtime
        .list(&[
            (mesh_protocol::labels::NODE, node.as_str()),
            (mesh_protocol::labels::CLUSTER, cluster.as_str()),
        ])
        .await
        .map(|v| {
            v.into_iter()
                .filter(|c| {
                    c.labels
                        .get(mesh_protocol::labels::KIND)
                        .map(String::as_str)
                        == Some(mesh_protocol::labels::KIND_TASK)
                })
                .collect()
        });
    let _ = events.send(Event::Observed(found));
}

/// Gets the attempt's image as `policy` asks, creates and starts its
/// container, then follows it to its end.
#[allow(clippy::too_many_arguments)] // one job's whole context
pub async fn run_attempt<R: ContainerRuntime>(
    runtime: Arc<R>,
    pulls: Pulls<R>,
    policy: PullPolicy,
    logs: LogDir,
    spec: ContainerSpec,
    task: TaskId,
    attempt: u32,
    events: Events,
) {
    // Progress is reported when it moves by a whole percent or a layer.
    let mut last: Option<(u8, u32)> = None;
    let ensured = pulls
        .ensure(&spec.image, policy, |progress| {
            let now = (progress.percent(), progress.layers_done);
            if last != Some(now) {
                last = Some(now);
                let _ = events.send(Event::Pulling {
                    task: task.clone(),
                    attempt,
                    progress,
                });
            }
        })
        .await;
    match ensured {
        Ok(()) => {}
        Err(EnsureError::Runtime(e)) => {
            let _ = events.send(Event::Started {
                task,
                attempt,
                result: Err(e),
                took: None,
            });
            return;
        }
        Err(error) => {
            let _ = events.send(Event::PullFailed {
                task,
                attempt,
                error,
            });
            return;
        }
    }
    let asked = tokio::time::Instant::now();
    let ran = runtime.run(&spec).await;
    let took = Some(asked.elapsed());
    match ran {
        Ok(id) => {
            pulls.started(&spec.image);
            let _ = events.send(Event::Started {
                task: task.clone(),
                attempt,
                result: Ok(id.clone()),
                took,
            });
            watch(runtime, logs, id, task, attempt, events).await;
        }
        Err(e) => {
            let _ = events.send(Event::Started {
                task,
                attempt,
                result: Err(e),
                took,
            });
        }
    }
}

/// Waits for the container to stop, keeps its output, removes it, and
/// reports the exit code.
pub async fn watch<R: ContainerRuntime>(
    runtime: Arc<R>,
    logs: LogDir,
    container: String,
    task: TaskId,
    attempt: u32,
    events: Events,
) {
    let code = match runtime.wait(&container).await {
        Ok(code) => code,
        Err(RuntimeError::NotFound(_)) => {
            let _ = events.send(Event::Vanished {
                task,
                attempt,
                why: format!("container {container} disappeared"),
            });
            return;
        }
        Err(error) => {
            let _ = events.send(Event::Interrupted {
                task,
                attempt,
                error,
            });
            return;
        }
    };
    debug!(task_id = %task, attempt, code, "container exited");
    match logs
        .save(&task, attempt, runtime.logs(&container, false))
        .await
    {
        Ok(kept) if kept.dropped > 0 => {
            info!(task_id = %task, attempt, kept = kept.bytes, dropped = kept.dropped, "kept the tail of the container's output (--max-log-bytes)")
        }
        Ok(_) => {}
        Err(e) => {
            error!(task_id = %task, attempt, error = %e, "could not keep the container's output; it goes with the container")
        }
    }
    // Docker answers a wait with 137 when the container is removed by force;
    // a container that is gone (or going) was taken away, not ended.
    if let Err(RuntimeError::NotFound(_)) = runtime.inspect(&container).await {
        let _ = events.send(Event::Vanished {
            task,
            attempt,
            why: format!("container {container} was removed outside the agent"),
        });
        return;
    }
    if let Err(e) = runtime.remove(&container).await {
        warn!(task_id = %task, container, error = %e, "could not remove finished container");
    }
    let _ = events.send(Event::Exited {
        task,
        attempt,
        code,
    });
}

pub async fn kill<R: ContainerRuntime>(runtime: Arc<R>, task: TaskId, container: String) {
    if let Err(e) = runtime.kill(&container).await {
        warn!(task_id = %task, container, error = %e, "kill failed; retried after reconnecting to Docker");
    }
}

pub async fn remove<R: ContainerRuntime>(runtime: Arc<R>, container: String, why: &'static str) {
    match runtime.remove(&container).await {
        Ok(()) => debug!(container, why, "removed container"),
        Err(e) => warn!(container, why, error = %e, "could not remove container"),
    }
}

/// Removes the kept output of forgotten tasks.
pub async fn remove_files(paths: Vec<std::path::PathBuf>) {
    for path in paths {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %path.display(), error = %e, "could not remove a forgotten task's output")
            }
        }
    }
}

/// Removes files in the log dir older than `max_age` that belong to no task
/// in `known` (left by a crash between forgetting a task and removing its
/// output, or by an interrupted copy).
pub async fn sweep_logs(
    dir: std::path::PathBuf,
    known: std::collections::BTreeSet<TaskId>,
    max_age: std::time::Duration,
) {
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    let mut removed = 0u32;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        match crate::logs::task_of(&name) {
            Some(t) if !known.contains(&t) => {}
            _ => continue,
        }
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old {
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => removed += 1,
                Err(e) => warn!(file = %name, error = %e, "could not remove an old output file"),
            }
        }
    }
    if removed > 0 {
        info!(count = removed, "removed old output files of no known task");
    }
}
