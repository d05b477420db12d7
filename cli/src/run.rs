//! Carries out one command: asks the agent through [`Client`] (or, for
//! `meshctl tls`, writes certificate files), renders the answer and writes it
//! out. The only place that touches stdout and the clock.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mesh_protocol::task::SpecError;
use mesh_protocol::{TaskId, TaskState};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::client::{Client, ClientError, Killed};
use crate::commands::{AgentCommand, Cli, Command, ServiceCommand};
use crate::node_url::NodeUrlError;
use crate::{render, tls};
use serde_json::Value;

/// How often `wait` asks for the task's state.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// `wait`'s exit code when the time ran out.
const EXIT_TIMEOUT: u8 = 2;

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
            agent(&client, command).await
        }
    }
}

/// Runs one of the commands that talk to the agent.
async fn agent(client: &Client, command: AgentCommand) -> Result<ExitCode, Error> {
    match command {
        AgentCommand::Submit(args) => {
            let request = args.into_request()?;
            let answer = client.submit(&request).await?;
            print(&format!("{}\n", answer.id))?;
        }
        AgentCommand::Tasks { json, state } => {
            if json {
                let mut tasks = client.tasks_raw().await?;
                if !state.is_empty() {
                    tasks.retain(|t| {
                        let s = t.get("state").and_then(|s| s.as_str());
                        state.iter().any(|want| Some(want.as_str()) == s)
                    });
                }
                print_json(&tasks)?;
            } else {
                let mut tasks = client.tasks().await?;
                if !state.is_empty() {
                    tasks.retain(|t| state.contains(&t.state));
                }
                print(&render::tasks_table(&tasks, now_ms()))?;
            }
        }
        AgentCommand::Task { id, json: true } => print_json(&client.task_raw(&id).await?)?,
        AgentCommand::Task { id, json: false } => {
            print(&render::task(&client.task(&id).await?, now_ms()))?;
        }
        AgentCommand::Logs { id, follow } => logs(client, &id, follow).await?,
        AgentCommand::Kill { id } => {
            let records = match client.kill(&id).await? {
                Killed::One(r) => vec![*r],
                Killed::Array(rs) => rs,
            };
            for record in records {
                let rid = &record.id;
                if record.state == TaskState::Killed {
                    print(&format!("{rid} killed\n"))?;
                } else {
                    print(&format!(
                        "{rid}: kill requested (state: {})\n",
                        record.state
                    ))?;
                }
            }
        }
        AgentCommand::Node { json: true } => print_json(&client.node_raw().await?)?,
        AgentCommand::Node { json: false } => print(&render::node(&client.node().await?))?,
        AgentCommand::Peers { json: true } => print_json(&client.peers_raw().await?)?,
        AgentCommand::Drain { target, migrate } => {
            client.set_draining(&target, true, migrate).await?;
            println!("{target} is draining: no new tasks start there");
        }
        AgentCommand::Undrain { target } => {
            client.set_draining(&target, false, false).await?;
            println!("{target} takes tasks again");
        }
        AgentCommand::Peers { json: false } => print(&render::peers(&client.peers().await?))?,
        AgentCommand::Health => {
            let health = client.health().await?;
            print(&render::health(&health))?;
            if !health.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        AgentCommand::Wait { id, timeout } => return wait(client, &id, timeout).await,
        AgentCommand::Service(ServiceCommand::Create(args)) => {
            let def = client.create_service(&args.request()).await?;
            note(&format!(
                "service {} created: every agent listens on port {} ({})",
                def.spec.name, def.spec.listen, def.spec.mode
            ));
        }
        AgentCommand::Service(ServiceCommand::Rm { name }) => {
            client.remove_service(&name).await?;
            note(&format!(
                "service {name} removed: agents stop listening; open connections finish"
            ));
        }
        AgentCommand::Service(ServiceCommand::Ls { json: true })
        | AgentCommand::Services { json: true } => print_json(&client.services::<Value>().await?)?,
        AgentCommand::Service(ServiceCommand::Ls { json: false })
        | AgentCommand::Services { json: false } => {
            print(&render::services(&client.services::<Vec<_>>().await?))?
        }
        AgentCommand::Service(ServiceCommand::Show { name, json: true }) => {
            print_json(&client.service::<Value>(&name).await?)?
        }
        AgentCommand::Service(ServiceCommand::Show { name, json: false }) => {
            print(&render::service(&client.service(&name).await?))?
        }
        AgentCommand::Connections { json: true } => {
            print_json(&client.connections::<Value>().await?)?
        }
        AgentCommand::Connections { json: false } => {
            print(&render::connections(&client.connections::<Vec<_>>().await?))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies the log stream to stdout chunk by chunk, flushing each, so
/// `--follow` shows output as the container writes it.
async fn logs(client: &Client, id: &TaskId, follow: bool) -> Result<(), Error> {
    let mut stream = std::pin::pin!(client.logs(id, follow).await?);
    let mut stdout = tokio::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let written = match stdout.write_all(&chunk).await {
            Ok(()) => stdout.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {}
            // The reader went away (`meshctl logs t1 | head`): done, not failed.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Polls the task until it ends; prints the final state.
async fn wait(client: &Client, id: &TaskId, timeout: Option<Duration>) -> Result<ExitCode, Error> {
    let mut last = None;
    let poll = async {
        loop {
            let record = client.task(id).await?;
            last = Some(record.state);
            if record.state.is_terminal() {
                return Ok::<_, Error>(record);
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    };
    let record = match timeout {
        None => poll.await?,
        Some(limit) => match tokio::time::timeout(limit, poll).await {
            Ok(record) => record?,
            Err(_) => {
                let state = last.map_or("unknown", TaskState::as_str);
                note(&format!(
                    "timed out after {limit:?} waiting for task {id} (state: {state})"
                ));
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
        },
    };
    print(&format!("{}\n", record.state))?;
    if record.state == TaskState::Succeeded {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(message) = &record.message {
        note(&format!("task {id} {}: {message}", record.state));
    }
    Ok(ExitCode::FAILURE)
}

/// Writes to stdout; a closed pipe ends the output quietly.
fn print(text: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Error> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// A remark for the person at the terminal, on stderr.
fn note(text: &str) {
    // Nothing better to do if stderr is gone.
    let _ = writeln!(io::stderr(), "{text}");
}

fn now_ms() -> u64 {
    // A clock before 1970 is a broken host; ages then read as "0s".
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
