//! meshctl's command line, one file per command group -- `tasks`, `nodes`
//! (the node and the mesh), `services`, `tls` -- each with its flags,
//! parsed into protocol types at the boundary, and the code that carries
//! its agent commands out. This module holds the top level and dispatches.

mod events;
mod nodes;
mod services;
mod tasks;
mod tls;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use nodes::NodeCommand;
pub use services::{ServiceCommand, ServiceCreateArgs, ServicesCommand};
pub use tasks::{SubmitArgs, TaskCommand};
pub use tls::{
    CaCreateArgs, CertCreateArgs, DEFAULT_TLS_DIR, TlsCaCommand, TlsCertCommand, TlsCommand,
};
pub use token::{TokenCommand, TokenCreateArgs};

use crate::client::Client;
use crate::node_url::{DEFAULT_NODE, NodeUrl, NodeUrlError};
use crate::run::Error;

/// Inspect and drive a Ganger mesh through an agent's control API.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version = mesh_protocol::build_info::LONG_VERSION)]
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

    /// A file holding the API bearer token to send (from `meshctl token create`); beats MESH_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// The cluster CA certificate (PEM): talk HTTPS to an agent started with --api-tls, checking its certificate against this CA.
    #[arg(long, global = true, env = "MESH_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    /// A client certificate (PEM) from `meshctl tls cert create --client NAME --role ROLE`, shown to the agent as this user's credential; needs --ca and --key.
    #[arg(
        long,
        global = true,
        env = "MESH_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<std::path::PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "MESH_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<std::path::PathBuf>,

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
    /// Create bearer tokens for the agents' API.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// The commands that talk to an agent, by group; on the command line they
/// all sit at the top level (`meshctl submit`, `meshctl peers`, …).
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    #[command(flatten)]
    Tasks(TaskCommand),
    #[command(flatten)]
    Nodes(NodeCommand),
    #[command(flatten)]
    Services(ServicesCommand),
}

/// Carries out an agent command; `Ok` carries the exit code it calls for.
pub(crate) async fn run(client: &Client, command: AgentCommand) -> Result<ExitCode, Error> {
    match command {
        AgentCommand::Tasks(c) => tasks::run(client, c).await,
        AgentCommand::Nodes(c) => nodes::run(client, c).await,
        AgentCommand::Services(c) => services::run(client, c).await,
    }
}

/// Checks an agent address, keeping the text (see [`Cli::node`]).
fn agent_address(s: &str) -> Result<String, NodeUrlError> {
    s.parse::<NodeUrl>().map(|_| s.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Parses `meshctl ARGS…`.
    pub(crate) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_agent_addresses_are_usage_errors() {
        assert!(parse(&["--node", "ftp://x", "health"]).is_err());
        assert!(parse(&["health", "--node", "ftp://x"]).is_err());
    }
}
