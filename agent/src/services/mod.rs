//! Services: every agent listens for every service's clients and serves
//! each connection with a container somewhere in the mesh.
//! - `owner`: the services task; owns the definitions (`registry`, durable,
//!   merged from gossip, read and validated by `gossiped`) and the
//!   listeners (`listeners`), and answers the API (through `Control`, the
//!   `ServiceControl` it hands out);
//! - `front`: routing and queueing of the connections listeners accept;
//! - `backend`: the task that owns this node's service containers
//!   (per-connection, warm, pool), deciding through the pure `plan`;
//! - `prepull`: the task that pulls every live service's image here ahead
//!   of its first connection, and tells the owner, front and reports how
//!   each stands;
//! - `tunnel`: connections forwarded between agents over QUIC;
//! - `pump`, `stats`: moving and counting bytes, counters;
//! - `ports`: what services ask of the mesh and of the cores, as narrow
//!   traits (fakes in `tests`).

pub mod admission;
pub mod backend;
pub mod cores;
mod ends;
pub mod front;
mod gossiped;
pub mod listeners;
mod owner;
pub mod plan;
pub mod port_range;
pub mod ports;
pub mod prepull;
pub mod pump;
pub mod registry;
pub mod stats;
pub mod tunnel;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use mesh_protocol::api::{ServiceNodeStats, ServiceReport};
use mesh_protocol::auth::Caller;
use mesh_protocol::service::{ServiceDef, ServiceRequest};
use mesh_protocol::{NodeId, ServiceName};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::images::Pulls;
use crate::mesh::Mesh;
use crate::runtime::ContainerRuntime;
use crate::supervisor::SupervisorHandle;
use backend::{Backend, BackendConfig};
use front::Front;
use listeners::Listeners;
use owner::{Cmd, Owner, Published};
use ports::{Cores, MeshPort};
use registry::{Registry, RegistryError};
use stats::Stats;

/// Why a service request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceApiError {
    #[error(transparent)]
    Invalid(#[from] mesh_protocol::service::ServiceError),
    #[error(
        "listen port {port} is not allowed: this node serves services only on ports {allowed} (its --service-ports)"
    )]
    PortNotAllowed { port: u16, allowed: String },
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    NotFound(#[from] UnknownService),
    #[error(transparent)]
    Store(#[from] RegistryError),
    #[error("the agent is stopping")]
    Stopping,
    /// The API user may not remove this service (not its owner).
    #[error("{0}")]
    Forbidden(String),
}

/// Why a new service clashes with what exists.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error("service {name} exists (listening on {listen}); `meshctl service rm {name}` first")]
    Exists { name: ServiceName, listen: u16 },
    #[error("port {port} is already service {by}'s")]
    PortTaken { port: u16, by: ServiceName },
    #[error(transparent)]
    CannotListen(listeners::ListenError),
}

/// A service name that names no service.
#[derive(Debug, thiserror::Error)]
pub enum UnknownService {
    #[error("no such service: {0}")]
    Invalid(#[from] mesh_protocol::ids::IdError),
    #[error("no service {0}")]
    Missing(ServiceName),
}

/// What the API asks of services (the runtime's type erased).
pub trait ServiceControl: Send + Sync + std::fmt::Debug {
    /// Creates a service owned by `by`.
    fn create(
        &self,
        request: ServiceRequest,
        by: Caller,
    ) -> BoxFuture<'_, Result<ServiceDef, ServiceApiError>>;
    /// Removes a service, if `by` owns it or is an admin.
    fn remove<'a>(
        &'a self,
        name: &'a str,
        by: Caller,
    ) -> BoxFuture<'a, Result<ServiceDef, ServiceApiError>>;
    /// Live (not removed) definitions.
    fn defs(&self) -> Vec<ServiceDef>;
    /// This node's figures and open connections.
    fn report(&self) -> BoxFuture<'_, ServiceReport>;
    /// This node's connection setup times and bytes forwarded, for
    /// /metrics (a handle sharing the counts).
    fn traffic(&self) -> crate::metrics::ServiceTraffic;
    /// This node's service containers by the holder ids of their cores.
    fn holders(&self) -> Vec<mesh_protocol::cores::ServiceHolder>;
}

pub type ServicesHandle = Arc<dyn ServiceControl>;

/// The API's handle to the services task.
struct Control {
    tx: mpsc::Sender<Cmd>,
    published: watch::Receiver<Arc<Published>>,
    backend: Backend,
    stats: Stats,
    images: prepull::ImagesView,
    node: NodeId,
}

impl Control {
    async fn ask(
        &self,
        cmd: impl FnOnce(owner::Answer) -> Cmd,
    ) -> Result<ServiceDef, ServiceApiError> {
        let (answer, reply) = oneshot::channel();
        self.tx
            .send(cmd(answer))
            .await
            .map_err(|_| ServiceApiError::Stopping)?;
        reply.await.map_err(|_| ServiceApiError::Stopping)?
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceControl").finish_non_exhaustive()
    }
}

impl ServiceControl for Control {
    fn create(
        &self,
        request: ServiceRequest,
        by: Caller,
    ) -> BoxFuture<'_, Result<ServiceDef, ServiceApiError>> {
        Box::pin(self.ask(|answer| Cmd::Create(Box::new(request), by, answer)))
    }

    fn remove<'a>(
        &'a self,
        name: &'a str,
        by: Caller,
    ) -> BoxFuture<'a, Result<ServiceDef, ServiceApiError>> {
        Box::pin(self.ask(|answer| Cmd::Remove(name.to_owned(), by, answer)))
    }

    fn defs(&self) -> Vec<ServiceDef> {
        self.published.borrow().defs.clone()
    }

    fn report(&self) -> BoxFuture<'_, ServiceReport> {
        Box::pin(self.make_report())
    }

    fn traffic(&self) -> crate::metrics::ServiceTraffic {
        self.stats.traffic().clone()
    }

    fn holders(&self) -> Vec<mesh_protocol::cores::ServiceHolder> {
        self.backend.holders()
    }
}

impl Control {
    async fn make_report(&self) -> ServiceReport {
        let figures = self.stats.snapshot().await;
        let published = self.published.borrow().clone();
        let loads = self.backend.loads();
        let images = self.images.borrow().clone();
        let stats = published
            .defs
            .iter()
            .map(|d| {
                let (listening, listen_error) = published
                    .listening
                    .get(d.name())
                    .cloned()
                    .unwrap_or_default();
                ServiceNodeStats {
                    node: self.node.clone(),
                    service: d.name().clone(),
                    listening,
                    listen_error,
                    load: loads.get(d.name().as_str()).cloned().unwrap_or_default(),
                    counters: figures.counters(d.name()),
                    image: images.statuses.get(d.name()).cloned(),
                }
            })
            .collect();
        ServiceReport {
            stats,
            connections: figures.connections(&self.node),
        }
    }
}

/// What `start` needs from the agent's config.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    pub backend: BackendConfig,
    pub bind: IpAddr,
    /// Ports services may listen on here (the agent's own taken out).
    pub ports: port_range::ServicePorts,
    /// Caps on the client connections this agent holds open.
    pub limits: admission::ConnLimits,
    pub every: Duration,
    pub clock: Clock,
    /// How `services.json` is written.
    pub disk: crate::disk::Disk,
    /// Where services' changes are told (`meshctl events`); the
    /// containers' are told through `backend.events`.
    pub events: crate::events::EventLog,
}

/// Starts services: removes containers a previous run left, serves the
/// stored definitions, and runs the services task until `shutdown` (then it
/// stops listening and removes every service container of this node).
pub async fn start<R: ContainerRuntime>(
    cfg: ServicesConfig,
    data_dir: &Path,
    pulls: Pulls<R>,
    supervisor: SupervisorHandle,
    mesh: Mesh,
    shutdown: CancellationToken,
) -> Result<(ServicesHandle, tokio::task::JoinHandle<()>), RegistryError> {
    let cores_of = supervisor.clone();
    let (control, here, join) =
        run(cfg, data_dir, pulls, supervisor, mesh.clone(), shutdown).await?;
    let tunnels = Arc::new(move |caller: Option<NodeId>, send, recv| {
        let caller = caller.map(|c| c.to_string());
        Box::pin(tunnel::serve(here.clone(), caller, send, recv)) as BoxFuture<'static, ()>
    });
    let reporter = control.clone();
    mesh.handle_tunnels(tunnels);
    mesh.handle_calls(
        mesh_protocol::rpc::Topic::Services,
        Arc::new(move |_, request| {
            let reporter = reporter.clone();
            let cores_of = cores_of.clone();
            Box::pin(async move {
                let answer = match request {
                    mesh_protocol::rpc::Request::ServiceReport => {
                        mesh_protocol::rpc::Response::ServiceReport(Box::new(
                            reporter.report().await,
                        ))
                    }
                    mesh_protocol::rpc::Request::Cores => {
                        match cores::here(&cores_of, reporter.as_ref()).await {
                            Ok(c) => mesh_protocol::rpc::Response::Cores(Box::new(c)),
                            Err(e) => mesh_protocol::rpc::Response::Failed(
                                mesh_protocol::rpc::RemoteError::new(
                                    mesh_protocol::rpc::ErrorKind::Unavailable,
                                    e.to_string(),
                                ),
                            ),
                        }
                    }
                    other => {
                        mesh_protocol::rpc::Response::Failed(mesh_protocol::rpc::RemoteError::new(
                            mesh_protocol::rpc::ErrorKind::Invalid,
                            format!("{} is not a service call", other.name()),
                        ))
                    }
                };
                crate::mesh::handlers::Reply::One(answer)
            })
        }),
    );
    Ok((control, join))
}

/// `start` over any mesh and cores; the caller serves tunnels and reports.
async fn run<R: ContainerRuntime, C: Cores, M: MeshPort>(
    cfg: ServicesConfig,
    data_dir: &Path,
    pulls: Pulls<R>,
    cores: C,
    mesh: M,
    shutdown: CancellationToken,
) -> Result<(ServicesHandle, tunnel::Here, tokio::task::JoinHandle<()>), RegistryError> {
    let registry = Registry::open(data_dir, cfg.disk.clone())?;
    let stats_stop = CancellationToken::new();
    let (stats, stats_task) = Stats::spawn(stats_stop.clone());
    let (prepull, prepull_task) = prepull::PrePull::spawn(pulls.clone(), cfg.clock.clone());
    let images = prepull.view();
    let (backend, backend_task) =
        Backend::spawn(cfg.backend, pulls, cores, stats.clone(), cfg.clock.now_ms());
    let front = Front::new(
        mesh.clone(),
        backend.clone(),
        stats.clone(),
        images.clone(),
        admission::Admission::new(cfg.limits),
        cfg.events.clone(),
    );
    let (publish, published) = watch::channel(Arc::new(Published::default()));
    let node = mesh.node();
    let mut owner = Owner {
        registry,
        listeners: Listeners::new(front.clone(), cfg.bind, cfg.ports),
        backend: backend.clone(),
        front,
        mesh,
        publish,
        prepull,
        images: images.clone(),
        gossiped_images: Default::default(),
        stale_removed: false,
        clock: cfg.clock,
        warned: Default::default(),
        events: cfg.events.clone(),
    };
    owner.remove_stale().await;
    owner.apply(&owner.registry.all());
    owner.publish_local();
    let (tx, rx) = mpsc::channel(64);
    let traffic = stats.traffic().clone();
    let control: ServicesHandle = Arc::new(Control {
        tx,
        published,
        backend: backend.clone(),
        stats,
        images: images.clone(),
        node,
    });
    let here = tunnel::Here {
        backend: backend.clone(),
        images,
        traffic,
    };
    let join = tokio::spawn(async move {
        // The owner holds the pre-pull's handle: its task ends with it.
        owner.run(rx, cfg.every, shutdown, backend_task).await;
        let _ = prepull_task.await;
        // Connections and containers are gone: nothing more to count.
        stats_stop.cancel();
        let _ = stats_task.await;
    });
    Ok((control, here, join))
}

#[cfg(test)]
mod tests;
