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
use crate::{tls, token};

/// Why a command could not be carried out; main prints it after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Node(#[from] NodeUrlError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Token(#[from] token::TokenFileError),
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
        Command::Token(ref command) => {
            print(&token::run(command)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(command) => {
            let env = std::env::var("MESH_TOKEN").ok();
            let bearer = token::load(cli.token_file.as_deref(), env.as_deref())?;
            let tls = tls::client_tls(cli.ca.as_deref(), cli.cert.as_deref(), cli.key.as_deref())?;
            // `cli.agent()`, without borrowing the moved-out command.
            let node = cli.node.parse()?;
            let client = match &tls {
                Some(tls) => Client::with_tls(node, tls)?,
                None => Client::new(node)?,
            }
            .with_token(bearer);
            commands::run(&client, command).await
        }
    }
}
