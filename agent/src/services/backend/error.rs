//! Why this node handed out no container for a connection.

use mesh_protocol::ids::IdError;
use mesh_protocol::{NodeId, ServiceName};

use crate::runtime::RuntimeError;
use crate::supervisor::SupervisorError;

/// Why no container was handed out. `is_failure` tells a caller whether to
/// look elsewhere or later (no room here now) or to stop looking (the
/// service's containers do not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    #[error("service {0} is not served here")]
    Gone(ServiceName),
    #[error("{node} holds {containers} containers of {service} (--max-per-node)")]
    AtCapacity {
        node: NodeId,
        service: ServiceName,
        containers: u32,
    },
    #[error(
        "{node} is starting {starting} containers of {service} already (at most {max} at once)",
        max = crate::services::plan::MAX_STARTING
    )]
    Starting {
        node: NodeId,
        service: ServiceName,
        starting: u32,
    },
    #[error("no ready instance of {service} on {node}")]
    NoInstance { node: NodeId, service: ServiceName },
    #[error("instance {container} of {service} did not accept a connection: {cause}")]
    InstanceRefused {
        service: ServiceName,
        container: String,
        cause: String,
    },
    #[error("no cores for a container of {service} now: {source}")]
    NoCores {
        service: ServiceName,
        source: SupervisorError,
    },
    #[error("cannot name a container of {service}: {source}")]
    Holder {
        service: ServiceName,
        source: IdError,
    },
    #[error("no image for {service}: {source}")]
    Image {
        service: ServiceName,
        source: crate::images::EnsureError,
    },
    #[error("cannot start a container of {service}: {source}")]
    Start {
        service: ServiceName,
        source: RuntimeError,
    },
    #[error(
        "no container of {service} became ready in {starts} starts: {why}; its output: {output:?}"
    )]
    NotReady {
        service: ServiceName,
        starts: u32,
        why: ReadyError,
        output: String,
    },
    #[error("the agent is stopping")]
    Stopping,
}

impl AcquireError {
    /// Whether the service's containers fail to start here (rather than
    /// there being no room now).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            AcquireError::Start { .. }
                | AcquireError::NotReady { .. }
                | AcquireError::Holder { .. }
        )
    }
}

/// Why a started container did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    #[error("the container exited (code {code:?}) before accepting on port {port}")]
    Exited { code: Option<i64>, port: u16 },
    #[error("the container has no address on its network")]
    NoAddress,
    #[error("nothing accepted on port {port} within {ms} ms (--ready-timeout)")]
    Timeout { port: u16, ms: u64 },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
