//! This node's service containers: per-connection containers (with the warm
//! pool of started, connected ones) and pool instances. One task (`actor`)
//! owns their state and takes its decisions through the pure `plan`; this
//! module is the cheap handle to it. Every container holds its cores
//! through the supervisor's allocator, carries our labels, and is removed
//! when its connection ends, its service goes, or the agent stops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::ServiceSpec;
use mesh_protocol::{NodeId, ServiceName};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};

mod actor;
mod error;
mod start;

pub use error::{AcquireError, ReadyError};

use super::stats::Stats;
use crate::images::Pulls;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::services::plan::Started;
use crate::services::ports::Cores;
use actor::{Actor, Cmd, Granted, Snapshot};

/// How long a pool instance may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings the backend needs from the agent's config.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub node: NodeId,
    pub cluster: String,
    pub network: Option<String>,
    /// Where containers' starts, failures and retirements are told.
    pub events: crate::events::EventLog,
}

/// Handle to this node's service containers; cheap to clone.
#[derive(Clone)]
pub struct Backend {
    tx: mpsc::UnboundedSender<Cmd>,
    /// What the actor published after its last message.
    view: watch::Receiver<Arc<Snapshot>>,
    node: NodeId,
    /// Wakes connections waiting for room when a container frees up.
    pub released: Arc<Notify>,
}

impl Backend {
    /// Starts the task that owns the containers' state (`started_ms`: when
    /// this run of the agent started, which names its containers' run). It
    /// runs until
    /// `shutdown` (or until every handle is gone).
    pub fn spawn<R: ContainerRuntime, C: Cores>(
        cfg: BackendConfig,
        pulls: Pulls<R>,
        cores: C,
        stats: Stats,
        started_ms: u64,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (publish, view) = watch::channel(Arc::new(Snapshot::default()));
        let released = Arc::new(Notify::new());
        let node = cfg.node.clone();
        let fx = start::Effects::new(cfg, pulls, cores, stats, started_ms);
        let join = tokio::spawn(Actor::new(fx, rx, publish, released.clone()).run());
        let handle = Self {
            tx,
            view,
            node,
            released,
        };
        (handle, join)
    }

    fn send(&self, cmd: Cmd) {
        // After shutdown nothing is served: commands go nowhere and
        // questions get `Stopping`.
        let _ = self.tx.send(cmd);
    }

    /// Serves (or updates) a service here. A changed definition retires
    /// the containers of the old one (busy ones when their connections end).
    pub fn define(&self, spec: ServiceSpec) {
        self.send(Cmd::Define(Arc::new(spec)));
    }

    /// Stops serving a service: warm containers and idle instances go now,
    /// busy ones when their connections end.
    pub fn remove(&self, name: &ServiceName) {
        self.send(Cmd::Remove(name.clone()));
    }

    /// Brings pool instances to `pool_wants` (cores of each) and
    /// per-connection warm pools to `--warm` (none for the services in
    /// `no_image`, whose image this node failed to pull); lets removed
    /// services go.
    pub fn tick(
        &self,
        pool_wants: BTreeMap<ServiceName, Vec<u32>>,
        no_image: BTreeSet<ServiceName>,
    ) {
        self.send(Cmd::Tick(pool_wants, no_image));
    }

    /// This node's figures for one service.
    pub fn load(&self, name: &ServiceName) -> Option<ServiceLoad> {
        self.view.borrow().loads.get(name).cloned()
    }

    /// Per service, this node's figures (for gossip and reports).
    pub fn loads(&self) -> BTreeMap<String, ServiceLoad> {
        self.view
            .borrow()
            .loads
            .iter()
            .map(|(n, l)| (n.to_string(), l.clone()))
            .collect()
    }

    /// This node's service containers by holder id (for `Cores`).
    pub fn holders(&self) -> Vec<mesh_protocol::cores::ServiceHolder> {
        self.view.borrow().holders.clone()
    }

    /// Counts a connection waiting here (accepted by this node) until the
    /// returned guard drops; `None` when the service's queue is full.
    pub async fn enqueue(&self, name: &ServiceName) -> Option<QueueGuard> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Enqueue(name.clone(), reply));
        answer.await.ok()?.then(|| QueueGuard {
            tx: self.tx.clone(),
            name: name.clone(),
        })
    }

    /// A container for one connection, connected.
    pub async fn acquire(&self, name: &ServiceName) -> Result<Lease, AcquireError> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Acquire(name.clone(), reply));
        let granted = answer.await.map_err(|_| AcquireError::Stopping)??;
        match granted {
            Granted::Connected(started, stream) => Ok(self.lease(name, started, stream)),
            Granted::Instance(started) => {
                let release = self.release_guard(name, &started);
                let connected =
                    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(started.addr)).await;
                let cause = match connected {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(Lease {
                            stream,
                            container: started.name,
                            _release: release,
                        });
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
                };
                Err(AcquireError::InstanceRefused {
                    service: name.clone(),
                    container: started.name,
                    cause,
                })
            }
        }
    }

    fn lease(&self, name: &ServiceName, started: Started, stream: TcpStream) -> Lease {
        Lease {
            _release: self.release_guard(name, &started),
            stream,
            container: started.name,
        }
    }

    fn release_guard(&self, name: &ServiceName, started: &Started) -> Release {
        Release {
            tx: self.tx.clone(),
            name: name.clone(),
            id: started.id.clone(),
        }
    }

    /// Removes the service containers earlier runs of this agent left;
    /// returns how many.
    pub async fn remove_stale(&self) -> Result<usize, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::RemoveStale(reply));
        answer.await.unwrap_or(Ok(0))
    }

    /// Stops: lets the containers' jobs finish (within a deadline), then
    /// removes every service container of this node. Returns how many.
    pub async fn shutdown(&self) -> Result<usize, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Shutdown(reply));
        answer.await.unwrap_or(Ok(0))
    }
}

/// Tells the backend a connection to a container ended, when dropped.
struct Release {
    tx: mpsc::UnboundedSender<Cmd>,
    name: ServiceName,
    id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Release(
            self.name.clone(),
            std::mem::take(&mut self.id),
        ));
    }
}

/// A connection's container: released (and, per-connection, removed) when
/// dropped.
pub struct Lease {
    pub stream: TcpStream,
    pub container: String,
    _release: Release,
}

/// A connection counted as waiting until dropped.
pub struct QueueGuard {
    tx: mpsc::UnboundedSender<Cmd>,
    name: ServiceName,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Dequeue(self.name.clone()));
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for QueueGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueGuard")
            .field("service", &self.name)
            .finish()
    }
}
