//! This node's service containers: per-connection containers (with the warm
//! pool of started, connected ones) and pool instances. Every container
//! holds its cores through the supervisor's allocator, carries our labels,
//! and is removed when its connection ends, its service goes, or the agent
//! stops.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mesh_protocol::service::choice::ServiceLoad;
use mesh_protocol::service::{Mode, ServiceSpec};
use mesh_protocol::{CoreCount, NodeId, ServiceName, TaskId, labels};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::stats::{Count, Stats};
use crate::runtime::{ContainerRuntime, ContainerSpec};
use crate::supervisor::SupervisorHandle;

/// How much of a failed container's output goes into the log and the error.
const OUTPUT_TAIL: usize = 2048;

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
        Self {
            cfg: Arc::new(cfg),
            runtime,
            supervisor,
            state: Arc::new(Mutex::new(BTreeMap::new())),
            seq: Arc::new(AtomicU64::new(0)),
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

    /// Per service, this node's figures (for gossip and reports).
    pub fn loads(&self) -> BTreeMap<String, ServiceLoad> {
        self.lock()
            .iter()
            .map(|(name, s)| {
                let ready = match s.spec.mode {
                    Mode::PerConnection => s.warm.len() as u32,
                    Mode::Pool => s.instances.iter().filter(|i| !i.retiring).count() as u32,
                };
                (
                    name.to_string(),
                    ServiceLoad {
                        containers: s.containers,
                        ready: if s.removed { 0 } else { ready },
                        conns: s.conns,
                        queued: s.queued,
                    },
                )
            })
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
            .spec(name)
            .ok_or_else(|| AcquireError::Gone(name.to_string()))?
            .mode;
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
            if svc.spec.mode != Mode::PerConnection {
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

    fn scale_pool(&self, name: &ServiceName, want: &[u32]) {
        let (spec, start, stop) = {
            let mut state = self.lock();
            let Some(svc) = state.get_mut(name) else {
                return;
            };
            let retiring = svc.instances.iter().filter(|i| i.retiring).count();
            let have = (svc.containers as usize).saturating_sub(retiring);
            let start: Vec<u32> = want.iter().skip(have).copied().collect();
            svc.containers += start.len() as u32;
            // Too many: retire the least busy (idle ones go at once).
            let extra = have.saturating_sub(want.len());
            let mut active: Vec<&mut Instance> =
                svc.instances.iter_mut().filter(|i| !i.retiring).collect();
            active.sort_by_key(|i| i.conns);
            for i in active.into_iter().take(extra) {
                i.retiring = true;
            }
            let stop = sweep(svc);
            (svc.spec.clone(), start, stop)
        };
        self.discard_all(stop);
        for cores in start {
            let me = self.clone();
            let spec = spec.clone();
            tokio::spawn(async move {
                let Ok(cores) = CoreCount::new(cores) else {
                    me.freed(&spec.name, 1, 0);
                    return;
                };
                match me.start_ready(&spec, cores).await {
                    Ok((started, probe)) => {
                        drop(probe);
                        info!(service = %spec.name, container = %started.name, "pool instance ready");
                        let watch = started.clone();
                        if let Some(svc) = me.lock().get_mut(&spec.name) {
                            svc.instances.push(Instance {
                                started,
                                conns: 0,
                                retiring: false,
                            });
                        }
                        me.released.notify_waiters();
                        me.watch_instance(spec.name.clone(), watch).await;
                    }
                    Err(_) => me.give_back(&spec.name, 1, 0),
                }
            });
        }
    }

    /// Follows a pool instance until it exits; then it is removed (the
    /// next tick starts a replacement).
    async fn watch_instance(&self, name: ServiceName, started: Started) {
        let code = self.runtime.wait(&started.id).await;
        let was_ours = {
            let mut state = self.lock();
            match state.get_mut(&name) {
                Some(svc) => match svc
                    .instances
                    .iter()
                    .position(|i| i.started.id == started.id)
                {
                    Some(at) => {
                        svc.instances.remove(at);
                        svc.containers = svc.containers.saturating_sub(1);
                        true
                    }
                    None => false,
                },
                None => false,
            }
        };
        if was_ours {
            warn!(service = %name, container = %started.name, exit = ?code, "pool instance ended; a new one will replace it");
            self.discard(&started).await;
        }
    }

    /// Removes what a removed service no longer needs; forgets the service
    /// once nothing of it is left.
    fn retire(&self, name: &ServiceName) {
        let gone = {
            let mut state = self.lock();
            let Some(svc) = state.get_mut(name).filter(|s| s.removed) else {
                return;
            };
            let mut gone: Vec<Started> = svc.warm.drain(..).map(|w| w.started).collect();
            svc.containers = svc.containers.saturating_sub(gone.len() as u32);
            for i in &mut svc.instances {
                i.retiring = true;
            }
            gone.extend(sweep(svc));
            if svc.containers == 0 && svc.conns == 0 && svc.warming == 0 && svc.queued == 0 {
                state.remove(name);
            }
            gone
        };
        self.discard_all(gone);
    }

    fn discard_all(&self, all: Vec<Started>) {
        for s in all {
            let me = self.clone();
            tokio::spawn(async move { me.discard(&s).await });
        }
    }

    /// Removes a container and frees its cores.
    async fn discard(&self, s: &Started) {
        if let Err(e) = self.runtime.remove(&s.id).await {
            warn!(container = %s.name, error = %e, "cannot remove a service container; --cleanup or the next start removes it");
        }
        self.supervisor.release(s.holder.clone()).await;
    }

    /// Starts a container of `spec` holding `cores` and waits until it
    /// accepts a connection; a container that exits or never accepts is
    /// removed and another started, up to `--ready-retries` times.
    async fn start_ready(
        &self,
        spec: &ServiceSpec,
        cores: CoreCount,
    ) -> Result<(Started, TcpStream), AcquireError> {
        let mut last = String::new();
        for _ in 0..=spec.ready_retries {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let holder = TaskId::new(format!("s-{}-{seq}", spec.name))
                .map_err(|e| AcquireError::Failed(e.to_string()))?;
            let held = self
                .supervisor
                .reserve(holder.clone(), cores)
                .await
                .map_err(|e| AcquireError::Full(e.to_string()))?;
            let container = self.container_spec(spec, seq, &held);
            let id = match self.runtime.run(&container).await {
                Ok(id) => id,
                Err(e) => {
                    self.supervisor.release(holder).await;
                    self.stats.count(&spec.name, Count::FailedStart);
                    return Err(AcquireError::Failed(format!(
                        "cannot start a container of {}: {e}",
                        spec.name
                    )));
                }
            };
            let started = |addr| Started {
                id: id.clone(),
                name: container.name.clone(),
                holder: holder.clone(),
                addr,
            };
            match self.wait_ready(&id, spec).await {
                Ok((addr, stream)) => return Ok((started(addr), stream)),
                Err(why) => {
                    self.stats.count(&spec.name, Count::FailedStart);
                    let output = self.output_tail(&id).await;
                    warn!(service = %spec.name, container = %container.name, %why, %output, "service container failed to start");
                    self.discard(&started(SocketAddr::from(([0, 0, 0, 0], 0))))
                        .await;
                    last = format!("{why}; its output: {output:?}");
                }
            }
        }
        Err(AcquireError::Failed(format!(
            "no container of {} became ready in {} starts: {last}",
            spec.name,
            spec.ready_retries + 1
        )))
    }

    fn container_spec(
        &self,
        spec: &ServiceSpec,
        seq: u64,
        held: &crate::supervisor::Reservation,
    ) -> ContainerSpec {
        let node = self.cfg.node.to_string();
        let mut env = spec.env.clone();
        env.extend([
            ("MESH_SERVICE".into(), spec.name.to_string()),
            ("MESH_NODE".into(), node.clone()),
            ("MESH_CORES".into(), held.allocation.cores.len().to_string()),
            ("MESH_CPUS".into(), held.allocation.cpus.to_string()),
            ("MESH_HOST_CPUS".into(), held.host_cpus.to_string()),
        ]);
        ContainerSpec {
            name: format!("mesh-{node}-{}-{seq}", spec.name),
            image: spec.image.clone(),
            command: spec.command.clone(),
            env,
            labels: BTreeMap::from([
                (labels::NODE.into(), node),
                (labels::CLUSTER.into(), self.cfg.cluster.clone()),
                (labels::KIND.into(), labels::KIND_SERVICE.into()),
                (labels::SERVICE.into(), spec.name.to_string()),
            ]),
            cpuset_cpus: held.host_cpus.clone(),
            cpuset_mems: held.host_mems.clone(),
            memory: spec.memory.map(|m| m.get()),
            network: self.cfg.network.clone(),
        }
    }

    /// Connects to the container's port until it accepts, it exits, or
    /// `--ready-timeout` passes.
    async fn wait_ready(
        &self,
        id: &str,
        spec: &ServiceSpec,
    ) -> Result<(SocketAddr, TcpStream), String> {
        let deadline = Instant::now() + Duration::from_millis(spec.ready_timeout_ms);
        let mut delay = Duration::from_millis(2);
        loop {
            let info = self.runtime.inspect(id).await.map_err(|e| e.to_string())?;
            if !info.running {
                return Err(format!(
                    "the container exited (code {:?}) before accepting on port {}",
                    info.exit_code, spec.port
                ));
            }
            let Some(ip) = info.address else {
                return Err("the container has no address on its network".into());
            };
            let addr = SocketAddr::new(ip, spec.port);
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(stream)) =
                tokio::time::timeout(left.min(Duration::from_secs(1)), TcpStream::connect(addr))
                    .await
            {
                let _ = stream.set_nodelay(true);
                return Ok((addr, stream));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nothing accepted on port {} within {} ms (--ready-timeout)",
                    spec.port, spec.ready_timeout_ms
                ));
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    async fn output_tail(&self, id: &str) -> String {
        let mut out = Vec::new();
        let mut logs = self.runtime.logs(id, false);
        while let Some(Ok(chunk)) = logs.next().await {
            out.extend_from_slice(&chunk);
            if out.len() > 4 * OUTPUT_TAIL {
                out.drain(..out.len() - OUTPUT_TAIL);
            }
        }
        let start = out.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&out[start..]).trim().to_owned()
    }

    /// Removes every service container of this node (stale ones at start,
    /// all of them at shutdown). Returns how many.
    pub async fn remove_all(&self) -> usize {
        let node = self.cfg.node.to_string();
        let found = self
            .runtime
            .list(&[
                (labels::NODE, node.as_str()),
                (labels::CLUSTER, self.cfg.cluster.as_str()),
                (labels::KIND, labels::KIND_SERVICE),
            ])
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot list service containers to remove them");
                Vec::new()
            });
        for c in &found {
            if let Err(e) = self.runtime.remove(&c.id).await {
                warn!(container = %c.name, error = %e, "cannot remove a service container");
            }
        }
        found.len()
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

/// Takes the retiring instances without connections out of `svc`, to be
/// removed.
fn sweep(svc: &mut Svc) -> Vec<Started> {
    let (gone, kept): (Vec<Instance>, Vec<Instance>) = std::mem::take(&mut svc.instances)
        .into_iter()
        .partition(|i| i.retiring && i.conns == 0);
    svc.instances = kept;
    svc.containers = svc.containers.saturating_sub(gone.len() as u32);
    gone.into_iter().map(|i| i.started).collect()
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
