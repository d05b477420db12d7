//! Putting the parts together: topology, store, runtime, supervisor and the
//! API server, with an explicit shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_protocol::{NodeId, labels};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Ids;
use crate::config::Config;
use crate::images::{ImageGc, ImageNotes, LedgerFile, NamedImages, Pulls, RegistryAuth};
use crate::mesh::{Mesh, MeshError, topology_summary};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::store::{Store, StoreError};
use crate::supervisor::{self, SupervisorConfig, SupervisorHandle};
use crate::tasks::Tasks;
use crate::topology::{self, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Boxed, as the next: a store's error is large, and every `Result`
    /// of the agent carries this type.
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Supervisor(Box<supervisor::SpawnError>),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen for the API on {addr}: {source} (pick another with --api)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Services(#[from] crate::services::registry::RegistryError),
    #[error(transparent)]
    RegistryAuth(#[from] crate::images::AuthError),
    #[error("API server failed: {0}")]
    Serve(std::io::Error),
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        AgentError::Store(Box::new(e))
    }
}

impl From<supervisor::SpawnError> for AgentError {
    fn from(e: supervisor::SpawnError) -> Self {
        AgentError::Supervisor(Box::new(e))
    }
}

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Where the API actually listens (useful with port 0).
    pub api_addr: SocketAddr,
    pub supervisor: SupervisorHandle,
    pub mesh: Mesh,
    pub tasks: Tasks,
    pub services: crate::services::ServicesHandle,
    server: JoinHandle<std::io::Result<()>>,
    services_loop: JoinHandle<()>,
    actor: JoinHandle<()>,
    mesh_loop: JoinHandle<Result<(), MeshError>>,
    tasks_loop: JoinHandle<()>,
    images_loop: JoinHandle<()>,
    publish_loop: JoinHandle<()>,
}

impl RunningAgent {
    /// Waits until shutdown completes (a shutdown the mesh started because
    /// gossip stopped is an error).
    pub async fn wait(self) -> Result<(), AgentError> {
        self.server.await?.map_err(AgentError::Serve)?;
        self.tasks_loop.await?;
        self.publish_loop.await?;
        self.services_loop.await?;
        self.actor.await?;
        self.mesh_loop.await??;
        self.images_loop.await?;
        Ok(())
    }
}

/// Starts an agent on the local Docker engine.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    let runtime = Arc::new(DockerRuntime::at(config.docker_host.as_deref())?);
    start_with_runtime(config, runtime, shutdown).await
}

/// Starts an agent on any runtime (tests use the in-memory one).
pub async fn start_with_runtime<R: ContainerRuntime>(
    config: Config,
    runtime: Arc<R>,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    let synthetic = config.topology.clone();
    let topology =
        tokio::task::spawn_blocking(move || topology::load(synthetic.as_deref())).await??;
    info!(node = %config.node_id, topology = %topology.model.summary(), "topology loaded");
    if let mesh_protocol::topology::HostMapping::RoundRobin { cpus, mems } = &topology.mapping {
        warn!(
            host_cpus = ?cpus, host_mems = ?mems,
            "synthetic topology: bookkeeping follows it; containers are pinned round-robin onto the host's real CPUs and NUMA nodes"
        );
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let api_tls = config
        .api_tls
        .then(|| crate::mesh::tls::api_server_config(&config.mesh.tls))
        .transpose()
        .map_err(MeshError::from)?;
    let store = Store::open_on(&config.data_dir, config.disk.clone())?;
    let auth = match &config.registry_auth {
        Some(path) => {
            let auth = RegistryAuth::load(path)?;
            info!(registries = ?auth.registries(), "registry credentials loaded");
            auth
        }
        None => RegistryAuth::default(),
    };
    let (notes, note_inbox) = ImageNotes::channel();
    let pulls = Pulls::new(runtime.clone(), auth)
        .with_notes(notes)
        .with_source(config.image_source);
    let service_pulls = pulls.clone();
    let shared_pulls = pulls.clone();
    let published_pulls = pulls.clone();
    let pull_counts = pulls.counts();
    let listener = TcpListener::bind(config.api)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.api,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: config.api,
        source,
    })?;
    let clock = config.clock.clone();
    let summary = topology_summary(&topology.model);
    let events = crate::events::EventLog::new(config.node_id.clone(), clock.clone());
    let sup_config = SupervisorConfig {
        node: config.node_id.clone(),
        cluster: config.mesh.cluster_id.clone(),
        topology,
        max_queue: config.max_queue,
        network: config.network.clone(),
        log_dir: config.data_dir.join("logs"),
        ping_interval: config.ping_interval,
        clock: clock.clone(),
        retention: config.retention,
        prune_every: config.prune_every,
        max_log_bytes: config.max_log_bytes,
        disk: config.disk.clone(),
        audit_log: config.audit_log.clone(),
        events: events.clone(),
    };
    let (supervisor, actor) =
        supervisor::spawn(sup_config, runtime.clone(), pulls, store, shutdown.clone())?;
    let (mesh, mesh_loop) = Mesh::start(
        &config.mesh,
        &config.node_id,
        api_addr,
        summary,
        &clock,
        shutdown.clone(),
    )
    .await?;
    crate::images::serve::register(&mesh, shared_pulls.clone());
    crate::events::serve::register(&mesh, events.clone());
    tokio::spawn(crate::events::peers::run(
        events.clone(),
        mesh.clone(),
        config.mesh.gossip_interval,
        shutdown.clone(),
    ));
    shared_pulls.share_through(Arc::new(crate::images::MeshPeers(mesh.clone())));
    let publish_loop = tokio::spawn(crate::images::publish::run(
        published_pulls,
        mesh.clone(),
        shutdown.clone(),
    ));
    let (tasks, tasks_loop) = crate::tasks::start(
        supervisor.clone(),
        mesh.clone(),
        Ids::new(clock, config.seed),
        events.clone(),
        crate::tasks::Timing {
            every: config.mesh.gossip_interval,
            fence_after: config.mesh.fence_after,
        },
        shutdown.clone(),
    );
    let (services, services_loop) = crate::services::start(
        crate::services::ServicesConfig {
            backend: crate::services::backend::BackendConfig {
                node: config.node_id.clone(),
                cluster: config.mesh.cluster_id.clone(),
                network: config.network.clone(),
                events: events.clone(),
            },
            bind: config.service_bind,
            // The API's TCP port and the mesh's UDP port are the agent's.
            ports: config.service_ports.clone().without([
                api_addr.port(),
                mesh.local_addr().map_or(0, |a| a.port()),
                config.mesh.bind.port(),
            ]),
            limits: config.conn_limits,
            every: config.mesh.gossip_interval,
            clock: config.clock.clone(),
            disk: config.disk.clone(),
            events: events.clone(),
        },
        &config.data_dir,
        service_pulls,
        supervisor.clone(),
        mesh.clone(),
        shutdown.clone(),
    )
    .await?;
    let token_file = config.api_tokens.clone().map(|tokens| {
        Arc::new(match config.api_tokens_file.clone() {
            Some(path) => crate::api::tokens::TokenFile::from_file(path, tokens),
            None => crate::api::tokens::TokenFile::fixed(tokens),
        })
    });
    if let Some(file) = token_file.clone() {
        tokio::spawn(file.watch(api_tls.is_some(), shutdown.clone()));
    }
    let images_loop = ImageGc {
        runtime: runtime.clone(),
        named: TasksAndServices {
            supervisor: supervisor.clone(),
            services: services.clone(),
        },
        file: LedgerFile::new(&config.data_dir, config.disk.clone()),
        clock: config.clock.clone(),
        settings: config.image_gc,
    }
    .spawn(note_inbox, shutdown.clone());
    if let Some(gc) = config.image_gc {
        info!(
            bound = gc.max_bytes,
            idle_s = gc.min_idle.as_secs(),
            all = gc.all,
            "image GC on"
        );
    }
    let app = crate::api::router(crate::api::ApiState {
        tasks: tasks.clone(),
        services: services.clone(),
        access: Arc::new(match (token_file.clone(), api_tls.is_some()) {
            (None, false) => crate::api::auth::Access::Open,
            (tokens, certs) => crate::api::auth::Access::Credentials { tokens, certs },
        }),
        pulls: pull_counts,
        events,
    });
    let server = tokio::spawn(crate::api::serve::serve(listener, api_tls, app, shutdown));
    info!(node = %config.node_id, api = %api_addr, "meshd listening");
    Ok(RunningAgent {
        api_addr,
        supervisor,
        mesh,
        tasks,
        services,
        server,
        actor,
        mesh_loop,
        tasks_loop,
        images_loop,
        services_loop,
        publish_loop,
    })
}

/// What image GC keeps besides images containers use: those this node's
/// unfinished tasks and live services name.
struct TasksAndServices {
    supervisor: SupervisorHandle,
    services: crate::services::ServicesHandle,
}

impl NamedImages for TasksAndServices {
    fn named(&self) -> futures_util::future::BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            let mut named = self
                .supervisor
                .images_named()
                .await
                .map_err(|e| e.to_string())?;
            named.extend(
                self.services
                    .defs()
                    .into_iter()
                    .filter(|d| !d.removed)
                    .map(|d| d.spec.image.clone()),
            );
            Ok(named)
        })
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    start(config, shutdown).await?.wait().await
}

/// Removes our containers on this Docker host: this node's, or with `node`
/// None every node's. Returns how many were removed.
pub async fn cleanup<R: ContainerRuntime>(
    runtime: &R,
    node: Option<(&NodeId, &str)>,
) -> Result<usize, RuntimeError> {
    let found = match node {
        Some((n, cluster)) => {
            let n = n.to_string();
            runtime
                .list(&[(labels::NODE, n.as_str()), (labels::CLUSTER, cluster)])
                .await?
        }
        None => runtime
            .list(&[])
            .await?
            .into_iter()
            .filter(|c| c.labels.contains_key(labels::NODE))
            .collect(),
    };
    for c in &found {
        runtime.remove(&c.id).await?;
        info!(container = %c.name, "removed");
    }
    Ok(found.len())
}
