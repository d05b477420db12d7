//! Docker label keys every container we create carries. Cleanup and
//! reconciliation find our containers by these and nothing else.

/// The node id of the agent that owns the container.
pub const NODE: &str = "mesh.node";
/// The cluster id of the mesh the owning agent belongs to: several meshes
/// (test networks) may share one Docker engine with the same node names.
pub const CLUSTER: &str = "mesh.cluster";
/// The task id (batch containers).
pub const TASK: &str = "mesh.task";
/// The service name (service containers).
pub const SERVICE: &str = "mesh.service";
/// `task` or `service`.
pub const KIND: &str = "mesh.kind";
/// The attempt number of a task's container.
pub const ATTEMPT: &str = "mesh.attempt";
/// Which container of the task this is (counts every creation): what
/// reconciliation matches on.
pub const START: &str = "mesh.start";
/// Which run of the agent started a service container: a later run removes
/// the containers of earlier ones.
pub const RUN: &str = "mesh.run";
/// Prefix reserved for our labels; users may not set labels under it.
pub const RESERVED_PREFIX: &str = "mesh.";

pub const KIND_TASK: &str = "task";
pub const KIND_SERVICE: &str = "service";
