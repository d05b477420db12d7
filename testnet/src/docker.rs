//! A thin wrapper around the `docker` command line: the harness's only way to
//! touch Docker. Every call takes the arguments as they would be typed and
//! returns stdout; a failure carries the command and Docker's own message.
//!
//! Calls come in two forms over one command builder: `run` (async, for the
//! harness) and `run_blocking` (for teardown in `Drop`, where nothing can be
//! awaited).

use std::ffi::OsString;
use std::process::{ExitStatus, Output, Stdio};

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
}

impl DockerError {
    /// Whether Docker said the container, network or image does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Failed { stderr, .. } => {
                let stderr = stderr.to_ascii_lowercase();
                stderr.contains("no such") || stderr.contains("not found")
            }
            Self::Spawn { .. } => false,
        }
    }

    /// Docker's message, for callers that recognise specific failures.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. } => stderr,
            Self::Spawn { .. } => "",
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
        }
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
        }
    }

    /// Runs `docker ARGS...` and returns its stdout, trimmed.
    pub async fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<String, DockerError> {
        let output = tokio::process::Command::from(self.command(args))
            .kill_on_drop(true)
            .output()
            .await;
        self.finish(args, output)
    }

    /// [`Docker::run`] for places that cannot await (teardown in `Drop`).
    pub fn run_blocking<S: AsRef<str>>(&self, args: &[S]) -> Result<String, DockerError> {
        let output = self.command(args).output();
        self.finish(args, output)
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
        match tokio::process::Command::from(self.command(&args))
            .output()
            .await
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(cannot run docker logs: {e})"),
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
        let command = || args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ");
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
}
