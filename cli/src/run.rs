//! Carries out one command: an agent command through [`Client`] (see
//! `commands`), or `meshctl tls`, which writes certificate files.

use std::io;
use std::process::ExitCode;
use std::time::SystemTime;

use mesh_protocol::task::SpecError;

use crate::client::{Client, ClientError};
use crate::commands::{self, Cli, Command};
use crate::node_url::NodeUrlError;
use crate::output::print;
use crate::tls;

/// Why a command could not be carried out; main prints it after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Node(#[from] NodeUrlError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("invalid task: {0}")]
    Spec(#[from] SpecError),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    #[error("cannot format the agent's answer as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs one command; `Ok` carries the exit code it calls for.
pub async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Tls(ref command) => {
            print(&tls::run(command, SystemTime::now())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(command) => {
            // `cli.agent()`, without borrowing the moved-out command.
            let client = Client::new(cli.node.parse()?)?;
            commands::run(&client, command).await
        }
    }
}
