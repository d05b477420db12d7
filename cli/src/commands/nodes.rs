//! The node and mesh commands: `node`, `health`, `peers`, `drain`,
//! `undrain` and `events` (in `events.rs`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::client::Client;
use crate::output::{print, print_json};
use crate::render;
use crate::run::Error;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
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
    /// What happened in the mesh and why: tasks accepted, placed, started,
    /// exited, re-placed; peers joining, dying, draining; services and their
    /// containers. From every live node, oldest first.
    Events(super::events::EventsArgs),
}

/// Carries out a node command.
pub(crate) async fn run(client: &Client, command: NodeCommand) -> Result<ExitCode, Error> {
    match command {
        NodeCommand::Node { json: true } => print_json(&client.node_raw().await?)?,
        NodeCommand::Node { json: false } => print(&render::node(&client.node().await?))?,
        NodeCommand::Peers { json: true } => print_json(&client.peers_raw().await?)?,
        NodeCommand::Peers { json: false } => print(&render::peers(&client.peers().await?))?,
        NodeCommand::Drain { target, migrate } => {
            client.set_draining(&target, true, migrate).await?;
            print(&format!("{target} is draining: no new tasks start there\n"))?;
        }
        NodeCommand::Undrain { target } => {
            client.set_draining(&target, false, false).await?;
            print(&format!("{target} takes tasks again\n"))?;
        }
        NodeCommand::Events(args) => super::events::run(client, args).await?,
        NodeCommand::Health => {
            let health = client.health().await?;
            print(&render::health(&health))?;
            if !health.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
