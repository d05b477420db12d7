//! Why a task operation across the mesh failed: on this node (the
//! supervisor's answer), on the node asked (its typed answer), or on the
//! way there. Every case has an [`ErrorKind`], which the API maps to a
//! status code the same way whichever node failed.

use mesh_protocol::rpc::{ErrorKind, RemoteError};
use mesh_protocol::{NodeId, TaskId};

use crate::mesh::rpc::CallError;
use crate::supervisor::SupervisorError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// This node's supervisor refused.
    #[error(transparent)]
    Here(#[from] SupervisorError),
    /// The node asked answered that the call failed.
    #[error("{node}: {error}")]
    There { node: NodeId, error: RemoteError },
    /// The node asked did not answer.
    #[error("{node} did not answer: {source}")]
    Unreachable {
        node: NodeId,
        #[source]
        source: CallError,
    },
    /// The node asked answered something that does not fit the call.
    #[error("{node} answered {answer} to a {call} call")]
    Unexpected {
        node: NodeId,
        call: &'static str,
        answer: String,
    },
    #[error("no task with id {0} in the mesh")]
    NotFound(TaskId),
    #[error("no live node {0} in the mesh (see meshctl peers)")]
    NoSuchNode(NodeId),
    /// A task's output could not be read here.
    #[error("reading the task's output failed: {0}")]
    Output(#[from] crate::runtime::RuntimeError),
}

impl TaskError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TaskError::Here(e) => e.kind(),
            TaskError::There { error, .. } => error.kind,
            TaskError::Unreachable { .. } | TaskError::Unexpected { .. } | TaskError::Output(_) => {
                ErrorKind::Unavailable
            }
            TaskError::NotFound(_) | TaskError::NoSuchNode(_) => ErrorKind::NotFound,
        }
    }

    /// As an answer to a peer's call.
    pub fn to_remote(&self) -> RemoteError {
        RemoteError::new(self.kind(), self.to_string())
    }
}
