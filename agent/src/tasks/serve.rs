//! What this agent answers when a peer makes a task call: the supervisor's
//! operations, exposed over the mesh, with typed failures.

use std::sync::Arc;

use futures_util::StreamExt;
use mesh_protocol::failover::Verdict;
use mesh_protocol::rpc::{ErrorKind, RemoteError, Request, Response};
use mesh_protocol::{confirm, listing};
use tracing::{info, warn};

use super::{TaskError, Tasks};
use crate::mesh::handlers::{Caller, Reply, RpcHandler};

fn one<T>(result: Result<T, TaskError>, answer: impl FnOnce(T) -> Response) -> Reply {
    Reply::One(match result {
        Ok(v) => answer(v),
        Err(e) => Response::Failed(e.to_remote()),
    })
}

/// The handler the mesh runs for every task call.
pub fn handler(tasks: Tasks) -> RpcHandler {
    Arc::new(move |caller, request| {
        let tasks = tasks.clone();
        Box::pin(async move { answer(&tasks, caller, request).await })
    })
}

async fn answer(tasks: &Tasks, caller: Caller, request: Request) -> Reply {
    let here = tasks.here();
    match request {
        Request::Offer(record) => {
            let id = record.id.clone();
            let taken = here.offer(*record).await;
            if taken.is_ok() {
                info!(task_id = %id, from = ?caller, "accepted a task from a peer");
            }
            one(taken, |()| Response::Accepted)
        }
        Request::List { after, limit } => {
            let limit = limit.clamp(1, listing::MAX_LIMIT);
            one(here.list(after, limit).await, |page| {
                // The answer must fit a frame: cut the page by size.
                let (page, unsendable) = listing::fit(page.records, page.more, listing::PAGE_BYTES);
                for id in unsendable.0 {
                    warn!(task_id = %id, "a task's record is too large for a list answer; left out");
                }
                Response::Page(page)
            })
        }
        Request::Get(id) => one(here.get(&id).await, |r| Response::Record(Box::new(r))),
        Request::Disclaim(id) => one(here.disclaim(&id).await, |r| Response::Record(Box::new(r))),
        // The caller is the API user the peer authenticated: a peer is
        // trusted to say so because it is a member of the mesh.
        Request::Kill { id, by } => {
            one(here.kill(&id, &by).await, |r| Response::Record(Box::new(r)))
        }
        Request::Replicate(record) => {
            // Only a caller proven by its certificate may hold a copy.
            let Some(caller) = caller else {
                return Reply::One(Response::Failed(RemoteError::new(
                    ErrorKind::Unauthenticated,
                    "a copy is pushed only by a node whose certificate names it",
                )));
            };
            let verdict = tasks.supervisor().replicate(*record, caller).await;
            one(verdict.map_err(TaskError::from), |v| match v {
                Verdict::Keep => Response::Kept,
                Verdict::Superseded { node, attempt } => Response::Superseded { node, attempt },
            })
        }
        Request::Hold(record) => one(here.hold(*record).await, |()| Response::Kept),
        Request::Copy(id) => one(here.copy(&id).await, |r| Response::Record(Box::new(r))),
        Request::Stamps(ids) if ids.len() > confirm::MAX_IDS => {
            Reply::One(Response::Failed(RemoteError::new(
                ErrorKind::Invalid,
                format!(
                    "a stamps call named {} task ids, more than the {} one call may name; split the ask",
                    ids.len(),
                    confirm::MAX_IDS
                ),
            )))
        }
        Request::Stamps(ids) => one(here.stamps(ids).await, Response::Stamps),
        Request::Drain { on, migrate } => {
            one(here.drain(on, migrate).await, |()| Response::Accepted)
        }
        Request::Logs { id, follow } => match here.logs(&id, follow).await {
            Ok(stream) => Reply::Stream(
                stream
                    .map(|chunk| match chunk {
                        Ok(bytes) => Response::LogChunk(bytes.to_vec()),
                        Err(e) => Response::Failed(e.to_remote()),
                    })
                    .chain(futures_util::stream::iter([Response::LogEnd]))
                    .boxed(),
            ),
            Err(e) => Reply::One(Response::Failed(e.to_remote())),
        },
        // Not a task call: the mesh routes these elsewhere.
        other @ (Request::ServiceReport
        | Request::Cores
        | Request::HasImage(_)
        | Request::Events { .. }) => Reply::One(Response::Failed(RemoteError::new(
            ErrorKind::Invalid,
            format!("{} is not a task call", other.name()),
        ))),
    }
}
