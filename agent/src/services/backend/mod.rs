//! This node's service containers: per-connection containers (with the warm
//! pool of started, connected ones) and pool instances. Every container
//! holds its cores through the supervisor's allocator, carries our labels,
//! and is removed when its connection ends, its service goes, or the agent
//! stops.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_protocol::service::choice::ServiceLoad;
use mesh_protocol::service::{Mode, ServiceSpec};
use mesh_protocol::{NodeId, ServiceName, TaskId};
use tokio::net::TcpStream;
use tokio::sync::Notify;

mod pool;
mod start;

use super::stats::Stats;
use crate::runtime::ContainerRuntime;
use crate::supervisor::SupervisorHandle;
use pool::sweep;

/// Why no container was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// No room now: another node, or later.
    #[error("{0}")]
    Full(String),
    /// Containers of the service do not start or become ready.
    #[error("{0}")]
    Failed(String),
    #[error("service {0} is not served here")]
    Gone(String),
}

/// A started container that accepted a connection.
#[derive(Debug, Clone)]
struct Started {
    id: String,
    name: String,
    holder: TaskId,
    addr: SocketAddr,
}

struct Warm {
    started: Started,
    stream: TcpStream,
}

struct Instance {
    started: Started,
    conns: u32,
    /// Takes no new connections; removed once its last one ends (its
    /// service was removed or redefined, or the pool shrank).
    retiring: bool,
}

struct Svc {
    spec: ServiceSpec,
    removed: bool,
    /// Per-connection: starting, warm and busy containers. Pool: instances,
    /// starting ones included.
    containers: u32,
    warm: VecDeque<Warm>,
    warming: u32,
    /// After containers failed to start, no warm container or instance is
    /// started before this (connections still try: a client asked).
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    instances: Vec<Instance>,
    conns: u32,
    /// Connections waiting at this node (it accepted them) for a container.
    queued: u32,
}

/// Settings the backend needs from the agent's config.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub node: NodeId,
    pub cluster: String,
    pub network: Option<String>,
}

/// A connection's container: released (and, per-connection, removed) when
/// dropped.
pub struct Lease {
    pub stream: TcpStream,
    pub container: String,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// Handle to this node's service containers; cheap to clone.
pub struct Backend<R> {
    cfg: Arc<BackendConfig>,
    runtime: Arc<R>,
    supervisor: SupervisorHandle,
    state: Arc<Mutex<BTreeMap<ServiceName, Svc>>>,
    seq: Arc<AtomicU64>,
    /// This run of the agent (the label `mesh.run` of its containers).
    run: Arc<str>,
    /// One container removal at a time (see `discard`).
    removals: Arc<tokio::sync::Semaphore>,
    stats: Stats,
    /// Wakes connections waiting for room when a container frees up.
    pub released: Arc<Notify>,
}

impl<R> Clone for Backend<R> {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            runtime: self.runtime.clone(),
            supervisor: self.supervisor.clone(),
            state: self.state.clone(),
            seq: self.seq.clone(),
            run: self.run.clone(),
            removals: self.removals.clone(),
            stats: self.stats.clone(),
            released: self.released.clone(),
        }
    }
}

impl<R: ContainerRuntime> Backend<R> {
    pub fn new(
        cfg: BackendConfig,
        runtime: Arc<R>,
        supervisor: SupervisorHandle,
        stats: Stats,
    ) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 * 1000)
            .unwrap_or(0);
        Self {
            cfg: Arc::new(cfg),
            runtime,
            supervisor,
            state: Arc::new(Mutex::new(BTreeMap::new())),
            // Container names stay unique across restarts of the agent
            // (a stale container may still hold an old name).
            seq: Arc::new(AtomicU64::new(run)),
            run: run.to_string().into(),
            removals: Arc::new(tokio::sync::Semaphore::new(1)),
            stats,
            released: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServiceName, Svc>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves (or updates) a service here. A changed definition retires
    /// the containers of the old one (busy ones when their connections end).
    pub fn define(&self, spec: ServiceSpec) {
        let mut stale = Vec::new();
        let mut state = self.lock();
        match state.get_mut(&spec.name) {
            Some(svc) => {
                if svc.spec != spec {
                    stale.extend(svc.warm.drain(..).map(|w| w.started));
                    svc.containers = svc.containers.saturating_sub(stale.len() as u32);
                    for i in &mut svc.instances {
                        i.retiring = true;
                    }
                    stale.extend(sweep(svc));
                }
                svc.spec = spec;
                svc.removed = false;
            }
            None => {
                state.insert(
                    spec.name.clone(),
                    Svc {
                        spec,
                        removed: false,
                        containers: 0,
                        warm: VecDeque::new(),
                        warming: 0,
                        retry_at: None,
                        backoff: Duration::ZERO,
                        instances: Vec::new(),
                        conns: 0,
                        queued: 0,
                    },
                );
            }
        }
        drop(state);
        self.discard_all(stale);
    }

    /// Stops serving a service: warm containers and idle instances go now,
    /// busy ones when their connections end.
    pub fn remove(&self, name: &ServiceName) {
        if let Some(svc) = self.lock().get_mut(name) {
            svc.removed = true;
        }
        self.retire(name);
    }

    pub fn spec(&self, name: &ServiceName) -> Option<ServiceSpec> {
        self.lock()
            .get(name)
            .filter(|s| !s.removed)
            .map(|s| s.spec.clone())
    }

    /// This node's figures for one service.
    pub fn load(&self, name: &ServiceName) -> Option<ServiceLoad> {
        self.lock().get(name).map(load_of)
    }

    /// Per service, this node's figures (for gossip and reports).
    pub fn loads(&self) -> BTreeMap<String, ServiceLoad> {
        self.lock()
            .iter()
            .map(|(name, s)| (name.to_string(), load_of(s)))
            .collect()
    }

    /// Counts a connection waiting here (accepted by this node) until the
    /// returned guard drops; `None` when the service's queue is full.
    pub fn enqueue(&self, name: &ServiceName) -> Option<QueueGuard<R>> {
        let mut state = self.lock();
        let svc = state.get_mut(name)?;
        if svc.queued >= svc.spec.queue {
            return None;
        }
        svc.queued += 1;
        Some(QueueGuard {
            backend: self.clone(),
            name: name.clone(),
        })
    }

    /// A container for one connection, connected.
    pub async fn acquire(&self, name: &ServiceName) -> Result<Lease, AcquireError> {
        let mode = self
            .lock()
            .get(name)
            .filter(|s| !s.removed)
            .map(|s| s.spec.mode)
            .ok_or_else(|| AcquireError::Gone(name.to_string()))?;
        match mode {
            Mode::PerConnection => self.acquire_fresh(name).await,
            Mode::Pool => self.acquire_instance(name).await,
        }
    }

    async fn acquire_fresh(&self, name: &ServiceName) -> Result<Lease, AcquireError> {
        let mut stale = Vec::new();
        let spec = {
            let mut state = self.lock();
            let svc = state
                .get_mut(name)
                .filter(|s| !s.removed)
                .ok_or_else(|| AcquireError::Gone(name.to_string()))?;
            let mut found = None;
            while let Some(w) = svc.warm.pop_front() {
                if still_open(&w.stream) {
                    found = Some(w);
                    break;
                }
                svc.containers -= 1;
                stale.push(w.started);
            }
            if let Some(w) = found {
                svc.conns += 1;
                drop(state);
                self.discard_all(stale);
                self.refill(name);
                return Ok(self.fresh_lease(name, w.started, w.stream));
            }
            if svc.containers >= svc.spec.max_per_node {
                return Err(AcquireError::Full(format!(
                    "{} holds {} containers of {name} (--max-per-node)",
                    self.cfg.node, svc.containers
                )));
            }
            svc.containers += 1;
            svc.spec.clone()
        };
        self.discard_all(stale);
        match self.start_ready(&spec, spec.cores).await {
            Ok((started, stream)) => {
                if let Some(svc) = self.lock().get_mut(name) {
                    svc.conns += 1;
                }
                Ok(self.fresh_lease(name, started, stream))
            }
            Err(e) => {
                // No wake-up: the caller itself is what would wake, and
                // retry at once.
                self.give_back(name, 1, 0);
                Err(e)
            }
        }
    }

    fn fresh_lease(&self, name: &ServiceName, started: Started, stream: TcpStream) -> Lease {
        let me = self.clone();
        let name = name.clone();
        Lease {
            stream,
            container: started.name.clone(),
            on_drop: Some(Box::new(move || {
                let done = me.clone();
                tokio::spawn(async move {
                    done.discard(&started).await;
                    done.freed(&name, 1, 1);
                    done.refill(&name);
                });
            })),
        }
    }

    async fn acquire_instance(&self, name: &ServiceName) -> Result<Lease, AcquireError> {
        let started = {
            let mut state = self.lock();
            let svc = state
                .get_mut(name)
                .filter(|s| !s.removed)
                .ok_or_else(|| AcquireError::Gone(name.to_string()))?;
            let Some(inst) = svc
                .instances
                .iter_mut()
                .filter(|i| !i.retiring)
                .min_by_key(|i| i.conns)
            else {
                return Err(AcquireError::Full(format!(
                    "no ready instance of {name} on {}",
                    self.cfg.node
                )));
            };
            inst.conns += 1;
            svc.conns += 1;
            inst.started.clone()
        };
        let me = self.clone();
        let (name2, id) = (name.clone(), started.id.clone());
        let release = move || {
            let mut done = Vec::new();
            if let Some(svc) = me.lock().get_mut(&name2) {
                svc.conns = svc.conns.saturating_sub(1);
                if let Some(i) = svc.instances.iter_mut().find(|i| i.started.id == id) {
                    i.conns = i.conns.saturating_sub(1);
                }
                done = sweep(svc);
            }
            me.discard_all(done);
            me.released.notify_waiters();
        };
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(started.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(Lease {
                    stream,
                    container: started.name,
                    on_drop: Some(Box::new(release)),
                })
            }
            _ => {
                release();
                Err(AcquireError::Full(format!(
                    "instance {} of {name} did not accept",
                    started.name
                )))
            }
        }
    }

    /// Gives back a container slot (and a connection) of `name`, and wakes
    /// connections waiting for room.
    fn freed(&self, name: &ServiceName, containers: u32, conns: u32) {
        self.give_back(name, containers, conns);
        self.released.notify_waiters();
    }

    fn give_back(&self, name: &ServiceName, containers: u32, conns: u32) {
        if let Some(svc) = self.lock().get_mut(name) {
            svc.containers = svc.containers.saturating_sub(containers);
            svc.conns = svc.conns.saturating_sub(conns);
        }
    }

    /// Starts warm containers up to `--warm` (within `--max-per-node`).
    fn refill(&self, name: &ServiceName) {
        let (spec, n) = {
            let mut state = self.lock();
            let Some(svc) = state.get_mut(name).filter(|s| !s.removed) else {
                return;
            };
            if svc.spec.mode != Mode::PerConnection || backing_off(svc) {
                return;
            }
            let have = svc.warm.len() as u32 + svc.warming;
            let need = svc.spec.warm.saturating_sub(have);
            let n = need.min(svc.spec.max_per_node.saturating_sub(svc.containers));
            svc.warming += n;
            svc.containers += n;
            (svc.spec.clone(), n)
        };
        for _ in 0..n {
            let me = self.clone();
            let spec = spec.clone();
            tokio::spawn(async move {
                let result = me.start_ready(&spec, spec.cores).await;
                let mut discard = None;
                {
                    let mut state = me.lock();
                    let Some(svc) = state.get_mut(&spec.name) else {
                        return;
                    };
                    svc.warming = svc.warming.saturating_sub(1);
                    note_start(svc, &result);
                    match result {
                        Ok((started, stream)) if !svc.removed => {
                            svc.warm.push_back(Warm { started, stream })
                        }
                        Ok((started, _)) => {
                            svc.containers = svc.containers.saturating_sub(1);
                            discard = Some(started);
                        }
                        Err(_) => svc.containers = svc.containers.saturating_sub(1),
                    }
                }
                if let Some(s) = discard {
                    me.discard(&s).await;
                }
                me.released.notify_waiters();
            });
        }
    }

    /// Brings pool instances to `want` (cores of each) and per-connection
    /// warm pools to `--warm`; lets removed services go.
    pub fn tick(&self, pool_wants: &BTreeMap<ServiceName, Vec<u32>>) {
        let names: Vec<(ServiceName, Mode, bool)> = self
            .lock()
            .iter()
            .map(|(n, s)| (n.clone(), s.spec.mode, s.removed))
            .collect();
        for (name, mode, removed) in names {
            if removed {
                self.retire(&name);
                continue;
            }
            match mode {
                Mode::PerConnection => self.refill(&name),
                Mode::Pool => {
                    let want = pool_wants.get(&name).cloned().unwrap_or_default();
                    self.scale_pool(&name, &want);
                }
            }
        }
    }
}

/// A connection counted as waiting until dropped.
pub struct QueueGuard<R: ContainerRuntime> {
    backend: Backend<R>,
    name: ServiceName,
}

impl<R: ContainerRuntime> Drop for QueueGuard<R> {
    fn drop(&mut self) {
        if let Some(svc) = self.backend.lock().get_mut(&self.name) {
            svc.queued = svc.queued.saturating_sub(1);
        }
    }
}

fn load_of(s: &Svc) -> ServiceLoad {
    let ready = match s.spec.mode {
        Mode::PerConnection => s.warm.len() as u32,
        Mode::Pool => s.instances.iter().filter(|i| !i.retiring).count() as u32,
    };
    ServiceLoad {
        containers: s.containers,
        ready: if s.removed { 0 } else { ready },
        conns: s.conns,
        queued: s.queued,
    }
}

/// Whether starts in the background wait out a back-off now.
fn backing_off(svc: &Svc) -> bool {
    svc.retry_at
        .is_some_and(|t| tokio::time::Instant::now() < t)
}

/// Background starts that fail (not for want of cores) back off: 1 s,
/// doubling, at most a minute; a success ends it.
fn note_start<T>(svc: &mut Svc, result: &Result<T, AcquireError>) {
    match result {
        Ok(_) => {
            svc.backoff = Duration::ZERO;
            svc.retry_at = None;
        }
        Err(AcquireError::Failed(_)) => {
            svc.backoff = (svc.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            svc.retry_at = Some(tokio::time::Instant::now() + svc.backoff);
        }
        Err(_) => {}
    }
}

/// Whether a warm container's connection is still open (the container may
/// have closed it or died since): a closed one reads end-of-stream now.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut rb = tokio::io::ReadBuf::new(&mut buf);
    match stream.poll_peek(&mut cx, &mut rb) {
        std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => false,
        std::task::Poll::Ready(Ok(_)) | std::task::Poll::Pending => true,
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl<R> std::fmt::Debug for Backend<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl<R: ContainerRuntime> std::fmt::Debug for QueueGuard<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueGuard").finish_non_exhaustive()
    }
}
