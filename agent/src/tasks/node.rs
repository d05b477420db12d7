//! One client for "a node" as task operations see it: this node (its
//! supervisor) or a live peer (an RPC call), with the same calls and the
//! same typed errors either way. Placement, the mover, the keeper,
//! dependencies and the API all go through it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mesh_protocol::failover::Verdict;
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
            .call(addr, &request, CALL_TIMEOUT)
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

    /// Runs `record` there if its cores are free now; refused otherwise.
    pub async fn offer(&self, record: TaskRecord) -> Result<(), TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.offer(record).await?),
            At::Peer(mesh, addr) => {
                match self
                    .ask(mesh, *addr, Request::Offer(Box::new(record)))
                    .await?
                {
                    Response::Accepted => Ok(()),
                    other => Err(self.unexpected("offer", other)),
                }
            }
        }
    }

    /// Stores `record` there as the task's keeper's copy.
    pub async fn hold(&self, record: TaskRecord) -> Result<(), TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.hold(record).await?),
            At::Peer(mesh, addr) => {
                match self
                    .ask(mesh, *addr, Request::Hold(Box::new(record)))
                    .await?
                {
                    Response::Kept => Ok(()),
                    other => Err(self.unexpected("hold", other)),
                }
            }
        }
    }

    /// As the task's runner, pushes `record` to this node, its keeper.
    pub async fn replicate(&self, record: TaskRecord) -> Result<Verdict, TaskError> {
        match &self.at {
            At::Here(s, mesh) => Ok(s.replicate(record, mesh.node()).await?),
            At::Peer(mesh, addr) => {
                match self
                    .ask(mesh, *addr, Request::Replicate(Box::new(record)))
                    .await?
                {
                    Response::Kept => Ok(Verdict::Keep),
                    Response::Superseded { node, attempt } => {
                        Ok(Verdict::Superseded { node, attempt })
                    }
                    other => Err(self.unexpected("replicate", other)),
                }
            }
        }
    }

    pub async fn get(&self, id: &TaskId) -> Result<TaskRecord, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.get(id.clone()).await?),
            At::Peer(mesh, addr) => match self.ask(mesh, *addr, Request::Get(id.clone())).await? {
                Response::Record(r) => Ok(*r),
                other => Err(self.unexpected("get", other)),
            },
        }
    }

    pub async fn kill(&self, id: &TaskId) -> Result<TaskRecord, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.kill(id.clone()).await?),
            At::Peer(mesh, addr) => match self.ask(mesh, *addr, Request::Kill(id.clone())).await? {
                Response::Record(r) => Ok(*r),
                other => Err(self.unexpected("kill", other)),
            },
        }
    }

    /// The tasks this node runs or holds in its queue.
    pub async fn list(&self) -> Result<Vec<TaskRecord>, TaskError> {
        match &self.at {
            At::Here(s, _) => Ok(s.list().await?),
            At::Peer(mesh, addr) => match self.ask(mesh, *addr, Request::List).await? {
                Response::Records(r) => Ok(r),
                other => Err(self.unexpected("list", other)),
            },
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
                match self
                    .ask(mesh, *addr, Request::Drain { on, migrate })
                    .await?
                {
                    Response::Accepted => Ok(()),
                    other => Err(self.unexpected("drain", other)),
                }
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
                let stream = mesh.call_stream(*addr, &request).await.map_err(|source| {
                    TaskError::Unreachable {
                        node: self.id.clone(),
                        source,
                    }
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
