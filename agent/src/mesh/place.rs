//! Accepting a task anywhere in the mesh: rank the nodes from this node's
//! gossip view (`mesh_protocol::placement`), offer the task to each in turn
//! (the chosen node allocates on receipt and refuses if its real state no
//! longer fits), and queue it here when nobody can take it now.
//!
//! And finding a task wherever it is, for `get`, `kill` and `logs`.

use std::time::Duration;

use mesh_protocol::api::SubmitResponse;
use mesh_protocol::failover;
use mesh_protocol::placement::{self, PlacementError};
use mesh_protocol::rpc::{Request, Response};
use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskSpec, TaskState};
use tracing::{debug, info, warn};

use super::Mesh;
use crate::supervisor::{SupervisorError, SupervisorHandle, new_task_id};

/// How long a peer may take to answer an offer or a lookup.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Offers tried before queueing here.
const MAX_OFFERS: usize = 4;

/// Places a new task; see the module documentation.
pub async fn submit(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    spec: TaskSpec,
) -> Result<SubmitResponse, SupervisorError> {
    submit_as(supervisor, mesh, new_task_id(), spec).await
}

/// Places an array: `count` members `<parent>-<index>`, each with its index
/// and the count in its environment.
pub async fn submit_array(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    spec: TaskSpec,
    count: u32,
) -> Result<SubmitResponse, SupervisorError> {
    let parent = new_task_id();
    let mut members = Vec::with_capacity(count as usize);
    for index in 0..count {
        let id = TaskId::new(format!("{parent}-{index}"))
            .map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        let mut member = spec.clone();
        member.parent = Some(parent.clone());
        member
            .env
            .push(("MESH_TASK_INDEX".into(), index.to_string()));
        member
            .env
            .push(("MESH_TASK_COUNT".into(), count.to_string()));
        match submit_as(supervisor, mesh, id, member).await {
            Ok(r) => members.push(r),
            Err(e) => {
                // All or nothing: take back the members already accepted.
                for m in &members {
                    let _ = kill_anywhere(supervisor, mesh, &m.id).await;
                }
                return Err(e);
            }
        }
    }
    Ok(SubmitResponse {
        id: parent,
        state: TaskState::Queued,
        node: None,
        members,
    })
}

/// Places a task under a given id.
pub async fn submit_as(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    id: TaskId,
    spec: TaskSpec,
) -> Result<SubmitResponse, SupervisorError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let record = TaskRecord::new(id.clone(), spec, mesh.node(), 0, now);
    let node = place_record(supervisor, mesh, record, true).await?;
    Ok(SubmitResponse {
        id,
        state: TaskState::Queued,
        node: Some(node),
        members: Vec::new(),
    })
}

/// Places a record (new, or a keeper's replacement of a dead runner's):
/// offered to the ranked nodes in turn, else queued here. Before this
/// returns, the task is stored by its runner and, when the mesh has another
/// live node, by its keeper. Returns the node that took it.
pub async fn place_record(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    record: TaskRecord,
    fresh: bool,
) -> Result<NodeId, SupervisorError> {
    let id = record.id.clone();
    let me = mesh.node();
    let view = mesh.candidates().await;
    let order = match placement::rank(&id, record.spec.cores, &view) {
        // A task waiting for others waits here; it moves once free.
        Ok(_) if !record.spec.after.is_empty() => Vec::new(),
        Ok(order) => order,
        Err(e @ PlacementError::NeverFits { .. }) => {
            return Err(SupervisorError::Impossible(e.to_string()));
        }
        // Nobody has room now: it waits here.
        Err(PlacementError::Busy { .. }) => Vec::new(),
    };
    let peers = mesh.live_peers().await;
    let live: Vec<NodeId> = peers
        .iter()
        .map(|(n, _)| n.clone())
        .chain([me.clone()])
        .collect();
    for node in order.into_iter().take(MAX_OFFERS) {
        let mut offered = record.clone();
        offered.keeper = keeper_for(&record, &node, &me, &live);
        let taken = if node == me {
            supervisor
                .offer(offered.clone())
                .await
                .map_err(|e| e.to_string())
        } else {
            let Some((_, addr)) = peers.iter().find(|(n, _)| *n == node) else {
                continue;
            };
            match mesh
                .call(
                    *addr,
                    &Request::Offer(Box::new(offered.clone())),
                    CALL_TIMEOUT,
                )
                .await
            {
                Ok(Response::Accepted) => Ok(()),
                Ok(Response::Refused(why)) => Err(why),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                // No answer: the node may have taken it. Ask before trying
                // another, so it never starts twice.
                Err(e) => match mesh
                    .call(*addr, &Request::Get(id.clone()), CALL_TIMEOUT)
                    .await
                {
                    Ok(Response::Record(_)) => Ok(()),
                    _ => Err(e.to_string()),
                },
            }
        };
        match taken {
            Ok(()) => {
                info!(task_id = %id, node = %node, keeper = ?offered.keeper, "task placed");
                offered.node = node.clone();
                keep_copy(supervisor, mesh, &peers, offered).await;
                return Ok(node);
            }
            Err(why) => {
                debug!(task_id = %id, node = %node, why, "offer refused; trying the next node")
            }
        }
    }
    // Nobody could start it now: it waits in this node's queue.
    let mut queued = record.clone();
    queued.keeper = keeper_for(&record, &me, &me, &live);
    match supervisor.adopt(queued.clone(), fresh).await {
        Ok(()) => {
            queued.node = me.clone();
            keep_copy(supervisor, mesh, &peers, queued).await;
            Ok(me)
        }
        Err(SupervisorError::Impossible(why)) => Err(SupervisorError::Busy(format!(
            "no node can start it now and this node can never run it ({why}); retry later or submit it to a larger node"
        ))),
        Err(e) => Err(e),
    }
}

/// The task's keeper when it runs on `runner`: the one it has, while that
/// one lives and is not the runner, else a new choice.
pub fn keeper_for(
    record: &TaskRecord,
    runner: &NodeId,
    me: &NodeId,
    live: &[NodeId],
) -> Option<NodeId> {
    match &record.keeper {
        Some(k) if k != runner && live.contains(k) => Some(k.clone()),
        _ => failover::choose_keeper(&record.id, runner, me, live),
    }
}

/// Stores the keeper's copy of a just-placed task: here, or on the keeper.
/// A failure leaves one copy (the runner's) and is logged; the runner's
/// sync finds a keeper again.
pub async fn keep_copy(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    peers: &[(NodeId, std::net::SocketAddr)],
    record: TaskRecord,
) {
    let Some(keeper) = record.keeper.clone() else {
        return;
    };
    let id = record.id.clone();
    if keeper == mesh.node() {
        let _ = supervisor.hold(record).await;
        return;
    }
    let Some((_, addr)) = peers.iter().find(|(n, _)| *n == keeper) else {
        return;
    };
    // Once more on a failure: the copy is what makes a dead runner's task
    // run again.
    let request = Request::Hold(Box::new(record));
    let mut answer = mesh.call(*addr, &request, CALL_TIMEOUT).await;
    if !matches!(answer, Ok(Response::Kept)) {
        answer = mesh.call(*addr, &request, CALL_TIMEOUT).await;
    }
    match answer {
        Ok(Response::Kept) => {}
        other => {
            warn!(task_id = %id, %keeper, answer = ?other, "keeper did not store its copy; one copy for now")
        }
    }
}

/// Where a task lives: this node, or the peer that knows it.
#[derive(Debug)]
pub enum Found {
    Here,
    At(NodeId, std::net::SocketAddr, Box<TaskRecord>),
}

/// Looks for a task here and on every live peer, and answers with the
/// node that has its current attempt (the highest; a node that was away may
/// still hold an older, superseded one).
pub async fn find(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    id: &TaskId,
) -> Result<Found, SupervisorError> {
    let here = match supervisor.get(id.clone()).await {
        Ok(r) => Some(r),
        Err(SupervisorError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let asks = mesh.live_peers().await.into_iter().map(|(node, addr)| {
        let request = Request::Get(id.clone());
        async move { (node, addr, mesh.call(addr, &request, CALL_TIMEOUT).await) }
    });
    let mut best: Option<Found> = here.as_ref().map(|_| Found::Here);
    let mut best_key = here.as_ref().map(|r| (r.attempt, r.updated_ms));
    for (node, addr, answer) in futures_util::future::join_all(asks).await {
        if let Ok(Response::Record(r)) = answer {
            let key = (r.attempt, r.updated_ms);
            if best_key.is_none_or(|b| key > b) {
                best_key = Some(key);
                best = Some(Found::At(node, addr, r));
            }
        }
    }
    best.ok_or_else(|| SupervisorError::NotFound(id.to_string()))
}

/// Kills a task wherever it runs.
pub async fn kill_anywhere(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
    id: &TaskId,
) -> Result<TaskRecord, SupervisorError> {
    match find(supervisor, mesh, id).await? {
        Found::Here => supervisor.kill(id.clone()).await,
        Found::At(node, addr, _) => match mesh
            .call(addr, &Request::Kill(id.clone()), CALL_TIMEOUT)
            .await
        {
            Ok(Response::Record(r)) => Ok(*r),
            Ok(Response::NotFound) => Err(SupervisorError::NotFound(id.to_string())),
            Ok(Response::Error(e)) => Err(SupervisorError::Conflict(format!("{node}: {e}"))),
            Ok(other) => Err(SupervisorError::Busy(format!("{node} answered {other:?}"))),
            Err(e) => Err(SupervisorError::Busy(format!(
                "task {id} is on {node}, which did not answer: {e}"
            ))),
        },
    }
}

/// Every task of the mesh: this node's and each live peer's, one record per
/// task (the most recently updated, should two nodes report one).
pub async fn list_all(
    supervisor: &SupervisorHandle,
    mesh: &Mesh,
) -> Result<Vec<TaskRecord>, SupervisorError> {
    let mut all = supervisor.list().await?;
    let asks = mesh
        .live_peers()
        .await
        .into_iter()
        .map(|(_, addr)| async move { mesh.call(addr, &Request::List, CALL_TIMEOUT).await });
    for answer in futures_util::future::join_all(asks).await {
        if let Ok(Response::Records(records)) = answer {
            all.extend(records);
        }
    }
    let mut by_id: std::collections::BTreeMap<TaskId, TaskRecord> =
        std::collections::BTreeMap::new();
    for r in all {
        match by_id.get(&r.id) {
            // The current attempt wins; then the freshest report of it.
            Some(seen) if (seen.attempt, seen.updated_ms) >= (r.attempt, r.updated_ms) => {}
            _ => {
                by_id.insert(r.id.clone(), r);
            }
        }
    }
    Ok(by_id.into_values().collect())
}
