//! A thin wrapper around the `docker` command line: the harness's only way to
//! touch Docker. Every call takes the arguments as they would be typed and
//! returns stdout; a failure carries the command and Docker's own message.
//!
//! Calls come in two forms over one command builder: `run` (async, for the
//! harness) and `run_blocking` (for teardown in `Drop`, where nothing can be
//! awaited). Every call has a time limit: a Docker daemon that stops
//! answering fails the call, naming the command, instead of hanging the test
//! or the teardown that made it.

use std::ffi::OsString;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

/// How long one `docker` command may take unless [`Docker::with_limit`] says
/// otherwise: far more than any command the harness makes needs (no pulls,
/// no builds), far less than a CI run.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(120);

/// Why a `docker` call failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot run `{program}`: {source}; install the Docker CLI (Debian: docker.io) or put it on PATH"
    )]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`docker {command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error(
        "`docker {command}` did not finish within {limit:?} and was killed; is the Docker daemon answering (`docker info`)?"
    )]
    TimedOut { command: String, limit: Duration },
}

impl DockerError {
    /// Whether Docker said the container, network or image does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Failed { stderr, .. } => {
                let stderr = stderr.to_ascii_lowercase();
                stderr.contains("no such") || stderr.contains("not found")
            }
            Self::Spawn { .. } | Self::TimedOut { .. } => false,
        }
    }

    /// Docker's message, for callers that recognise specific failures.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. } => stderr,
            Self::Spawn { .. } | Self::TimedOut { .. } => "",
        }
    }
}

/// The `docker` command line client. `DOCKER_HOST` and the other `DOCKER_*`
/// variables apply as they do in a shell.
#[derive(Debug, Clone)]
pub struct Docker {
    program: OsString,
    /// Arguments before the caller's (none for `docker` itself).
    leading: Vec<OsString>,
    /// How long one command may run before it is killed.
    limit: Duration,
}

impl Default for Docker {
    fn default() -> Self {
        Self::new()
    }
}

impl Docker {
    /// The `docker` found on PATH.
    pub fn new() -> Self {
        Self {
            program: OsString::from("docker"),
            leading: Vec::new(),
            limit: DEFAULT_LIMIT,
        }
    }

    /// The same client talking to the engine at `host` (`unix://PATH`)
    /// instead of `DOCKER_HOST`'s.
    pub fn with_host(mut self, host: impl Into<OsString>) -> Self {
        self.leading.push(OsString::from("--host"));
        self.leading.push(host.into());
        self
    }

    /// The same client with another time limit per command.
    pub fn with_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// A shell script that speaks the `docker` command line: a stand-in
    /// that answers as Docker does when it misbehaves, for tests. Run by
    /// `sh` rather than executed, so that no other test's fork can hold it
    /// open for writing ("text file busy").
    #[cfg(test)]
    pub(crate) fn script(path: impl Into<OsString>) -> Self {
        Self {
            program: OsString::from("sh"),
            leading: vec![path.into()],
            limit: DEFAULT_LIMIT,
        }
    }

    /// Runs `docker ARGS...` and returns its stdout, trimmed; kills it
    /// and fails once it has run longer than the limit.
    pub async fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<String, DockerError> {
        let output = tokio::process::Command::from(self.command(args))
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.limit, output).await {
            Ok(output) => self.finish(args, output),
            Err(_) => Err(DockerError::TimedOut {
                command: Self::joined(args),
                limit: self.limit,
            }),
        }
    }

    /// [`Docker::run`] for places that cannot await (teardown in `Drop`,
    /// which may itself run inside a runtime): the call runs on a thread of
    /// its own with a runtime of its own, under the same limit.
    pub fn run_blocking<S: AsRef<str>>(&self, args: &[S]) -> Result<String, DockerError> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let docker = self.clone();
        let spawn_error = |source| DockerError::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            source,
        };
        std::thread::scope(|scope| {
            let call = scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(spawn_error)?;
                runtime.block_on(docker.run(&args))
            });
            call.join().unwrap_or_else(|_| {
                Err(spawn_error(std::io::Error::other(
                    "the thread running docker panicked",
                )))
            })
        })
    }

    /// The last `tail` lines of a container's output, stdout and stderr
    /// together, or why they cannot be read: for error messages.
    pub async fn logs(&self, container: &str, tail: usize) -> String {
        let args = [
            "logs".to_owned(),
            "--tail".to_owned(),
            tail.to_string(),
            container.to_owned(),
        ];
        let output = tokio::process::Command::from(self.command(&args))
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.limit, output).await {
            Ok(Ok(out)) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(Err(e)) => format!("(cannot run docker logs: {e})"),
            Err(_) => format!("(docker logs did not answer within {:?})", self.limit),
        }
    }

    fn command<S: AsRef<str>>(&self, args: &[S]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.leading)
            .args(args.iter().map(AsRef::as_ref))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn finish<S: AsRef<str>>(
        &self,
        args: &[S],
        output: std::io::Result<Output>,
    ) -> Result<String, DockerError> {
        let command = || Self::joined(args);
        let output = output.map_err(|source| DockerError::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            source,
        })?;
        tracing::debug!(command = %command(), status = %output.status, "docker");
        if !output.status.success() {
            return Err(DockerError::Failed {
                command: command(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn joined<S: AsRef<str>>(args: &[S]) -> String {
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in `docker` that answers `ps` at once and never answers
    /// anything else, as a hung daemon does.
    fn hung_docker(dir: &std::path::Path) -> Docker {
        let path = dir.join("docker.sh");
        std::fs::write(
            &path,
            "case \"$1\" in ps) echo ok ;; *) exec sleep 600 ;; esac\n",
        )
        .unwrap();
        Docker::script(path).with_limit(Duration::from_millis(300))
    }

    #[tokio::test]
    async fn a_command_that_hangs_fails_at_the_limit_naming_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let docker = hung_docker(tmp.path());
        assert_eq!(docker.run(&["ps"]).await.unwrap(), "ok");
        let err = docker.run(&["network", "rm", "x"]).await.unwrap_err();
        assert!(matches!(err, DockerError::TimedOut { .. }), "{err:?}");
        assert!(err.to_string().contains("`docker network rm x`"), "{err}");
        assert!(!err.is_not_found());
        assert!(docker.logs("c", 5).await.contains("did not answer"));
    }

    #[test]
    fn a_blocking_command_that_hangs_fails_too_even_inside_a_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let docker = hung_docker(tmp.path());
        assert_eq!(docker.run_blocking(&["ps"]).unwrap(), "ok");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // As in `Drop` of a testnet owned by an async test.
        let err = runtime.block_on(async { docker.run_blocking(&["rm", "-f", "c"]) });
        assert!(matches!(err, Err(DockerError::TimedOut { .. })), "{err:?}");
    }
}
