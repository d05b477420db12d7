//! Tasks across the mesh: placement (`place`), the mover that hands queued
//! tasks to nodes with room (`mover`), failover between runner and keeper
//! (`keeper`), `--after` dependencies (`deps`), what this node answers to
//! peers' task calls (`serve`) and the load it publishes (`publish`).
//!
//! [`Tasks`] is the handle the API uses; [`start`] registers the task calls
//! with the mesh and runs the loops until shutdown. This node's own task
//! state belongs to the supervisor; other nodes are reached through
//! [`Node`], the one client for "a node".

mod confirm;
pub mod deps;
pub mod error;
mod hostload;
pub mod keeper;
mod lookup;
pub mod mover;
pub mod node;
pub mod place;
mod publish;
mod serve;

use std::time::Duration;

use mesh_protocol::NodeId;
use mesh_protocol::gossip::PeerState;
use mesh_protocol::rpc::Topic;
use tokio_util::sync::CancellationToken;

use crate::clock::Ids;
use crate::events::EventLog;
use crate::mesh::Mesh;
use crate::supervisor::SupervisorHandle;
pub use error::TaskError;
pub use node::{CALL_TIMEOUT, Found, Node, Output};

/// Task operations across the mesh; cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    supervisor: SupervisorHandle,
    mesh: Mesh,
    ids: Ids,
    events: EventLog,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("node", &self.mesh.node())
            .finish_non_exhaustive()
    }
}

/// How often the task loops run, and the runners' lease.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// One round of the mover, the keeper and the publisher: a gossip round.
    pub every: Duration,
    /// See `mesh_protocol::lease`.
    pub fence_after: Duration,
}

/// Registers the task calls with the mesh and runs the mover, the keeper
/// and the load publisher, one round per `timing.every`, until `shutdown`;
/// the returned task ends when all three have.
pub fn start(
    supervisor: SupervisorHandle,
    mesh: Mesh,
    ids: Ids,
    events: EventLog,
    timing: Timing,
    shutdown: CancellationToken,
) -> (Tasks, tokio::task::JoinHandle<()>) {
    let every = timing.every;
    let tasks = Tasks {
        supervisor,
        mesh,
        ids,
        events,
    };
    tasks
        .mesh
        .handle_calls(Topic::Tasks, serve::handler(tasks.clone()));
    let mover = tokio::spawn(mover::run(tasks.clone(), every, shutdown.clone()));
    let keeper = tokio::spawn(keeper::run(tasks.clone(), timing, shutdown.clone()));
    let publisher = tokio::spawn(publish::run(tasks.clone(), every, shutdown));
    let join = tokio::spawn(async move {
        let _ = tokio::join!(mover, keeper, publisher);
    });
    (tasks, join)
}

impl Tasks {
    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.supervisor
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Where this node tells what happened.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.mesh.node()
    }

    /// This node.
    pub fn here(&self) -> Node {
        Node::here(self.supervisor.clone(), self.mesh.clone())
    }

    /// Every live peer (not this node).
    pub async fn peers(&self) -> Vec<Node> {
        self.mesh
            .live_peers()
            .await
            .into_iter()
            .map(|(id, addr)| Node::peer(id, self.mesh.clone(), addr))
            .collect()
    }

    /// `id`, if it is this node or a live peer.
    pub async fn node(&self, id: &NodeId) -> Result<Node, TaskError> {
        if *id == self.me() {
            return Ok(self.here());
        }
        self.peers()
            .await
            .into_iter()
            .find(|n| n.id == *id)
            .ok_or_else(|| TaskError::NoSuchNode(id.clone()))
    }

    /// `id` among `peers` (this node included), if alive.
    fn node_in(&self, id: &NodeId, peers: &[Node]) -> Option<Node> {
        if *id == self.me() {
            return Some(self.here());
        }
        peers.iter().find(|n| n.id == *id).cloned()
    }

    /// Whether the gossip view has `id` alive.
    async fn alive(&self, id: &NodeId) -> bool {
        self.mesh
            .peers()
            .await
            .iter()
            .any(|p| p.node == *id && p.state == PeerState::Alive)
    }
}
