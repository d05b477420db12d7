//! meshd's flags and their `MESH_*` variables: the command-line layer of
//! the configuration (see `config.rs` for the layering and the checks).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Flags and their `MESH_*` variables. Every value is optional here so that
/// the file layer can fill what the command line leaves out.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "meshd",
    version = mesh_protocol::build_info::LONG_VERSION,
    about = "The Ganger agent: runs tasks as CPU-pinned containers on this Docker host"
)]
pub struct Args {
    /// TOML file with any of the settings below (keys as the flags, with '_').
    #[arg(long, env = "MESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's name in the mesh [default: the host name].
    #[arg(long, env = "MESH_NODE_ID")]
    pub node_id: Option<String>,
    /// Address of the HTTP control API [default: 127.0.0.1:7700].
    #[arg(long, env = "MESH_API")]
    pub api: Option<SocketAddr>,
    /// Where task records and kept logs live [default: /var/lib/meshd].
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// hwloc synthetic topology to use instead of the host's, e.g. 'numa:2 core:4 pu:2'.
    #[arg(long, env = "MESH_TOPOLOGY")]
    pub topology: Option<String>,
    /// Most tasks waiting for cores before submissions are refused [default: 1000].
    #[arg(long, env = "MESH_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Docker network task and service containers join [default: Docker's default bridge]. The agent must be able to reach service containers on it.
    #[arg(long, env = "MESH_NETWORK")]
    pub network: Option<String>,
    /// Address services' client listeners bind [default: 0.0.0.0].
    #[arg(long, env = "MESH_SERVICE_BIND")]
    pub service_bind: Option<std::net::IpAddr>,
    /// TCP ports services may listen on here, e.g. 8000-8999,9100; the agent's own ports are always left out [default: 1024-65535].
    #[arg(long, env = "MESH_SERVICE_PORTS")]
    pub service_ports: Option<String>,
    /// Most client connections this agent holds open, all services together [default: 10000].
    #[arg(long, env = "MESH_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Most client connections from one client address [default: 1000].
    #[arg(long, env = "MESH_MAX_CONNECTIONS_PER_SOURCE")]
    pub max_connections_per_source: Option<u32>,
    /// Forget finished tasks (records, keeper copies, kept output) this long after they ended, e.g. 24h, 90m, 7d [default: 24h].
    #[arg(long, env = "MESH_RETAIN_FINISHED")]
    pub retain_finished: Option<String>,
    /// Keep at most this many finished tasks (and as many keeper copies); the oldest go first [default: 10000].
    #[arg(long, env = "MESH_RETAIN_FINISHED_RECORDS")]
    pub retain_finished_records: Option<usize>,
    /// Most bytes of each attempt's output kept, e.g. 16M; beyond it the tail is kept [default: 16M].
    #[arg(long, env = "MESH_MAX_LOG_BYTES")]
    pub max_log_bytes: Option<String>,
    /// Registry credentials for pulls: Docker's config.json format, or a directory of such files. Never logged, gossiped or shown.
    #[arg(long, env = "MESH_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
    /// Image GC: keep the images this agent pulled within this many bytes, e.g. 10GiB, removing the least recently used idle ones (off by default).
    #[arg(long, env = "MESH_IMAGE_GC")]
    pub image_gc: Option<String>,
    /// With --image-gc: how long an image must have started no container here before it may be removed, e.g. 1h, 30m, 2d [default: 1h].
    #[arg(long, env = "MESH_IMAGE_GC_IDLE")]
    pub image_gc_idle: Option<String>,
    /// With --image-gc: also count and remove images this agent did not pull (built or loaded by others, pulled by hand).
    #[arg(long, env = "MESH_IMAGE_GC_ALL")]
    pub image_gc_all: bool,
    /// Where an image this host lacks comes from: peers-first (a peer that holds it, else its registry), registry-first, or registry-only [default: peers-first].
    #[arg(long, env = "MESH_IMAGE_SOURCE")]
    pub image_source: Option<String>,
    /// The Docker endpoint to drive, e.g. unix:///run/docker-b.sock [default: DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(long, env = "MESH_DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Append one JSON line per core allocation and release to this file (off by default).
    #[arg(long, env = "MESH_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// UDP address of the QUIC endpoint (gossip and agent-to-agent calls) [default: 0.0.0.0:7946].
    #[arg(long, env = "MESH_BIND")]
    pub bind: Option<SocketAddr>,
    /// Address peers use to reach this node [default: --bind, or this host's address when --bind is 0.0.0.0].
    #[arg(long, env = "MESH_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// A peer to join through, HOST:PORT (repeatable; DNS names are re-resolved).
    #[arg(long = "seed", env = "MESH_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Mesh name; agents of another cluster id are refused [default: ganger].
    #[arg(long, env = "MESH_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// The cluster CA certificate (PEM), from `meshctl tls ca create`.
    #[arg(long, env = "MESH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), from `meshctl tls cert create --node NAME`.
    #[arg(long, env = "MESH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "MESH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The API's bearer tokens: lines `USER ROLE SHA256-HEX`, from `meshctl token create`. Needed (or API TLS with client certificates) when --api is not loopback.
    #[arg(long, env = "MESH_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
    /// Serve the API over HTTPS with this node's certificate, and accept client certificates from the cluster CA carrying a role (`meshctl tls cert create --client NAME --role ROLE`) as credentials.
    #[arg(long, env = "MESH_API_TLS")]
    pub api_tls: bool,
    /// Run the mesh without certificates (any peer is accepted) and the API without credentials; only on loopback or private addresses. For development only.
    #[arg(long, env = "MESH_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// How often gossip rounds run, in milliseconds [default: 500].
    #[arg(long, env = "MESH_GOSSIP_INTERVAL_MS")]
    pub gossip_interval_ms: Option<u64>,
    /// Failure-detector threshold: a peer is dead once silent for about this many mean heartbeat intervals [default: 6].
    #[arg(long, env = "MESH_PHI_THRESHOLD")]
    pub phi_threshold: Option<f64>,
    /// Seconds after which a node that hears neither a task's keeper nor most of the mesh stops the task's attempt (it may be re-placed on the other side of a split) [default: 10].
    #[arg(long, env = "MESH_FENCE_AFTER")]
    pub fence_after: Option<f64>,
    /// How log lines are written on stdout: text (coloured only on a terminal) or json (one object per line, for journald, Loki and other log shippers); a flag or variable only, not a config file key [default: text].
    #[arg(long, env = "MESH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Remove every container this node created, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// With --cleanup: remove the containers of every node on this Docker host.
    #[arg(long, requires = "cleanup")]
    pub all_nodes: bool,
}

/// How meshd writes its log lines (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stdout is a terminal.
    #[default]
    Text,
    /// One JSON object per line (time, level, target, message, fields).
    Json,
}
