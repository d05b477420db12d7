//! The service commands: `service create|ls|show|rm`, `services` and
//! `connections`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use mesh_protocol::service::ServiceRequest;
use serde_json::Value;

use crate::client::Client;
use crate::output::{note, print, print_json};
use crate::render;
use crate::run::Error;

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
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
    /// Close a client connection with no byte either way for this long [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Close a client connection open this long, busy or not [default: no limit].
    #[arg(long, value_parser = parse_duration)]
    pub total_timeout: Option<Duration>,
    /// Pool mode: per-core, per-numa or a count [default: per-core].
    #[arg(long)]
    pub instances: Option<String>,
    /// KEY=VALUE for the containers' environment (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// When each node pulls the image: missing (when the host lacks it; every node starts fetching it when the service is declared), always, never [default: missing].
    #[arg(long, value_name = "POLICY")]
    pub pull: Option<mesh_protocol::image::PullPolicy>,
    /// The command, overriding the image's (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl ServiceCreateArgs {
    pub fn request(&self) -> ServiceRequest {
        ServiceRequest {
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
            idle_timeout_ms: self.idle_timeout.map(|d| d.as_millis() as u64),
            total_timeout_ms: self.total_timeout.map(|d| d.as_millis() as u64),
            instances: self.instances.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            pull: self.pull,
        }
    }
}

/// Carries out a service command.
pub(crate) async fn run(client: &Client, command: ServicesCommand) -> Result<ExitCode, Error> {
    match command {
        ServicesCommand::Service(ServiceCommand::Create(args)) => {
            let def = client.create_service(&args.request()).await?;
            note(&format!(
                "service {} created: every agent listens on port {} ({})",
                def.spec.name, def.spec.listen, def.spec.mode
            ));
        }
        ServicesCommand::Service(ServiceCommand::Rm { name }) => {
            client.remove_service(&name).await?;
            note(&format!(
                "service {name} removed: agents stop listening; open connections finish"
            ));
        }
        ServicesCommand::Service(ServiceCommand::Ls { json: true })
        | ServicesCommand::Services { json: true } => {
            print_json(&client.services::<Value>().await?)?
        }
        ServicesCommand::Service(ServiceCommand::Ls { json: false })
        | ServicesCommand::Services { json: false } => {
            print(&render::services(&client.services::<Vec<_>>().await?))?
        }
        ServicesCommand::Service(ServiceCommand::Show { name, json: true }) => {
            print_json(&client.service::<Value>(&name).await?)?
        }
        ServicesCommand::Service(ServiceCommand::Show { name, json: false }) => {
            print(&render::service(&client.service(&name).await?))?
        }
        ServicesCommand::Connections { json: true } => {
            print_json(&client.connections::<Value>().await?)?
        }
        ServicesCommand::Connections { json: false } => {
            print(&render::connections(&client.connections::<Vec<_>>().await?))?
        }
    }
    Ok(ExitCode::SUCCESS)
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
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration such as 500ms, 10s, 2m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::{AgentCommand, Command};

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
            "--idle-timeout",
            "2m",
            "--total-timeout",
            "1.5h",
            "--",
            "echo",
            "--port",
            "7000",
        ])
        .unwrap();
        let Command::Agent(AgentCommand::Services(ServicesCommand::Service(
            ServiceCommand::Create(args),
        ))) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        let r = args.request();
        assert_eq!((r.port, r.listen, r.warm), (7000, 9000, Some(2)));
        assert_eq!(r.queue_timeout_ms, Some(500));
        assert_eq!(
            (r.idle_timeout_ms, r.total_timeout_ms),
            (Some(120_000), Some(5_400_000))
        );
        assert_eq!(r.command, vec!["echo", "--port", "7000"]);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }
}
