//! The agent's configuration, layered: defaults, then a TOML file
//! (`--config`), then `MESH_*` environment variables, then flags. Parsed
//! once into [`Config`]; tests use [`Config::builder`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_protocol::NodeId;
use serde::Deserialize;

use mesh_protocol::retention::Retention;

mod access;
mod args;
mod error;
mod image_gc;

pub use access::{open_guard, read_tokens};
pub use args::{Args, LogFormat};
pub use error::ConfigError;

use crate::services::admission::ConnLimits;
use crate::services::port_range::ServicePorts;

pub const DEFAULT_API: &str = "127.0.0.1:7700";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/meshd";
pub const DEFAULT_MAX_QUEUE: usize = 1000;
/// How long a cut-off runner keeps a kept task going (`--fence-after`).
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_secs(10);
/// How often a node looks for finished tasks to forget.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The TOML file layer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<String>,
    api: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    topology: Option<String>,
    max_queue: Option<usize>,
    network: Option<String>,
    service_bind: Option<std::net::IpAddr>,
    service_ports: Option<String>,
    max_connections: Option<u32>,
    max_connections_per_source: Option<u32>,
    retain_finished: Option<String>,
    retain_finished_records: Option<usize>,
    max_log_bytes: Option<String>,
    registry_auth: Option<PathBuf>,
    image_gc: Option<String>,
    image_gc_idle: Option<String>,
    image_gc_all: Option<bool>,
    image_source: Option<String>,
    docker_host: Option<String>,
    audit_log: Option<PathBuf>,
    bind: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    seeds: Option<Vec<String>>,
    cluster_id: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    api_tokens: Option<PathBuf>,
    api_tls: Option<bool>,
    insecure_dev: Option<bool>,
    gossip_interval_ms: Option<u64>,
    phi_threshold: Option<f64>,
    fence_after: Option<f64>,
}

/// How the QUIC endpoint authenticates peers.
pub use crate::mesh::tls::TlsSource;

/// Mesh settings: the QUIC endpoint, gossip and peers.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub bind: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub cluster_id: String,
    pub tls: TlsSource,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    /// How long a runner keeps a task's attempt going while it hears
    /// neither the task's keeper nor a majority (`mesh_protocol::lease`).
    pub fence_after: Duration,
    /// The RPC version this node speaks (`mesh_protocol::rpc::VERSION`);
    /// only tests set another, to stand for an older build.
    pub rpc_version: u32,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    pub topology: Option<String>,
    pub max_queue: usize,
    pub network: Option<String>,
    /// Where services' client listeners bind.
    pub service_bind: std::net::IpAddr,
    /// Ports services may listen on (the agent's own are taken out at
    /// start, once they are known).
    pub service_ports: ServicePorts,
    /// Caps on the client connections the agent holds open.
    pub conn_limits: ConnLimits,
    /// Which finished tasks to keep.
    pub retention: Retention,
    /// How often finished tasks past retention are looked for.
    pub prune_every: Duration,
    /// Most bytes of an attempt's output kept (its tail).
    pub max_log_bytes: u64,
    /// Registry credentials for pulls (read at start).
    pub registry_auth: Option<PathBuf>,
    /// Image GC's bound (None: off; the ledger is kept either way).
    pub image_gc: Option<crate::images::GcSettings>,
    /// Where an image the host lacks comes from first: peers or registry.
    pub image_source: mesh_protocol::image::ImageSource,
    /// The Docker endpoint (`unix:///...`, `tcp://...`); None: `DOCKER_HOST`,
    /// else the local socket.
    pub docker_host: Option<String>,
    /// Where core allocations and releases are logged (None: nowhere).
    pub audit_log: Option<PathBuf>,
    pub ping_interval: Duration,
    /// The bearer tokens the API accepts; None (and no API TLS): the API
    /// asks for no credentials (loopback or `--insecure-dev` only).
    pub api_tokens: Option<mesh_protocol::token::Tokens>,
    /// The file `api_tokens` came from: read again when it changes.
    pub api_tokens_file: Option<PathBuf>,
    /// Serve the API over HTTPS, taking client certificates as credentials.
    pub api_tls: bool,
    pub mesh: MeshConfig,
    /// Where wall-clock time comes from (tests: one that follows tokio's).
    pub clock: crate::clock::Clock,
    /// Seeds the generator of task ids (tests); None: from the OS.
    pub seed: Option<u64>,
    /// The data dir's disk (tests: one with simulated faults).
    pub disk: crate::disk::Disk,
}

impl Config {
    /// Defaults for tests: given node id and data dir, API on port 0.
    pub fn builder(node_id: NodeId, data_dir: &Path) -> Config {
        Config {
            node_id,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            topology: None,
            max_queue: DEFAULT_MAX_QUEUE,
            network: None,
            service_bind: std::net::IpAddr::from([127, 0, 0, 1]),
            service_ports: ServicePorts::default(),
            conn_limits: ConnLimits::default(),
            retention: Retention::default(),
            prune_every: PRUNE_EVERY,
            max_log_bytes: crate::logs::DEFAULT_MAX_LOG_BYTES,
            registry_auth: None,
            image_gc: None,
            image_source: Default::default(),
            docker_host: None,
            audit_log: None,
            ping_interval: Duration::from_secs(2),
            api_tokens: None,
            api_tokens_file: None,
            api_tls: false,
            mesh: MeshConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise: None,
                seeds: Vec::new(),
                cluster_id: "ganger-test".into(),
                tls: TlsSource::InsecureDev,
                gossip_interval: Duration::from_millis(200),
                phi_threshold: 6.0,
                fence_after: DEFAULT_FENCE_AFTER,
                rpc_version: mesh_protocol::rpc::VERSION,
            },
            clock: crate::clock::Clock::System,
            seed: None,
            disk: crate::disk::Disk::real(),
        }
    }

    /// The data dir's disk (tests: one with simulated faults).
    pub fn disk(mut self, disk: crate::disk::Disk) -> Self {
        self.disk = disk;
        self
    }

    pub fn clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn seeds(mut self, seeds: Vec<String>) -> Self {
        self.mesh.seeds = seeds;
        self
    }

    pub fn tls(mut self, tls: TlsSource) -> Self {
        self.mesh.tls = tls;
        self
    }

    pub fn topology(mut self, synthetic: &str) -> Self {
        self.topology = Some(synthetic.to_owned());
        self
    }

    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    pub fn service_bind(mut self, ip: std::net::IpAddr) -> Self {
        self.service_bind = ip;
        self
    }

    pub fn service_ports(mut self, ports: ServicePorts) -> Self {
        self.service_ports = ports;
        self
    }

    pub fn conn_limits(mut self, limits: ConnLimits) -> Self {
        self.conn_limits = limits;
        self
    }

    /// Which finished tasks to keep, looked at every `every`.
    pub fn retention(mut self, retention: Retention, every: Duration) -> Self {
        self.retention = retention;
        self.prune_every = every;
        self
    }

    pub fn registry_auth(mut self, path: &Path) -> Self {
        self.registry_auth = Some(path.to_owned());
        self
    }

    /// Image GC on, with these settings.
    pub fn image_gc(mut self, settings: crate::images::GcSettings) -> Self {
        self.image_gc = Some(settings);
        self
    }

    pub fn image_source(mut self, source: mesh_protocol::image::ImageSource) -> Self {
        self.image_source = source;
        self
    }

    /// Drive this Docker endpoint instead of `DOCKER_HOST` or the local
    /// socket (tests run agents on engines of their own in one process).
    pub fn docker_host(mut self, endpoint: &str) -> Self {
        self.docker_host = Some(endpoint.to_owned());
        self
    }

    pub fn audit_log(mut self, path: &Path) -> Self {
        self.audit_log = Some(path.to_owned());
        self
    }

    pub fn max_log_bytes(mut self, n: u64) -> Self {
        self.max_log_bytes = n;
        self
    }

    /// The API serves HTTPS and takes client certificates.
    pub fn api_tls(mut self) -> Self {
        self.api_tls = true;
        self
    }

    /// The API asks for one of these tokens.
    pub fn api_tokens(mut self, tokens: mesh_protocol::token::Tokens) -> Self {
        self.api_tokens = Some(tokens);
        self
    }

    /// The API asks for the tokens of the file at `path`, and reads it
    /// again when it changes (a file of revocations alone is taken).
    pub fn api_tokens_from(mut self, path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        self.api_tokens = Some(read_tokens(&path, true)?);
        self.api_tokens_file = Some(path);
        Ok(self)
    }

    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = d;
        self
    }

    /// Applies the layers and validates.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let node_id = args
            .node_id
            .clone()
            .or(file.node_id)
            .unwrap_or_else(hostname);
        let max_queue = args
            .max_queue
            .or(file.max_queue)
            .unwrap_or(DEFAULT_MAX_QUEUE);
        if max_queue == 0 {
            return Err(ConfigError::MaxQueue);
        }
        let insecure_dev = args.insecure_dev || file.insecure_dev.unwrap_or(false);
        // --cleanup only talks to Docker: it needs a node id, not a mesh identity.
        let tls = if args.cleanup {
            TlsSource::InsecureDev
        } else {
            tls_setting(
                args.tls_ca.clone().or(file.tls_ca),
                args.tls_cert.clone().or(file.tls_cert),
                args.tls_key.clone().or(file.tls_key),
                insecure_dev,
            )?
        };
        let gossip_ms = args
            .gossip_interval_ms
            .or(file.gossip_interval_ms)
            .unwrap_or(500);
        if !(50..=60_000).contains(&gossip_ms) {
            return Err(ConfigError::GossipInterval);
        }
        let phi_threshold = args.phi_threshold.or(file.phi_threshold).unwrap_or(6.0);
        if !(1.0..=100.0).contains(&phi_threshold) {
            return Err(ConfigError::Phi);
        }
        let fence_after =
            args.fence_after
                .or(file.fence_after)
                .map_or(Ok(DEFAULT_FENCE_AFTER), |secs| {
                    if (1.0..=3600.0).contains(&secs) {
                        Ok(Duration::from_secs_f64(secs))
                    } else {
                        Err(ConfigError::FenceAfter)
                    }
                })?;
        let service_ports = match args.service_ports.clone().or(file.service_ports) {
            Some(s) => s.parse::<ServicePorts>()?,
            None => ServicePorts::default(),
        };
        let conn_limits = ConnLimits {
            total: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(crate::services::admission::DEFAULT_MAX_CONNECTIONS),
            per_source: args
                .max_connections_per_source
                .or(file.max_connections_per_source)
                .unwrap_or(crate::services::admission::DEFAULT_MAX_PER_SOURCE),
        };
        if conn_limits.total == 0 {
            return Err(ConfigError::MaxConnections("--max-connections"));
        }
        if conn_limits.per_source == 0 {
            return Err(ConfigError::MaxConnections("--max-connections-per-source"));
        }
        let mut retention = Retention::default();
        if let Some(d) = args.retain_finished.clone().or(file.retain_finished) {
            retention.max_age_ms = parse_duration_ms(&d).ok_or(ConfigError::RetainFinished(d))?;
        }
        if let Some(n) = args
            .retain_finished_records
            .or(file.retain_finished_records)
        {
            if n == 0 {
                return Err(ConfigError::RetainRecords);
            }
            retention.max_records = n;
        }
        let image_source = match args.image_source.clone().or(file.image_source) {
            Some(s) => s.parse().map_err(ConfigError::ImageSource)?,
            None => Default::default(),
        };
        let max_log_bytes = match args.max_log_bytes.clone().or(file.max_log_bytes) {
            Some(b) => parse_bytes(&b)
                .filter(|&n| n >= 1024)
                .ok_or(ConfigError::MaxLogBytes(b))?,
            None => crate::logs::DEFAULT_MAX_LOG_BYTES,
        };
        let image_gc = image_gc::settings(
            args.image_gc.clone().or(file.image_gc),
            args.image_gc_idle.clone().or(file.image_gc_idle),
            args.image_gc_all || file.image_gc_all.unwrap_or(false),
        )?;
        let seeds = if args.seeds.is_empty() {
            file.seeds.unwrap_or_default()
        } else {
            args.seeds.clone()
        };
        let api = args
            .api
            .or(file.api)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700)));
        let bind = args
            .bind
            .or(file.bind)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946)));
        let api_tls = !args.cleanup && (args.api_tls || file.api_tls.unwrap_or(false));
        let api_tokens_file = args
            .api_tokens
            .clone()
            .or(file.api_tokens)
            .filter(|_| !args.cleanup);
        let api_tokens = match &api_tokens_file {
            // With client certificates, a file of revocations alone is fine.
            Some(path) => Some(read_tokens(path, api_tls)?),
            None => None,
        };
        if api_tls && !matches!(tls, TlsSource::Files { .. }) {
            return Err(ConfigError::ApiTlsWithoutFiles);
        }
        if !args.cleanup {
            open_guard(api, bind, api_tokens.is_some() || api_tls, insecure_dev)?;
        }
        let mesh = MeshConfig {
            bind,
            advertise: args.advertise.or(file.advertise),
            seeds,
            cluster_id: args
                .cluster_id
                .clone()
                .or(file.cluster_id)
                .unwrap_or_else(|| "ganger".into()),
            tls,
            gossip_interval: Duration::from_millis(gossip_ms),
            phi_threshold,
            fence_after,
            rpc_version: mesh_protocol::rpc::VERSION,
        };
        Ok(Config {
            mesh,
            node_id: NodeId::new(node_id)?,
            api,
            api_tokens,
            api_tokens_file,
            api_tls,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            topology: args.topology.clone().or(file.topology),
            max_queue,
            network: args.network.clone().or(file.network),
            service_bind: args
                .service_bind
                .or(file.service_bind)
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            service_ports,
            conn_limits,
            retention,
            prune_every: PRUNE_EVERY,
            max_log_bytes,
            registry_auth: args.registry_auth.clone().or(file.registry_auth),
            image_gc,
            image_source,
            docker_host: args.docker_host.clone().or(file.docker_host),
            audit_log: args.audit_log.clone().or(file.audit_log),
            ping_interval: Duration::from_secs(2),
            clock: crate::clock::Clock::System,
            seed: None,
            disk: crate::disk::Disk::real(),
        })
    }
}

/// `24h`, `90m`, `30s`, `7d` or a number of seconds, in milliseconds.
fn parse_duration_ms(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    num.trim().parse::<u64>().ok()?.checked_mul(scale)
}

/// `16M`, `1G`, `64K` (binary units) or a number of bytes.
fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    num.trim().parse::<u64>().ok()?.checked_mul(scale)
}

fn tls_setting(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure_dev: bool,
) -> Result<TlsSource, ConfigError> {
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Ok(TlsSource::Files { ca, cert, key }),
        (None, None, None) if insecure_dev => Ok(TlsSource::InsecureDev),
        (None, None, None) => Err(ConfigError::NoTls),
        (None, _, _) => Err(ConfigError::PartialTls("--tls-ca")),
        (_, None, _) => Err(ConfigError::PartialTls("--tls-cert")),
        (_, _, None) => Err(ConfigError::PartialTls("--tls-key")),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The kernel's host name, made into a valid node id.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if clean.is_empty() {
        "node".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests;
