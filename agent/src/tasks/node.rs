//! One client for "a node" as task operations see it: this node (its
//! supervisor) or a live peer (an RPC call), with the same calls and the
//! same typed errors either way. Placement, the mover, the keeper,
//! dependencies and the API all go through it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mesh_protocol::auth::Caller;
use mesh_protocol::confirm::{self, Stamp};
use mesh_protocol::failover::Verdict;
use mesh_protocol::listing::Page;
use mesh_protocol::rpc::{Request, Response};
use mesh_protocol::{NodeId, TaskId, TaskRecord};
use tracing::{Instrument, debug_span};

use super::TaskError;
use crate::mesh::Mesh;
use crate::supervisor::SupervisorHandle;

/// How long a peer may take to answer an offer or a lookup.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A task's output as it arrives, from whichever node runs it.
pub type Output = BoxStream<'static, Result<Bytes, TaskError>>;

/// A node to ask about tasks.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    at: At,
}

#[derive(Clone)]
enum At {
    /// This node: its supervisor, and the mesh to publish draining.
    Here(SupervisorHandle, Mesh),
    Peer(Mesh, SocketAddr),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Node");
        d.field("id", &self.id);
        if let At::Peer(_, addr) = &self.at {
            d.field("addr", addr);
        }
        d.finish_non_exhaustive()
    }
}

/// A task and the node that reported it.
#[derive(Debug, Clone)]
pub struct Found {
    pub node: Node,
    pub record: TaskRecord,
}

impl Node {
    pub fn here(supervisor: SupervisorHandle, mesh: Mesh) -> Self {
        Self {
            id: mesh.node(),
            at: At::Here(supervisor, mesh),
        }
    }

    pub fn peer(id: NodeId, mesh: Mesh, addr: SocketAddr) -> Self {
        Self {
            id,
            at: At::Peer(mesh, addr),
        }
    }

    pub fn is_here(&self) -> bool {
        matches!(self.at, At::Here(..))
    }

    /// Calls the peer; a `Failed` answer becomes the error it carries.
    async fn ask(
        &self,
        mesh: &Mesh,
        addr: SocketAddr,
        request: Request,
    ) -> Result<Response, TaskError> {
        let span = debug_span!("peer_call", peer = %self.id, call = request.name());
        match mesh
            .call(&self.id, addr, &request, CALL_TIMEOUT)
            .instrument(span)
            .await
        {
            Ok(Response::Failed(error)) => Err(TaskError::There {
                node: self.id.clone(),
                error,
            }),
            Ok(answer) => Ok(answer),
            Err(source) => Err(TaskError::Unreachable {
                node: self.id.clone(),
                source,
            }),
        }
    }

    fn unexpected(&self, call: &'static str, answer: Response) -> TaskError {
        TaskError::Unexpected {
            node: self.id.clone(),
            call,
            answer: format!("{answer:?}"),
        }
    }

    /// Calls the peer and takes what `want` picks out of its answer (it
    /// gives back any answer it does not expect, which becomes the error).
    async fn ask_for<T>(
        &self,
        mesh: &Mesh,
        addr: SocketAddr,
        request: Request,
        want: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<T, TaskError> {
        let call = request.name();
        let answer = self.ask(mesh, addr, request).await?;
        want(answer).map_err(|other| self.unexpected(call, other))
    }

    /// Runs `record` there if its cores are free now; refused otherwise.
    pub async fn offer(&self, record: TaskRecord) -> Result<(), TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.offer(record).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Offer(Box::new(record));
                self.ask_for(mesh, *addr, request, accepted).await
            }
        }
    }

    /// Stores `record` there as the task's keeper's copy.
    pub async fn hold(&self, record: TaskRecord) -> Result<(), TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.hold(record).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Hold(Box::new(record));
                self.ask_for(mesh, *addr, request, |answer| match answer {
                    Response::Kept => Ok(()),
                    other => Err(other),
                })
                .await
            }
        }
    }

    /// As the task's runner, pushes `record` to this node, its keeper.
    pub async fn replicate(&self, record: TaskRecord) -> Result<Verdict, TaskError> {
        match &self.at {
            At::Here(s, mesh) => Ok(s.replicate(record, mesh.node()).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Replicate(Box::new(record));
                self.ask_for(mesh, *addr, request, |answer| match answer {
                    Response::Kept => Ok(Verdict::Keep),
                    Response::Superseded { node, attempt } => {
                        Ok(Verdict::Superseded { node, attempt })
                    }
                    other => Err(other),
                })
                .await
            }
        }
    }

    /// The copy this node keeps of `id`, as its keeper.
    pub async fn copy(&self, id: &TaskId) -> Result<TaskRecord, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.copy(id.clone()).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Copy(id.clone());
                self.ask_for(mesh, *addr, request, one_record).await
            }
        }
    }

    /// What this node holds of `ids`, as runner and as keeper. A peer is
    /// asked in calls of at most `confirm::MAX_IDS` ids (it refuses more),
    /// one after the other.
    pub async fn stamps(&self, ids: Vec<TaskId>) -> Result<Vec<Stamp>, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.stamps(ids).await?),
            At::Peer(mesh, addr) => {
                let mut stamps = Vec::new();
                for chunk in ids.chunks(confirm::MAX_IDS) {
                    let request = Request::Stamps(chunk.to_vec());
                    let answer = self.ask_for(mesh, *addr, request, |answer| match answer {
                        Response::Stamps(stamps) => Ok(stamps),
                        other => Err(other),
                    });
                    stamps.extend(answer.await?);
                }
                Ok(stamps)
            }
        }
    }

    pub async fn get(&self, id: &TaskId) -> Result<TaskRecord, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.get(id.clone()).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Get(id.clone());
                self.ask_for(mesh, *addr, request, one_record).await
            }
        }
    }

    /// After an unanswered offer: the task's record if this node holds it;
    /// if not (`NotFound`), it never takes that offer.
    pub async fn disclaim(&self, id: &TaskId) -> Result<TaskRecord, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.disclaim(id.clone()).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Disclaim(id.clone());
                self.ask_for(mesh, *addr, request, one_record).await
            }
        }
    }

    /// Kills a task for `by`; the node that holds the record checks that
    /// they may.
    pub async fn kill(&self, id: &TaskId, by: &Caller) -> Result<TaskRecord, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.kill(id.clone(), by.clone()).await?),
            At::Peer(mesh, addr) => {
                let request = Request::Kill {
                    id: id.clone(),
                    by: by.clone(),
                };
                self.ask_for(mesh, *addr, request, one_record).await
            }
        }
    }

    /// A page of the tasks this node runs or holds in its queue: ids after
    /// `after`, at most `limit` (a peer's page may hold fewer, to fit a
    /// frame; `more` says whether others follow).
    pub async fn list(&self, after: Option<TaskId>, limit: u32) -> Result<Page, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.list(after, limit as usize).await?),
            At::Peer(mesh, addr) => {
                let request = Request::List { after, limit };
                self.ask_for(mesh, *addr, request, |answer| match answer {
                    Response::Page(page) => Ok(page),
                    other => Err(other),
                })
                .await
            }
        }
    }

    /// Starts (or ends) draining there: no new task starts; with `migrate`
    /// its running tasks stop and run again elsewhere.
    pub async fn drain(&self, on: bool, migrate: bool) -> Result<(), TaskError> {
        match &self.at {
            At::Here(s, mesh) => {
                s.set_draining(on, migrate).await?;
                mesh.set_draining(on).await;
                Ok(())
            }
            At::Peer(mesh, addr) => {
                let request = Request::Drain { on, migrate };
                self.ask_for(mesh, *addr, request, accepted).await
            }
        }
    }

    /// The task's output; with `follow`, until its container ends.
    pub async fn logs(&self, id: &TaskId, follow: bool) -> Result<Output, TaskError> {
        match &self.at {
            At::Here(s, _) => {
                let stream = s.output(id.clone(), follow).await?;
                Ok(stream.map(|c| c.map_err(TaskError::from)).boxed())
            }
            At::Peer(mesh, addr) => {
                let request = Request::Logs {
                    id: id.clone(),
                    follow,
                };
                let stream =
                    mesh.call_stream(&self.id, *addr, &request)
                        .await
                        .map_err(|source| TaskError::Unreachable {
                            node: self.id.clone(),
                            source,
                        })?;
                let node = self.id.clone();
                Ok(stream
                    .map(move |answer| match answer {
                        Ok(Response::LogChunk(bytes)) => Ok(Bytes::from(bytes)),
                        Ok(Response::Failed(error)) => Err(TaskError::There {
                            node: node.clone(),
                            error,
                        }),
                        Ok(other) => Err(TaskError::Unexpected {
                            node: node.clone(),
                            call: "logs",
                            answer: format!("{other:?}"),
                        }),
                        Err(source) => Err(TaskError::Unreachable {
                            node: node.clone(),
                            source,
                        }),
                    })
                    .boxed())
            }
        }
    }
}

/// The answer an offer or a drain expects.
fn accepted(answer: Response) -> Result<(), Response> {
    match answer {
        Response::Accepted => Ok(()),
        other => Err(other),
    }
}

/// The answer a lookup or a kill expects.
fn one_record(answer: Response) -> Result<TaskRecord, Response> {
    match answer {
        Response::Record(r) => Ok(*r),
        other => Err(other),
    }
}
