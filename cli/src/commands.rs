//! meshctl's command line: flags and subcommands, parsed into protocol types
//! at the boundary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::ids::IdError;
use mesh_protocol::task::SpecError;
use mesh_protocol::{NodeId, TaskId, TaskSpec, TaskState};

use crate::node_url::{DEFAULT_NODE, NodeUrl, NodeUrlError};

/// Where `meshctl tls` keeps the CA and node certificates unless told.
pub const DEFAULT_TLS_DIR: &str = "./mesh-tls";

/// Inspect and drive a Ganger mesh through an agent's control API.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
pub struct Cli {
    // Kept as checked text rather than a `NodeUrl`: `tls cert create` has
    // its own `--node` (a node's name), and clap stores one value of one type
    // per flag id across a command and its subcommands, so that name lands
    // here too. Use `Cli::agent`.
    /// The agent to talk to: http://host:port, host:port, or host (port 7700).
    #[arg(
        long,
        global = true,
        env = "MESH_NODE",
        default_value = DEFAULT_NODE,
        value_name = "URL",
        value_parser = agent_address
    )]
    pub node: String,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The agent the agent commands talk to, from `--node` or `MESH_NODE`.
    pub fn agent(&self) -> Result<NodeUrl, NodeUrlError> {
        self.node.parse()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Agent(AgentCommand),
    /// Create the cluster's TLS certificate authority and node certificates.
    #[command(subcommand)]
    Tls(TlsCommand),
}

/// The commands that talk to an agent.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Submit a batch task; prints only its id, e.g. `id=$(meshctl submit img)`.
    Submit(SubmitArgs),
    /// List the tasks the agent knows.
    Tasks {
        /// Print the agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show only tasks in these states (repeat or separate with commas).
        #[arg(long, value_name = "STATE", value_parser = parse_state, value_delimiter = ',')]
        state: Vec<TaskState>,
    },
    /// Show one task in detail.
    Task {
        id: TaskId,
        /// Print the agent's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's container output.
    Logs {
        id: TaskId,
        /// Keep printing output as the container writes it, until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Kill a task: at once if queued, else by stopping its container.
    Kill { id: TaskId },
    /// Show the agent's node: topology, Docker, queue and core holders.
    Node {
        /// Print the agent's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Check the agent and its Docker; exits 1 when not ok.
    Health,
    /// Every node of the mesh as this agent sees it: state, addresses, load.
    Peers {
        /// Print the agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop placing tasks on a node; its queued tasks move to other nodes as
    /// they find room, its running tasks finish.
    Drain {
        /// The node to drain (its id, as `meshctl peers` shows it).
        #[arg(value_name = "NODE")]
        target: String,
        /// Also stop its running tasks now so they run again elsewhere (as
        /// new attempts) instead of finishing there.
        #[arg(long)]
        migrate: bool,
    },
    /// Let a drained node take tasks again.
    Undrain {
        #[arg(value_name = "NODE")]
        target: String,
    },
    /// Declare, list, show or remove services (`meshctl service --help`).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Every service with its containers, warm containers, open and queued
    /// connections on every node.
    Services {
        /// Print the agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Open client connections across the mesh.
    Connections {
        /// Print the agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Wait until a task ends and print its state; exits 0 if it succeeded,
    /// 1 if it ended otherwise, 2 on timeout.
    Wait {
        id: TaskId,
        /// Give up after this many seconds (fractions allowed).
        #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
        timeout: Option<Duration>,
    },
}

/// `meshctl service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Declare a service: every agent listens on --listen and serves each
    /// client connection with a container of IMAGE reached on --port.
    Create(Box<ServiceCreateArgs>),
    /// List the services (same as `meshctl services`).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One service with every node's figures.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a service: agents stop listening, open connections finish,
    /// then its containers go.
    Rm { name: String },
}

/// `meshctl service create`'s flags.
#[derive(Debug, Args)]
pub struct ServiceCreateArgs {
    pub name: String,
    #[arg(long)]
    pub image: String,
    /// The port the container listens on.
    #[arg(long)]
    pub port: u16,
    /// The port every agent listens on for clients.
    #[arg(long)]
    pub listen: u16,
    /// per-connection (a fresh container per connection) or pool
    /// (long-running instances, least connections).
    #[arg(long, default_value = "per-connection")]
    pub mode: String,
    /// Cores each container holds, on one NUMA node [default: 1].
    #[arg(long)]
    pub cores: Option<u32>,
    /// Memory limit per container, e.g. 256M.
    #[arg(long)]
    pub memory: Option<String>,
    /// Per-connection: started, ready containers each node keeps waiting.
    #[arg(long)]
    pub warm: Option<u32>,
    /// Most containers of the service per node (warm ones count) [default: 64].
    #[arg(long)]
    pub max_per_node: Option<u32>,
    /// Most connections waiting at a node for a container [default: 128].
    #[arg(long)]
    pub queue: Option<u32>,
    /// How long a connection may wait, e.g. 10s or 500ms [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub queue_timeout: Option<Duration>,
    /// How long a new container may take to accept connections [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub ready_timeout: Option<Duration>,
    /// Fresh containers to try after one fails to start, per connection [default: 2].
    #[arg(long)]
    pub ready_retries: Option<u32>,
    /// Pool mode: per-core, per-numa or a count [default: per-core].
    #[arg(long)]
    pub instances: Option<String>,
    /// KEY=VALUE for the containers' environment (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// The command, overriding the image's (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl ServiceCreateArgs {
    pub fn request(&self) -> mesh_protocol::service::ServiceRequest {
        mesh_protocol::service::ServiceRequest {
            name: self.name.clone(),
            image: self.image.clone(),
            port: self.port,
            listen: self.listen,
            mode: Some(self.mode.clone()),
            cores: self.cores,
            memory: self.memory.clone(),
            warm: self.warm,
            max_per_node: self.max_per_node,
            queue: self.queue,
            queue_timeout_ms: self.queue_timeout.map(|d| d.as_millis() as u64),
            ready_timeout_ms: self.ready_timeout.map(|d| d.as_millis() as u64),
            ready_retries: self.ready_retries,
            instances: self.instances.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
        }
    }
}

/// `meshctl tls …`: files only, no agent involved.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The cluster's certificate authority.
    #[command(subcommand)]
    Ca(TlsCaCommand),
    /// Node certificates, signed by the cluster's CA.
    #[command(subcommand)]
    Cert(TlsCertCommand),
}

#[derive(Debug, Subcommand)]
pub enum TlsCaCommand {
    /// Create a CA: DIR/ca.pem (give to every node) and DIR/ca-key.pem
    /// (keep secret: it admits nodes).
    Create(CaCreateArgs),
}

#[derive(Debug, Subcommand)]
pub enum TlsCertCommand {
    /// Create a node's certificate, signed by the CA: OUT/NAME.pem and
    /// OUT/NAME-key.pem.
    Create(CertCreateArgs),
}

/// `meshctl tls ca create`'s flags.
#[derive(Debug, Args)]
pub struct CaCreateArgs {
    /// The directory to write ca.pem and ca-key.pem to (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TLS_DIR)]
    pub dir: PathBuf,
    /// The cluster's name, shown in the CA's name.
    #[arg(long, value_name = "NAME", default_value = "ganger")]
    pub cluster: String,
    /// How many days the CA is valid.
    #[arg(long, value_name = "N", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `meshctl tls cert create`'s flags.
#[derive(Debug, Args)]
pub struct CertCreateArgs {
    // Checked text under the global `--node`'s id (see `Cli::node`); use
    // `CertCreateArgs::node`.
    /// The node the certificate is for: its node id (meshd's --node-id).
    #[arg(long = "node", id = "node", value_name = "NAME", value_parser = node_name)]
    pub node: String,
    /// The directory holding ca.pem and ca-key.pem.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TLS_DIR)]
    pub dir: PathBuf,
    /// The directory to write NAME.pem and NAME-key.pem to [default: --dir].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How many days the certificate is valid.
    #[arg(long, value_name = "N", default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

impl CertCreateArgs {
    /// The node the certificate is for.
    pub fn node(&self) -> Result<NodeId, IdError> {
        NodeId::new(self.node.as_str())
    }

    /// Where the node's files go.
    pub fn out_dir(&self) -> &PathBuf {
        self.out.as_ref().unwrap_or(&self.dir)
    }
}

/// `meshctl submit`'s flags, one per field of `SubmitRequest`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Physical cores to pin the task to [default: 1].
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Memory limit: bytes or a size such as 512M or 2G.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// An environment variable for the container (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A label on the task (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// How often to retry after a failed attempt [default: 0].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// A name for people; ids stay the handle.
    #[arg(long)]
    pub name: Option<String>,
    /// Higher runs first [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Submit N copies as one array: each gets MESH_TASK_INDEX (0..N) and
    /// MESH_TASK_COUNT; prints the array's id (kill it to kill all).
    #[arg(long, value_name = "N")]
    pub array: Option<u32>,
    /// Start only after these tasks succeeded; fail if one of them does not.
    #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',')]
    pub after: Vec<TaskId>,
    /// A local Docker image, e.g. mesh-testsvc:latest.
    pub image: String,
    /// The command to run instead of the image's, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl SubmitArgs {
    /// The request to send, checked with the same rules the agent applies,
    /// so a bad flag is reported before anything is sent.
    pub fn into_request(self) -> Result<SubmitRequest, SpecError> {
        let request = SubmitRequest {
            image: self.image,
            command: self.command,
            env: self.env,
            cores: self.cores,
            memory: self.memory,
            labels: self.labels.into_iter().collect(),
            retries: self.retries,
            name: self.name,
            priority: self.priority,
            array: self.array,
            after: self.after,
        };
        TaskSpec::try_from(request.clone())?;
        Ok(request)
    }
}

/// Checks an agent address, keeping the text (see [`Cli::node`]).
fn agent_address(s: &str) -> Result<String, NodeUrlError> {
    s.parse::<NodeUrl>().map(|_| s.to_owned())
}

/// Checks a node id, keeping the text (see [`CertCreateArgs::node`]).
fn node_name(s: &str) -> Result<String, IdError> {
    NodeId::new(s).map(|_| s.to_owned())
}

/// `queued`, `Running`, …: the protocol's own names, so new states need no
/// change here.
fn parse_state(s: &str) -> Result<TaskState, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_lowercase()))
        .map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds such as 30 or 0.5"))
}

/// `500ms`, `10s`, `2m`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration such as 500ms, 10s or 2m"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn service_create_parses_flags_and_the_command() {
        let cli = parse(&[
            "service",
            "create",
            "echo",
            "--image",
            "img",
            "--port",
            "7000",
            "--listen",
            "9000",
            "--warm",
            "2",
            "--queue-timeout",
            "500ms",
            "--",
            "echo",
            "--port",
            "7000",
        ])
        .unwrap();
        let Command::Agent(AgentCommand::Service(ServiceCommand::Create(args))) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        let r = args.request();
        assert_eq!((r.port, r.listen, r.warm), (7000, 9000, Some(2)));
        assert_eq!(r.queue_timeout_ms, Some(500));
        assert_eq!(r.command, vec!["echo", "--port", "7000"]);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn submit_builds_the_request() {
        let cli = parse(&[
            "submit",
            "--cores",
            "2",
            "--memory",
            "512M",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--label",
            "team=ml",
            "--retries",
            "3",
            "--name",
            "job",
            "--priority",
            "-5",
            "--node",
            "n:1",
            "img:1",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        assert_eq!(cli.agent().unwrap().to_string(), "http://n:1");
        let Command::Agent(AgentCommand::Submit(args)) = cli.command else {
            panic!("not submit");
        };
        let r = args.into_request().unwrap();
        assert_eq!(r.image, "img:1");
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert_eq!(r.env, ["A=1", "B=x=y"]);
        assert_eq!(r.cores, Some(2));
        assert_eq!(r.memory.as_deref(), Some("512M"));
        assert_eq!(r.labels.get("team").map(String::as_str), Some("ml"));
        assert_eq!((r.retries, r.priority), (Some(3), Some(-5)));
        assert_eq!(r.name.as_deref(), Some("job"));
    }

    #[test]
    fn submit_refuses_bad_specs_before_sending() {
        let Command::Agent(AgentCommand::Submit(args)) =
            parse(&["submit", "--memory", "lots", "img"])
                .unwrap()
                .command
        else {
            panic!("not submit");
        };
        assert!(args.into_request().is_err());
        assert!(parse(&["submit", "--label", "novalue", "img"]).is_err());
        assert!(parse(&["submit", "img", "cmd-without-dashes"]).is_err());
    }

    #[test]
    fn states_and_timeouts_parse() {
        let cli = parse(&["tasks", "--state", "running,Queued", "--state", "failed"]).unwrap();
        let Command::Agent(AgentCommand::Tasks { state, .. }) = cli.command else {
            panic!("not tasks");
        };
        assert_eq!(
            state,
            [TaskState::Running, TaskState::Queued, TaskState::Failed]
        );
        assert!(parse(&["tasks", "--state", "sleeping"]).is_err());
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn tls_cert_create_takes_its_own_node_flag() {
        let cli = parse(&[
            "--node", "agent:1", "tls", "cert", "create", "--node", "node-1",
        ])
        .unwrap();
        let Command::Tls(TlsCommand::Cert(TlsCertCommand::Create(args))) = cli.command else {
            panic!("not tls cert create");
        };
        assert_eq!(args.node().unwrap().as_str(), "node-1");
        assert_eq!(args.dir, PathBuf::from(DEFAULT_TLS_DIR));
        assert_eq!(args.out_dir(), &PathBuf::from(DEFAULT_TLS_DIR));
        assert_eq!((args.days, args.force), (825, false));

        let cli = parse(&[
            "tls", "cert", "create", "--node", "n", "--dir", "a", "--out", "b",
        ])
        .unwrap();
        let Command::Tls(TlsCommand::Cert(TlsCertCommand::Create(args))) = cli.command else {
            panic!("not tls cert create");
        };
        assert_eq!(args.out_dir(), &PathBuf::from("b"));

        assert!(parse(&["tls", "cert", "create"]).is_err());
        assert!(parse(&["--node", "agent:1", "tls", "cert", "create"]).is_err());
        assert!(parse(&["tls", "cert", "create", "--node", "../x"]).is_err());
        assert!(parse(&["tls", "cert", "create", "--node", "n", "--days", "0"]).is_err());
    }

    #[test]
    fn tls_ca_create_defaults() {
        let cli = parse(&["tls", "ca", "create"]).unwrap();
        let Command::Tls(TlsCommand::Ca(TlsCaCommand::Create(args))) = cli.command else {
            panic!("not tls ca create");
        };
        assert_eq!(args.dir, PathBuf::from(DEFAULT_TLS_DIR));
        assert_eq!(args.cluster, "ganger");
        assert_eq!((args.days, args.force), (3650, false));
    }

    #[test]
    fn bad_agent_addresses_are_usage_errors() {
        assert!(parse(&["--node", "https://x", "health"]).is_err());
        assert!(parse(&["health", "--node", "https://x"]).is_err());
    }

    #[test]
    fn task_ids_are_validated() {
        assert!(parse(&["task", "t1"]).is_ok());
        assert!(parse(&["task", "../x"]).is_err());
    }
}
