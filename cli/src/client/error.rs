//! What can go wrong asking an agent, in words that say what to do.

use std::time::Duration;

use mesh_protocol::{TaskId, TaskState};
use reqwest::StatusCode;

/// A request to the agent that did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the agent at {node}: {cause}. Is meshd running? Set --node or MESH_NODE."
    )]
    Unreachable { node: String, cause: String },
    /// The agent refused with an `ErrorBody`; its message says why.
    #[error("{message}")]
    Agent { status: StatusCode, message: String },
    /// The agent answered an error status without an `ErrorBody`.
    #[error("agent answered {status} to {request}: {body}")]
    Status {
        request: String,
        status: StatusCode,
        body: String,
    },
    #[error(
        "cannot read the agent's answer to {request}: {cause}; are meshctl and meshd the same version?"
    )]
    Decode { request: String, cause: String },
    #[error(
        "the connection to the agent at {node} broke while reading the answer to {request}: {cause}"
    )]
    Body {
        node: String,
        request: String,
        cause: String,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// `Client::wait_for` ran out of time.
    #[error("timed out after {limit:?} waiting for task {id} (state: {})", last.map_or("unknown", TaskState::as_str))]
    WaitTimeout {
        id: TaskId,
        limit: Duration,
        /// The last state seen, if any answer came.
        last: Option<TaskState>,
    },
}

impl ClientError {
    /// The HTTP status the agent refused with; `None` when no answer came
    /// (or it could not be read), or for a wait that timed out.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Agent { status, .. } | ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
