//! Services: every agent listens for every service's clients and serves
//! each connection with a container somewhere in the mesh.
//! - `registry`: the definitions, durable, merged from gossip;
//! - `front`: listeners, routing and queueing of client connections;
//! - `backend`: this node's service containers (per-connection, warm, pool);
//! - `tunnel`: connections forwarded between agents over QUIC;
//! - `pump`, `stats`: moving and counting bytes, counters.
//!
//! - `plan`: the pure decisions about this node's containers, which the
//!   backend's task takes its orders from.
//!
//! A loop (in `start`) merges definitions from the gossip every interval,
//! starts or stops listeners, sizes pools and warm pools, and publishes this
//! node's definitions and figures.

pub mod backend;
pub mod front;
pub mod plan;
pub mod pump;
pub mod registry;
pub mod stats;
pub mod tunnel;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_protocol::ServiceName;
use mesh_protocol::api::{ServiceNodeStats, ServiceReport};
use mesh_protocol::service::choice::pool_share;
use mesh_protocol::service::{Mode, ServiceDef, ServiceRequest, ServiceSpec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::mesh::{Mesh, candidates_of};
use crate::runtime::ContainerRuntime;
use crate::supervisor::SupervisorHandle;
use backend::{Backend, BackendConfig};
use front::Front;
use registry::{Registry, RegistryError};
use stats::Stats;

/// Why a service request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceApiError {
    #[error(transparent)]
    Invalid(#[from] mesh_protocol::service::ServiceError),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    NotFound(#[from] UnknownService),
    #[error(transparent)]
    Store(#[from] RegistryError),
}

/// Why a new service clashes with what exists.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error("service {name} exists (listening on {listen}); `meshctl service rm {name}` first")]
    Exists { name: ServiceName, listen: u16 },
    #[error("port {port} is already service {by}'s")]
    PortTaken { port: u16, by: ServiceName },
    #[error("cannot listen on port {port}: {source}")]
    CannotListen { port: u16, source: std::io::Error },
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
    fn create(&self, request: ServiceRequest) -> Result<ServiceDef, ServiceApiError>;
    fn remove(&self, name: &str) -> Result<ServiceDef, ServiceApiError>;
    /// Live (not removed) definitions.
    fn defs(&self) -> Vec<ServiceDef>;
    /// This node's figures and open connections.
    fn report(&self) -> ServiceReport;
}

pub type ServicesHandle = Arc<dyn ServiceControl>;

/// How long open connections may take to end at shutdown.
const CONNECTIONS_DRAIN: Duration = Duration::from_secs(2);

struct Services {
    registry: Registry,
    backend: Backend,
    front: Arc<Front>,
    mesh: Mesh,
    stats: Stats,
    /// Asks the loop to publish now (a definition changed here).
    publish_now: tokio::sync::Notify,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Services {
    /// Starts serving, stops serving or updates what changed.
    fn apply(&self, changed: &[ServiceDef]) {
        for def in changed {
            if def.removed {
                info!(service = %def.name(), "service removed; open connections finish");
                self.front.stop(def.name());
                self.backend.remove(def.name());
            } else {
                self.backend.define(def.spec.clone());
                // Errors are logged and shown in reports.
                let _ = self.front.listen(&def.spec);
            }
        }
    }

    async fn publish(&self) {
        self.mesh
            .publish_services(&self.registry.all(), &self.backend.loads())
            .await;
    }

    /// Removes the containers of earlier runs unless `done` says they are
    /// gone already (tried at start, and every round until Docker answers).
    async fn remove_stale(&self, done: &mut bool) {
        if *done {
            return;
        }
        match self.backend.remove_stale().await {
            Ok(n) => {
                *done = true;
                if n > 0 {
                    info!(count = n, "removed service containers a previous run left");
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot remove the service containers of a previous run yet")
            }
        }
    }

    async fn round(&self, stale_removed: &mut bool) {
        self.remove_stale(stale_removed).await;
        // A listener that could not bind (port taken) is tried again.
        for d in self.registry.all().iter().filter(|d| !d.removed) {
            let _ = self.front.listen(&d.spec);
        }
        match self.registry.merge(self.mesh.service_defs().await) {
            Ok(changed) => self.apply(&changed),
            Err(e) => warn!(error = %e, "cannot store service definitions"),
        }
        let view = candidates_of(&self.mesh.peers().await);
        let me = self.mesh.node();
        let wants: BTreeMap<ServiceName, Vec<u32>> = self
            .registry
            .all()
            .into_iter()
            .filter(|d| !d.removed && d.spec.mode == Mode::Pool)
            .map(|d| (d.spec.name.clone(), pool_share(&d.spec, &view, &me)))
            .collect();
        self.backend.tick(wants);
        self.publish().await;
    }
}

struct Control(Arc<Services>);

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceControl").finish_non_exhaustive()
    }
}

impl ServiceControl for Control {
    fn create(&self, request: ServiceRequest) -> Result<ServiceDef, ServiceApiError> {
        let s = &self.0;
        let spec = ServiceSpec::try_from(request)?;
        let live = s.registry.all();
        if let Some(old) = live.iter().find(|d| d.name() == &spec.name && !d.removed) {
            return Err(Conflict::Exists {
                name: spec.name,
                listen: old.spec.listen,
            }
            .into());
        }
        if let Some(other) = live
            .iter()
            .find(|d| !d.removed && d.spec.listen == spec.listen)
        {
            return Err(Conflict::PortTaken {
                port: spec.listen,
                by: other.name().clone(),
            }
            .into());
        }
        let revision = live
            .iter()
            .find(|d| d.name() == &spec.name)
            .map_or(0, |d| d.revision + 1)
            .max(now_ms());
        let def = ServiceDef {
            spec,
            revision,
            removed: false,
        };
        // Listen here first: a port this node cannot bind is refused before
        // the definition spreads.
        s.backend.define(def.spec.clone());
        if let Err(source) = s.front.listen(&def.spec) {
            s.backend.remove(def.name());
            return Err(Conflict::CannotListen {
                port: def.spec.listen,
                source,
            }
            .into());
        }
        let changed = s.registry.merge(vec![def.clone()])?;
        s.apply(&changed);
        s.publish_now.notify_one();
        info!(service = %def.name(), listen = def.spec.listen, mode = %def.spec.mode, "service created");
        Ok(def)
    }

    fn remove(&self, name: &str) -> Result<ServiceDef, ServiceApiError> {
        let s = &self.0;
        let name = ServiceName::new(name).map_err(UnknownService::from)?;
        let old = s
            .registry
            .get(&name)
            .ok_or_else(|| UnknownService::Missing(name.clone()))?;
        let tombstone = ServiceDef {
            revision: (old.revision + 1).max(now_ms()),
            removed: true,
            spec: old.spec,
        };
        let changed = s.registry.merge(vec![tombstone.clone()])?;
        s.apply(&changed);
        s.publish_now.notify_one();
        Ok(tombstone)
    }

    fn defs(&self) -> Vec<ServiceDef> {
        self.0
            .registry
            .all()
            .into_iter()
            .filter(|d| !d.removed)
            .collect()
    }

    fn report(&self) -> ServiceReport {
        let s = &self.0;
        let node = s.mesh.node();
        let loads = s.backend.loads();
        let stats = self
            .defs()
            .into_iter()
            .map(|d| {
                let (listening, listen_error) = s.front.listen_state(d.name());
                ServiceNodeStats {
                    node: node.clone(),
                    service: d.name().clone(),
                    listening,
                    listen_error,
                    load: loads.get(d.name().as_str()).cloned().unwrap_or_default(),
                    counters: s.stats.counters(d.name()),
                }
            })
            .collect();
        ServiceReport {
            stats,
            connections: s.stats.connections(&node),
        }
    }
}

/// What `start` needs from the agent's config.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    pub backend: BackendConfig,
    pub bind: IpAddr,
    pub every: Duration,
}

/// Starts services: removes containers a previous run left, serves the
/// stored definitions, and runs the loop until `shutdown` (then stops
/// listening and removes every service container of this node).
pub async fn start<R: ContainerRuntime>(
    cfg: ServicesConfig,
    data_dir: &Path,
    runtime: Arc<R>,
    supervisor: SupervisorHandle,
    mesh: Mesh,
    shutdown: CancellationToken,
) -> Result<(ServicesHandle, tokio::task::JoinHandle<()>), RegistryError> {
    let registry = Registry::open(data_dir)?;
    let stats = Stats::default();
    let (backend, backend_task) = Backend::spawn(cfg.backend, runtime, supervisor, stats.clone());
    let front = Front::new(mesh.clone(), backend.clone(), stats.clone(), cfg.bind);
    let services = Arc::new(Services {
        registry,
        backend: backend.clone(),
        front,
        mesh: mesh.clone(),
        stats,
        publish_now: tokio::sync::Notify::new(),
    });
    let mut stale_removed = false;
    services.remove_stale(&mut stale_removed).await;
    services.apply(&services.registry.all());
    let control: ServicesHandle = Arc::new(Control(services.clone()));
    let tunnels = {
        let backend = backend.clone();
        Arc::new(move |caller, send, recv| {
            Box::pin(tunnel::serve(backend.clone(), caller, send, recv))
                as futures_util::future::BoxFuture<'static, ()>
        })
    };
    let reporter = control.clone();
    mesh.serve_services(tunnels, Arc::new(move || reporter.report()));
    let join = tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => services.round(&mut stale_removed).await,
                _ = services.publish_now.notified() => services.publish().await,
            }
        }
        services.front.stop_all();
        match services.backend.shutdown().await {
            Ok(n) => info!(count = n, "removed this node's service containers"),
            Err(e) => {
                warn!(error = %e, "cannot remove this node's service containers; the next start (or meshd --cleanup) removes them")
            }
        }
        // Their containers are gone: local connections have ended.
        services.front.drain(CONNECTIONS_DRAIN).await;
        if let Err(e) = backend_task.await {
            warn!(error = %e, "the service containers' task failed");
        }
    });
    Ok((control, join))
}
