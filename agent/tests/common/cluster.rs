//! In-process agents for tests. A [`Setup`] says how to start them (runtime,
//! topology, failure detector, TLS, ...); each [`TestAgent`] it starts has
//! its own node id, temporary data dir and API on port 0, and the setup's
//! own cluster id, so tests run in parallel. Dropping an agent stops it and
//! removes the containers it made on Docker.
//!
//! These agents use real sockets (the API on TCP, the mesh on QUIC), so
//! their tests run on tokio's real clock: a paused clock jumps ahead
//! whenever the runtime waits on a socket, and timers fire that should not.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_agent::config::TlsSource;
use mesh_agent::disk::Disk;
use mesh_agent::mesh::Mesh;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_agent::services::admission::ConnLimits;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::NodeId;
use mesh_protocol::gossip::PeerState;
use mesh_protocol::pki::{self, Ca};
use mesh_protocol::retention::Retention;
use mesh_protocol::token::Tokens;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::docker::{remove_node_containers, require_docker};
use super::net::own_loopback;
use super::wait::wait_until;

/// A name no other test (or test run) uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("it-{tag}-{}-{n}", std::process::id())
}

pub fn unique_node(tag: &str) -> NodeId {
    NodeId::new(unique(tag)).expect("a valid node id")
}

/// What the agents' containers run on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Memory,
    Docker,
}

/// How to start agents; each clone starts agents of the same cluster.
/// The core audit log's name in each test agent's data dir.
pub const AUDIT_LOG: &str = "audit.jsonl";

#[derive(Debug, Clone)]
pub struct Setup {
    tag: String,
    kind: Kind,
    cluster: String,
    topology: String,
    max_queue: Option<usize>,
    ping: Option<Duration>,
    phi: Option<f64>,
    ca: Option<Ca>,
    own_loopback: bool,
    rpc_version: Option<u32>,
    service_ports: Option<String>,
    conn_limits: Option<ConnLimits>,
    retention: Option<(Retention, Duration)>,
    max_log_bytes: Option<u64>,
    /// The API's tokens, and the secret the harness itself calls with.
    api_tokens: Option<(Tokens, String)>,
    disk: Option<Disk>,
    image_gc: Option<mesh_agent::images::GcSettings>,
    docker_host: Option<String>,
    image_source: Option<mesh_protocol::image::ImageSource>,
}

impl Setup {
    /// Agents on the in-memory runtime (one runtime each).
    pub fn memory(tag: &str) -> Setup {
        Setup::new(tag, Kind::Memory)
    }

    /// Agents on the real Docker engine.
    pub fn docker(tag: &str) -> Setup {
        Setup::new(tag, Kind::Docker)
    }

    fn new(tag: &str, kind: Kind) -> Setup {
        Setup {
            tag: tag.to_owned(),
            kind,
            cluster: unique(&format!("{tag}-cluster")),
            topology: "numa:1 core:2 pu:1".into(),
            max_queue: None,
            ping: None,
            phi: None,
            ca: None,
            own_loopback: false,
            rpc_version: None,
            service_ports: None,
            conn_limits: None,
            retention: None,
            max_log_bytes: None,
            api_tokens: None,
            disk: None,
            image_gc: None,
            docker_host: None,
            image_source: None,
        }
    }

    /// An hwloc synthetic topology, e.g. `numa:2 core:4 pu:2`.
    pub fn topology(mut self, synthetic: &str) -> Setup {
        synthetic.clone_into(&mut self.topology);
        self
    }

    pub fn max_queue(mut self, n: usize) -> Setup {
        self.max_queue = Some(n);
        self
    }

    /// How often the supervisor checks its containers.
    pub fn ping_interval(mut self, every: Duration) -> Setup {
        self.ping = Some(every);
        self
    }

    /// The failure detector's threshold.
    pub fn phi(mut self, threshold: f64) -> Setup {
        self.phi = Some(threshold);
        self
    }

    /// Mutual TLS with certificates of `ca` instead of the insecure dev mode.
    pub fn tls(mut self, ca: &Ca) -> Setup {
        self.ca = Some(ca.clone());
        self
    }

    /// The same, but a cluster of its own.
    pub fn other_cluster(mut self) -> Setup {
        self.cluster = unique(&format!("{}-cluster", self.tag));
        self
    }

    /// Agents that speak this RPC version (as a build of another release).
    pub fn rpc_version(mut self, version: u32) -> Setup {
        self.rpc_version = Some(version);
        self
    }

    /// `--service-ports`.
    pub fn service_ports(mut self, ranges: &str) -> Setup {
        self.service_ports = Some(ranges.to_owned());
        self
    }

    /// `--max-connections` and `--max-connections-per-source`.
    pub fn conn_limits(mut self, total: u32, per_source: u32) -> Setup {
        self.conn_limits = Some(ConnLimits { total, per_source });
        self
    }

    /// Which finished tasks to keep, looked at every `every`.
    pub fn retention(mut self, retention: Retention, every: Duration) -> Setup {
        self.retention = Some((retention, every));
        self
    }

    /// `--max-log-bytes` (any size, unlike the flag's 1K at least).
    pub fn max_log_bytes(mut self, n: u64) -> Setup {
        self.max_log_bytes = Some(n);
        self
    }

    /// `--api-tokens`: the API asks for one of `tokens`; the harness's own
    /// calls (`TestAgent::api`) send `secret`, which must be an admin's.
    pub fn api_tokens(mut self, tokens: Tokens, secret: &str) -> Setup {
        self.api_tokens = Some((tokens, secret.to_owned()));
        self
    }

    /// The data dir's disk (one with simulated faults).
    pub fn disk(mut self, disk: Disk) -> Setup {
        self.disk = Some(disk);
        self
    }

    /// `--image-gc` and its companions.
    pub fn image_gc(mut self, settings: mesh_agent::images::GcSettings) -> Setup {
        self.image_gc = Some(settings);
        self
    }

    /// Agents drive the Docker engine at `host` (a second engine of the
    /// test's, `common::engine`) instead of the main one.
    pub fn docker_host(mut self, host: &str) -> Setup {
        self.docker_host = Some(host.to_owned());
        self
    }

    /// Where agents get images they lack (`--image-source`).
    pub fn image_source(mut self, source: mesh_protocol::image::ImageSource) -> Setup {
        self.image_source = Some(source);
        self
    }

    /// Services listen on a loopback address of each agent's own.
    pub fn own_loopback(mut self) -> Setup {
        self.own_loopback = true;
        self
    }

    /// One agent joining through `seeds`.
    pub async fn start(&self, seeds: &[String]) -> TestAgent {
        let backend = match self.kind {
            Kind::Memory => Some(Arc::new(MemoryRuntime::new())),
            Kind::Docker => None,
        };
        self.start_agent(backend, seeds).await
    }

    /// One agent on the given in-memory runtime (prepared by the test).
    pub async fn start_on(&self, runtime: Arc<MemoryRuntime>, seeds: &[String]) -> TestAgent {
        assert_eq!(self.kind, Kind::Memory, "start_on is for in-memory agents");
        self.start_agent(Some(runtime), seeds).await
    }

    /// `n` agents joined through the first, once all see each other alive
    /// with their published values.
    pub async fn cluster(&self, n: usize) -> Vec<TestAgent> {
        let first = self.start(&[]).await;
        let seeds = [first.gossip()];
        let mut agents = vec![first];
        for _ in 1..n {
            agents.push(self.start(&seeds).await);
        }
        wait_formed(&agents.iter().collect::<Vec<_>>()).await;
        agents
    }

    async fn start_agent(&self, memory: Option<Arc<MemoryRuntime>>, seeds: &[String]) -> TestAgent {
        if self.kind == Kind::Docker {
            require_docker().await;
        }
        let ip = if self.own_loopback {
            own_loopback()
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        let id = unique_node(&self.tag);
        let dir = tempfile::tempdir().expect("a temporary data dir");
        let stop = CancellationToken::new();
        let running = self
            .launch(&id, dir.path(), memory.as_ref(), ip, seeds, &stop)
            .await;
        let agent = TestAgent {
            id,
            api: Api::with_token(
                running.api_addr,
                self.api_tokens.as_ref().map(|(_, s)| s.clone()),
            ),
            ip,
            setup: self.clone(),
            memory,
            dir,
            stop,
            running: Some(running),
        };
        agent.wait_ready().await;
        agent
    }

    async fn launch(
        &self,
        id: &NodeId,
        dir: &Path,
        memory: Option<&Arc<MemoryRuntime>>,
        ip: IpAddr,
        seeds: &[String],
        stop: &CancellationToken,
    ) -> RunningAgent {
        self.try_launch(id, dir, memory, ip, seeds, stop)
            .await
            .unwrap_or_else(|e| panic!("agent {id} did not start: {e}"))
    }

    async fn try_launch(
        &self,
        id: &NodeId,
        dir: &Path,
        memory: Option<&Arc<MemoryRuntime>>,
        ip: IpAddr,
        seeds: &[String],
        stop: &CancellationToken,
    ) -> Result<RunningAgent, mesh_agent::AgentError> {
        let mut config = Config::builder(id.clone(), dir)
            .topology(&self.topology)
            .seeds(seeds.to_vec())
            .service_bind(ip)
            // Every test agent keeps one: tests may check it (`audit_log`).
            .audit_log(&dir.join(AUDIT_LOG));
        config.mesh.cluster_id.clone_from(&self.cluster);
        if let Some(n) = self.max_queue {
            config = config.max_queue(n);
        }
        if let Some(every) = self.ping {
            config = config.ping_interval(every);
        }
        if let Some(phi) = self.phi {
            config.mesh.phi_threshold = phi;
        }
        if let Some(ca) = &self.ca {
            config = config.tls(write_identity(dir, ca, id));
        }
        if let Some(v) = self.rpc_version {
            config.mesh.rpc_version = v;
        }
        if let Some(ranges) = &self.service_ports {
            config = config.service_ports(ranges.parse().expect("valid --service-ports"));
        }
        if let Some(limits) = self.conn_limits {
            config = config.conn_limits(limits);
        }
        if let Some((retention, every)) = self.retention {
            config = config.retention(retention, every);
        }
        if let Some(n) = self.max_log_bytes {
            config = config.max_log_bytes(n);
        }
        if let Some((tokens, _)) = &self.api_tokens {
            config = config.api_tokens(tokens.clone());
        }
        if let Some(disk) = &self.disk {
            config = config.disk(disk.clone());
        }
        if let Some(gc) = self.image_gc {
            config = config.image_gc(gc);
        }
        if let Some(host) = &self.docker_host {
            config = config.docker_host(host);
        }
        if let Some(source) = self.image_source {
            config = config.image_source(source);
        }
        match memory {
            Some(rt) => mesh_agent::start_with_runtime(config, rt.clone(), stop.clone()).await,
            None => mesh_agent::start(config, stop.clone()).await,
        }
    }
}

/// One in-process agent; stopped (and its Docker containers removed) on drop.
pub struct TestAgent {
    pub id: NodeId,
    pub api: Api,
    /// Where its services listen for clients.
    pub ip: IpAddr,
    setup: Setup,
    memory: Option<Arc<MemoryRuntime>>,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    running: Option<RunningAgent>,
}

impl TestAgent {
    /// The running agent; fails the test if it was stopped.
    pub fn running(&self) -> &RunningAgent {
        self.running
            .as_ref()
            .unwrap_or_else(|| panic!("agent {} is stopped", self.id))
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub fn mesh(&self) -> &Mesh {
        &self.running().mesh
    }

    /// Its QUIC address, as a seed for others.
    pub fn gossip(&self) -> String {
        self.mesh()
            .local_addr()
            .expect("the mesh's local address")
            .to_string()
    }

    /// Its in-memory runtime (which outlives stops and restarts).
    pub fn memory(&self) -> &MemoryRuntime {
        self.memory
            .as_deref()
            .unwrap_or_else(|| panic!("agent {} runs on Docker", self.id))
    }

    pub fn cluster(&self) -> &str {
        &self.setup.cluster
    }

    /// Its data dir (task store, kept logs, service definitions).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The nodes it sees alive (suspect ones too: not declared dead),
    /// sorted.
    pub async fn alive(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .api
            .peers()
            .await
            .into_iter()
            .filter(|p| p.state.is_live())
            .map(|p| p.node.to_string())
            .collect();
        v.sort();
        v
    }

    /// Stops it (as a shutdown signal does) and waits until it has.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(a) = self.running.take() {
            a.wait()
                .await
                .unwrap_or_else(|e| panic!("agent {} did not stop cleanly: {e}", self.id));
        }
    }

    /// Waits until it stops on its own (without a shutdown signal) and
    /// returns how it ended.
    pub async fn stopped(&mut self) -> Result<(), mesh_agent::agent::AgentError> {
        let a = self.running.take().expect("a running agent");
        tokio::time::timeout(Duration::from_secs(20), a.wait())
            .await
            .unwrap_or_else(|_| panic!("agent {} did not stop on its own", self.id))
    }

    /// Starts it again after [`stop`](Self::stop): same node, data dir and
    /// runtime, a new API port.
    pub async fn restart(&mut self, seeds: &[String]) {
        if let Err(e) = self.try_restart(seeds).await {
            panic!("agent {} did not start: {e}", self.id);
        }
    }

    /// Tries to start it again after [`stop`](Self::stop); the error if it
    /// does not start (it stays stopped).
    pub async fn try_restart(&mut self, seeds: &[String]) -> Result<(), String> {
        assert!(self.running.is_none(), "agent {} is still running", self.id);
        self.stop = CancellationToken::new();
        let running = self
            .setup
            .try_launch(
                &self.id,
                self.dir.path(),
                self.memory.as_ref(),
                self.ip,
                seeds,
                &self.stop,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.api = Api::new(running.api_addr);
        self.running = Some(running);
        self.wait_ready().await;
        Ok(())
    }

    /// On Docker: until the agent reaches the engine.
    async fn wait_ready(&self) {
        if self.memory.is_none() {
            wait_until("agent healthy", Duration::from_secs(20), || async {
                let h = self.api.health().await;
                if h.ok { Ok(()) } else { Err(h) }
            })
            .await;
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop.cancel();
        // An agent on a second engine leaves its containers to that
        // engine's guard, which stops them with it.
        if self.memory.is_none() && self.setup.docker_host.is_none() {
            remove_node_containers(&self.id);
        }
    }
}

/// Waits until every one of `agents` lists all of them alive with their
/// published values.
pub async fn wait_formed(agents: &[&TestAgent]) {
    let n = agents.len();
    wait_until(
        &format!("{n} agents see each other"),
        Duration::from_secs(15),
        || async {
            for a in agents {
                let peers = a.api.peers().await;
                let alive = peers
                    .iter()
                    .filter(|p| p.state == PeerState::Alive && p.info.is_some())
                    .count();
                if alive < n {
                    return Err((a.id.clone(), peers));
                }
            }
            Ok(())
        },
    )
    .await;
}

/// Writes a node certificate of `ca` into `dir`.
fn write_identity(dir: &Path, ca: &Ca, node: &NodeId) -> TlsSource {
    let now = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let cert = pki::create_node_cert(ca, node, now, 2).expect("a node certificate");
    let p = |name: &str| -> PathBuf { dir.join(name) };
    let write = |name: &str, pem: &str| std::fs::write(p(name), pem).expect("the TLS files");
    write("ca.pem", &ca.cert_pem);
    write("node.pem", &cert.cert_pem);
    write("node-key.pem", &cert.key_pem);
    TlsSource::Files {
        ca: p("ca.pem"),
        cert: p("node.pem"),
        key: p("node-key.pem"),
    }
}
