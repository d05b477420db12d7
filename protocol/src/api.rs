//! The agent's HTTP+JSON control API: request and response bodies, shared by
//! the agent (server) and `meshctl` (client). Paths:
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | POST | `/v1/tasks` | `SubmitRequest` -> 202 `SubmitResponse` |
//! | GET | `/v1/tasks?limit=&after=&scope=` | `[TaskRecord]`, a page in id order; header `mesh-next-after` when more follow |
//! | GET | `/v1/tasks/{id}` | `TaskRecord` |
//! | GET | `/v1/tasks/{id}/logs?follow=true` | the container's output, streamed |
//! | POST | `/v1/tasks/{id}/kill` | `TaskRecord` |
//! | GET | `/v1/node` | `NodeView` |
//! | GET | `/v1/health` | `Health` (503 when Docker is unreachable) |
//! | GET | `/v1/peers` | `[gossip::PeerView]`: every node this one knows |
//! | POST | `/v1/services` | `service::ServiceRequest` -> 201 `service::ServiceDef` |
//! | GET | `/v1/services` | `[ServiceView]` (the whole mesh's figures) |
//! | GET | `/v1/services/{name}` | `ServiceView` |
//! | DELETE | `/v1/services/{name}` | `service::ServiceDef` (the tombstone); drains |
//! | GET | `/v1/connections` | `[ConnectionView]`: open connections mesh-wide |
//!
//! Errors answer 4xx/5xx with `ErrorBody`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::alloc::NumaLoad;
use crate::cpuset::CpuSet;
use crate::ids::{NodeId, TaskId};
use crate::image::PullPolicy;
use crate::task::{SpecError, TaskSpec, TaskSpecBuilder, TaskState};
use crate::topology::{HostMapping, Topology};

/// A task submission as sent by a client. Validated into a `TaskSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    pub cores: Option<u32>,
    /// Bytes or a size such as `512M`.
    pub memory: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub retries: Option<u32>,
    pub name: Option<String>,
    pub priority: Option<i32>,
    /// Submit this many copies as one array: each gets MESH_TASK_INDEX
    /// (0-based) and MESH_TASK_COUNT in its environment and the array's id
    /// as parent.
    pub array: Option<u32>,
    /// Start only after these tasks succeeded (fail if one of them does not).
    #[serde(default)]
    pub after: Vec<TaskId>,
    /// When the running node pulls the image: `missing` (the default),
    /// `always` or `never`.
    #[serde(default)]
    pub pull: Option<PullPolicy>,
}

/// Most members one array may have.
pub const MAX_ARRAY: u32 = 10_000;

/// Largest request body the API reads: a task request at every size bound
/// of `task::spec`, each byte escaped, still fits. The server refuses a
/// larger one with 413 before reading it whole.
pub const MAX_BODY: usize = 2 << 20;

/// Why a request body was refused: the client's fault, answered with 400
/// (413 for `TooLarge`).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("a body of {0} bytes is over the {MAX_BODY}-byte limit")]
    TooLarge(usize),
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error("array of {0}: an array has 1 to {MAX_ARRAY} members")]
    Array(u32),
}

/// Reads a JSON request body (`what` names it in the error: "task
/// request"). This is the whole of the server's decoding of a body, so the
/// fuzz target `api_body` runs exactly what a client's bytes meet.
pub fn read_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, BodyError> {
    if body.len() > MAX_BODY {
        return Err(BodyError::TooLarge(body.len()));
    }
    serde_json::from_slice(body).map_err(|source| BodyError::Malformed { what, source })
}

/// A task submission read from a `POST /v1/tasks` body and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub spec: TaskSpec,
    /// Submit this many copies as one array (1 to `MAX_ARRAY`).
    pub array: Option<u32>,
}

impl Submission {
    /// Reads and validates a submission body.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let request: SubmitRequest = read_body("task request", body)?;
        let array = request.array;
        if let Some(n) = array
            && !(1..=MAX_ARRAY).contains(&n)
        {
            return Err(BodyError::Array(n));
        }
        Ok(Self {
            spec: TaskSpec::try_from(request)?,
            array,
        })
    }
}

/// The header of a `GET /v1/tasks` answer that has a next page: the id to
/// pass as `after` for it.
pub const NEXT_AFTER: &str = "mesh-next-after";

impl TryFrom<SubmitRequest> for TaskSpec {
    type Error = SpecError;
    fn try_from(r: SubmitRequest) -> Result<Self, Self::Error> {
        TaskSpecBuilder {
            image: r.image,
            command: r.command,
            env: r.env,
            cores: r.cores,
            memory: r.memory,
            labels: r.labels,
            retries: r.retries,
            name: r.name,
            priority: r.priority,
            pull: r.pull,
            after: r.after,
        }
        .build()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The task's id (for an array: the array's id).
    pub id: TaskId,
    pub state: TaskState,
    /// The node that took it (runs it, or queues it until cores free).
    #[serde(default)]
    pub node: Option<NodeId>,
    /// For an array: every member, in index order.
    #[serde(default)]
    pub members: Vec<SubmitResponse>,
    /// Whether the task's keeper stored its copy before this answer (none
    /// for an array's id: see each member's).
    #[serde(default)]
    pub copy: Option<CopyStatus>,
}

/// Whether a task's keeper holds a copy of it, the copy failover re-places
/// the task from if its runner dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CopyStatus {
    /// The keeper `node` has the copy on disk. `current`: as the runner's
    /// record is now (else an older state; the runner pushes each change
    /// within a gossip round).
    Kept { node: NodeId, current: bool },
    /// The keeper `node` does not hold it, or could not be asked: why.
    NotKept { node: NodeId, reason: String },
    /// No other node keeps a copy: why (the mesh had no other live node,
    /// or this attempt was superseded).
    NoKeeper { reason: String },
}

impl std::fmt::Display for CopyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyStatus::Kept {
                node,
                current: true,
            } => write!(f, "kept on {node}"),
            CopyStatus::Kept {
                node,
                current: false,
            } => write!(
                f,
                "kept on {node}, an older state (the runner pushes changes every gossip round)"
            ),
            CopyStatus::NotKept { node, reason } => write!(f, "NOT KEPT on {node}: {reason}"),
            CopyStatus::NoKeeper { reason } => write!(f, "none: {reason}"),
        }
    }
}

/// Any error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Whether the agent can reach its container runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeHealth {
    pub reachable: bool,
    /// What the agent connects to, e.g. `unix:///var/run/docker.sock`.
    pub endpoint: String,
    pub version: Option<String>,
    /// The last error, with what to do about it.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Docker is reachable and the task store takes writes.
    pub ok: bool,
    pub node: NodeId,
    pub docker: RuntimeHealth,
    /// Why the task store cannot be written now (`None`: it can). While
    /// it cannot, the node refuses new tasks and starts none.
    #[serde(default)]
    pub store_error: Option<String>,
}

/// One held core and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreHold {
    pub core: u32,
    pub numa: u32,
    /// Model PU indices of the core.
    pub pus: CpuSet,
    pub task: Option<TaskId>,
}

/// The node's own view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: NodeId,
    pub version: String,
    pub topology: Topology,
    /// How model indices map onto the host's CPUs and NUMA nodes.
    pub mapping: HostMapping,
    pub cores: Vec<CoreHold>,
    pub load: Vec<NumaLoad>,
    pub queued: usize,
    pub running: usize,
    pub max_queue: usize,
    pub docker: RuntimeHealth,
    /// This node's place in the mesh (filled in by the API layer).
    #[serde(default)]
    pub mesh: Option<MeshSummary>,
}

/// The node's membership, as `meshctl node` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshSummary {
    pub cluster_id: String,
    /// The QUIC address peers reach this node at.
    pub gossip_addr: std::net::SocketAddr,
    /// True when started with --insecure-dev (no certificate checks).
    pub insecure: bool,
    /// Peers (this node included) alive and not suspect.
    pub alive: usize,
    /// Peers alive to the failure detector but quiet for a few rounds
    /// (absent from older agents' answers: none).
    #[serde(default)]
    pub suspect: usize,
    pub dead: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_bounded_parsed_and_checked() {
        let ok = Submission::parse(br#"{"image":"x","cores":2,"array":3}"#).unwrap();
        assert_eq!((ok.spec.cores.get(), ok.array), (2, Some(3)));
        assert!(matches!(
            Submission::parse(br#"{"image":"x","array":0}"#),
            Err(BodyError::Array(0))
        ));
        assert!(matches!(
            Submission::parse(br#"{"image":""}"#),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            Submission::parse(b"{\"image\":\"\xff\"}"),
            Err(BodyError::Malformed { .. })
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            read_body::<serde_json::Value>("x", deep.as_bytes()),
            Err(BodyError::Malformed { .. })
        ));
        assert!(matches!(
            read_body::<serde_json::Value>("x", &vec![b' '; MAX_BODY + 1]),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<SubmitRequest, _> = serde_json::from_str(r#"{"image":"x","corez":2}"#);
        assert!(r.is_err());
        let ok: SubmitRequest = serde_json::from_str(r#"{"image":"x","cores":2}"#).unwrap();
        let spec = TaskSpec::try_from(ok).unwrap();
        assert_eq!(spec.cores.get(), 2);
    }
}

/// Per service, what one node counts: connections it accepted from clients
/// and what became of them, and containers that failed to start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCounters {
    pub accepted: u64,
    pub served: u64,
    pub queued: u64,
    pub refused: u64,
    pub failed_starts: u64,
}

/// One node's figures for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNodeStats {
    pub node: NodeId,
    pub service: crate::ids::ServiceName,
    /// Whether this node listens for the service's clients.
    pub listening: bool,
    /// Why not, if it does not.
    pub listen_error: Option<String>,
    pub load: crate::load::ServiceLoad,
    pub counters: ServiceCounters,
    /// The service's image on this node (`None` from an agent that does not
    /// report it, or before its pre-pull began).
    #[serde(default)]
    pub image: Option<crate::service::image::ImageStatus>,
}

/// One open client connection, as the node that accepted it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub id: u64,
    pub service: crate::ids::ServiceName,
    pub client: std::net::SocketAddr,
    /// The node that accepted the connection.
    pub entry: NodeId,
    /// The node whose container serves it.
    pub node: NodeId,
    pub container: String,
    /// Client to container.
    pub bytes_in: u64,
    /// Container to client.
    pub bytes_out: u64,
    pub age_ms: u64,
}

/// What one node reports about services (`ServiceReport` call).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub stats: Vec<ServiceNodeStats>,
    pub connections: Vec<ConnectionView>,
}

/// A service as `GET /v1/services` shows it: its definition and every
/// reachable node's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub def: crate::service::ServiceDef,
    pub nodes: Vec<ServiceNodeStats>,
    /// Nodes that did not answer.
    pub unreachable: Vec<NodeId>,
}
