//! The task commands: `submit`, `tasks`, `task`, `logs`, `kill` and `wait`.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use mesh_protocol::api::{CopyStatus, SubmitRequest};
use mesh_protocol::image::PullPolicy;
use mesh_protocol::task::SpecError;
use mesh_protocol::{TaskId, TaskSpec, TaskState};
use tokio::io::AsyncWriteExt;

use crate::client::{Client, ClientError, Killed};
use crate::output::{StatusLine, note, now_ms, print, print_json};
use crate::render;
use crate::run::Error;

/// `wait`'s exit code when the time ran out.
const EXIT_TIMEOUT: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
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
    /// Wait until a task ends and print its state; exits 0 if it succeeded,
    /// 1 if it ended otherwise, 2 on timeout.
    Wait {
        id: TaskId,
        /// Give up after this many seconds (fractions allowed).
        #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
        timeout: Option<Duration>,
    },
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
    /// When the node that runs it pulls the image: missing (when the host
    /// lacks it), always (follow a moved tag) or never [default: missing].
    #[arg(long, value_name = "POLICY")]
    pub pull: Option<PullPolicy>,
    /// Wait until it ends, showing its progress (queued, pulling with a
    /// bar, running) on stderr; then print its state and exit as `wait`
    /// does: 0 if it succeeded, 1 if not, 2 on timeout.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, requires = "wait")]
    pub timeout: Option<Duration>,
    /// A Docker image, e.g. mesh-testsvc:latest or registry:5000/team/app:1;
    /// pulled on the node that runs it when that host lacks it.
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
            pull: self.pull,
        };
        TaskSpec::try_from(request.clone())?;
        Ok(request)
    }
}

/// Carries out a task command.
pub(crate) async fn run(client: &Client, command: TaskCommand) -> Result<ExitCode, Error> {
    match command {
        TaskCommand::Submit(args) => {
            let (wait_for_end, timeout) = (args.wait, args.timeout);
            let request = args.into_request()?;
            let answer = client.submit(&request).await?;
            print(&format!("{}\n", answer.id))?;
            for member in std::iter::once(&answer).chain(&answer.members) {
                if let Some(copy @ CopyStatus::NotKept { .. }) = &member.copy {
                    note(&format!(
                        "warning: {}: the keeper's copy: {copy}; it has one copy until its runner's next push is kept",
                        member.id
                    ));
                }
            }
            if wait_for_end {
                // An array: each member in turn; the worst outcome decides.
                let ids: Vec<&TaskId> = if answer.members.is_empty() {
                    vec![&answer.id]
                } else {
                    answer.members.iter().map(|m| &m.id).collect()
                };
                let mut code = ExitCode::SUCCESS;
                for id in ids {
                    let c = wait(client, id, timeout).await?;
                    if c != ExitCode::SUCCESS {
                        code = c;
                    }
                }
                return Ok(code);
            }
        }
        TaskCommand::Tasks { json, state } => {
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
        TaskCommand::Task { id, json: true } => print_json(&client.task_raw(&id).await?)?,
        TaskCommand::Task { id, json: false } => {
            let view = client.task_view(&id).await?;
            let copy = client.task_copy(&id).await.map_err(|e| e.to_string());
            print(&render::task_view(
                &view,
                copy.as_ref().map_err(String::as_str),
                now_ms(),
            ))?;
        }
        TaskCommand::Logs { id, follow } => logs(client, &id, follow).await?,
        TaskCommand::Kill { id } => {
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
        TaskCommand::Wait { id, timeout } => return wait(client, &id, timeout).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies the log stream to stdout chunk by chunk, flushing each, so
/// `--follow` shows output as the container writes it.
async fn logs(client: &Client, id: &TaskId, follow: bool) -> Result<(), Error> {
    if follow {
        // Until its container starts there is no output: show why it
        // waits (queued, pulling with a bar) on stderr meanwhile.
        let status = StatusLine::new();
        client
            .wait_for(id, None, |r| {
                status.show(&render::progress_line(r));
                !matches!(r.shown_state(), "queued" | "starting" | "pulling")
            })
            .await?;
        status.done();
    }
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

/// Waits until the task ends; prints the final state.
async fn wait(client: &Client, id: &TaskId, timeout: Option<Duration>) -> Result<ExitCode, Error> {
    let status = StatusLine::new();
    let waited = client
        .wait_for(id, timeout, |r| {
            // The end is printed on stdout below, not twice.
            let ended = r.state.is_terminal();
            if !ended {
                status.show(&render::progress_line(r));
            }
            ended
        })
        .await;
    status.done();
    let record = match waited {
        Ok(record) => record,
        Err(timeout @ ClientError::WaitTimeout { .. }) => {
            note(&timeout.to_string());
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        Err(e) => return Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::{AgentCommand, Command};

    fn task_command(args: &[&str]) -> TaskCommand {
        match parse(args).map(|cli| cli.command) {
            Ok(Command::Agent(AgentCommand::Tasks(c))) => c,
            other => panic!("not a task command: {other:?}"),
        }
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
        let Command::Agent(AgentCommand::Tasks(TaskCommand::Submit(args))) = cli.command else {
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
        let TaskCommand::Submit(args) = task_command(&["submit", "--memory", "lots", "img"]) else {
            panic!("not submit");
        };
        assert!(args.into_request().is_err());
        assert!(parse(&["submit", "--label", "novalue", "img"]).is_err());
        assert!(parse(&["submit", "img", "cmd-without-dashes"]).is_err());
    }

    #[test]
    fn states_and_timeouts_parse() {
        let TaskCommand::Tasks { state, .. } =
            task_command(&["tasks", "--state", "running,Queued", "--state", "failed"])
        else {
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
    fn task_ids_are_validated() {
        assert!(parse(&["task", "t1"]).is_ok());
        assert!(parse(&["task", "../x"]).is_err());
    }
}
