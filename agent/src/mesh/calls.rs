//! What this agent answers when a peer calls it: the supervisor's task
//! operations, exposed over the mesh.

use std::sync::Arc;

use futures_util::StreamExt;
use mesh_protocol::failover::Verdict;
use mesh_protocol::rpc::{Request, Response};
use tracing::info;

use super::rpc::{Reply, RpcHandler};
use crate::supervisor::{SupervisorError, SupervisorHandle};

fn error_response(e: SupervisorError) -> Response {
    match e {
        SupervisorError::NotFound(_) => Response::NotFound,
        other => Response::Error(other.to_string()),
    }
}

/// Sets this node draining (or not): the supervisor stops starting tasks
/// and the gossip tells placement to skip this node.
pub async fn drain(
    s: &SupervisorHandle,
    mesh: Option<&super::Mesh>,
    on: bool,
    migrate: bool,
) -> Result<(), SupervisorError> {
    s.set_draining(on, migrate).await?;
    if let Some(mesh) = mesh {
        mesh.set_draining(on).await;
    }
    Ok(())
}

/// The mesh, once started (the handler exists before it).
pub type MeshCell = Arc<std::sync::OnceLock<super::Mesh>>;

/// This node's service figures and connections.
pub type ReportFn = Arc<dyn Fn() -> mesh_protocol::api::ServiceReport + Send + Sync>;
/// Set once services start.
pub type ReportCell = Arc<std::sync::OnceLock<ReportFn>>;

/// The handler the transport runs for every call.
pub fn handler(supervisor: SupervisorHandle, mesh: MeshCell, reports: ReportCell) -> RpcHandler {
    Arc::new(move |caller, request| {
        let s = supervisor.clone();
        let mesh = mesh.clone();
        let reports = reports.clone();
        Box::pin(async move {
            match request {
                Request::ServiceReport => Reply::One(Response::ServiceReport(Box::new(
                    reports.get().map(|r| r()).unwrap_or_default(),
                ))),
                Request::Offer(record) => {
                    let id = record.id.clone();
                    match s.offer(*record).await {
                        Ok(()) => {
                            info!(task_id = %id, from = ?caller, "accepted a task from a peer");
                            Reply::One(Response::Accepted)
                        }
                        Err(e) => Reply::One(Response::Refused(e.to_string())),
                    }
                }
                Request::List => Reply::One(match s.list().await {
                    Ok(records) => Response::Records(records),
                    Err(e) => error_response(e),
                }),
                Request::Get(id) => Reply::One(match s.get(id).await {
                    Ok(r) => Response::Record(Box::new(r)),
                    Err(e) => error_response(e),
                }),
                Request::Kill(id) => Reply::One(match s.kill(id).await {
                    Ok(r) => Response::Record(Box::new(r)),
                    Err(e) => error_response(e),
                }),
                Request::Replicate(record) => {
                    // Only a caller proven by its certificate may hold a copy.
                    let Some(caller) = caller.and_then(|c| mesh_protocol::NodeId::new(c).ok())
                    else {
                        return Reply::One(Response::Error("unauthenticated caller".into()));
                    };
                    Reply::One(match s.replicate(*record, caller).await {
                        Ok(Verdict::Keep) => Response::Kept,
                        Ok(Verdict::Superseded { node, attempt }) => {
                            Response::Superseded { node, attempt }
                        }
                        Err(e) => error_response(e),
                    })
                }
                Request::Hold(record) => Reply::One(match s.hold(*record).await {
                    Ok(()) => Response::Kept,
                    Err(e) => error_response(e),
                }),
                Request::Drain { on, migrate } => {
                    Reply::One(match drain(&s, mesh.get(), on, migrate).await {
                        Ok(()) => Response::Accepted,
                        Err(e) => error_response(e),
                    })
                }
                Request::Logs { id, follow } => match s.output(id, follow).await {
                    Ok(stream) => Reply::Stream(
                        stream
                            .map(|chunk| match chunk {
                                Ok(bytes) => Response::LogChunk(bytes.to_vec()),
                                Err(e) => Response::Error(e.to_string()),
                            })
                            .chain(futures_util::stream::iter([Response::LogEnd]))
                            .boxed(),
                    ),
                    Err(e) => Reply::One(error_response(e)),
                },
            }
        })
    })
}
