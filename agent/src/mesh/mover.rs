//! Keeps the mesh's queue moving: a task waiting here goes to another node
//! as soon as that node's gossip shows room for it, so "queued when the mesh
//! is full" means the mesh, not just the node that accepted it.
//!
//! Moving is an offer like placement's (the other node takes the task only
//! if it can start it at once), made safe against lost answers: the task is
//! durably marked "offered to X" before the call, and a move whose answer
//! was lost is settled by asking X whether it has the task.

use std::time::Duration;

use mesh_protocol::placement;
use mesh_protocol::rpc::{Request, Response};
use mesh_protocol::{NodeId, TaskId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Mesh;
use super::place::{self, CALL_TIMEOUT};
use crate::supervisor::SupervisorHandle;

/// Runs until `shutdown`, one round per gossip interval.
pub async fn run(
    mesh: Mesh,
    supervisor: SupervisorHandle,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        settle_doubts(&mesh, &supervisor).await;
        // Move at most a few per round: the gossip view must catch up
        // with each move before the next is judged.
        for _ in 0..4 {
            if !move_head(&mesh, &supervisor).await {
                break;
            }
        }
    }
}

/// Did `node` take `id`? Some(answer) when it said, None when unreachable.
async fn has_task(mesh: &Mesh, node: &NodeId, id: &TaskId) -> Option<bool> {
    let peers = mesh.live_peers().await;
    let (_, addr) = peers.iter().find(|(n, _)| n == node)?;
    match mesh
        .call(*addr, &Request::Get(id.clone()), CALL_TIMEOUT)
        .await
    {
        Ok(Response::Record(_)) => Some(true),
        Ok(Response::NotFound) => Some(false),
        _ => None,
    }
}

async fn settle_doubts(mesh: &Mesh, supervisor: &SupervisorHandle) {
    let Ok(doubts) = supervisor.in_doubt().await else {
        return;
    };
    for (record, node) in doubts {
        let id = record.id.clone();
        let alive = mesh.live_peers().await.iter().any(|(n, _)| *n == node);
        let moved = match has_task(mesh, &node, &id).await {
            Some(moved) => moved,
            // Gone without an answer: run it here. Should that node come
            // back with it, its keeper's copy (which now names this node)
            // tells it its attempt was superseded.
            None if !alive => false,
            None => continue,
        };
        debug!(task_id = %id, %node, moved, "settled an offer in doubt");
        let mut copy = record;
        copy.node = if moved { node } else { mesh.node() };
        copy.offered_to = None;
        let peers = mesh.live_peers().await;
        place::keep_copy(supervisor, mesh, &peers, copy).await;
        let _ = supervisor.end_move(id, moved).await;
    }
}

/// Offers the head of the local queue to the best other node with room;
/// true if it moved.
async fn move_head(mesh: &Mesh, supervisor: &SupervisorHandle) -> bool {
    let Ok(Some((id, cores))) = supervisor.queue_head().await else {
        return false;
    };
    let me = mesh.node();
    let view: Vec<_> = mesh
        .candidates()
        .await
        .into_iter()
        .filter(|c| c.node != me)
        .collect();
    let Ok(order) = placement::rank(&id, cores, &view) else {
        return false;
    };
    let peers = mesh.live_peers().await;
    let Some(target) = order.first() else {
        return false;
    };
    let Some((_, addr)) = peers.iter().find(|(n, _)| n == target) else {
        return false;
    };
    let live: Vec<NodeId> = peers
        .iter()
        .map(|(n, _)| n.clone())
        .chain([me.clone()])
        .collect();
    let Ok(Some(mut record)) = supervisor.begin_move(id.clone(), target.clone()).await else {
        return false;
    };
    record.keeper = place::keeper_for(&record, target, &me, &live);
    match mesh
        .call(
            *addr,
            &Request::Offer(Box::new(record.clone())),
            CALL_TIMEOUT,
        )
        .await
    {
        Ok(Response::Accepted) => {
            record.node = target.clone();
            record.offered_to = None;
            place::keep_copy(supervisor, mesh, &peers, record).await;
            let _ = supervisor.end_move(id, true).await;
            true
        }
        Ok(_) => {
            let _ = supervisor.end_move(id, false).await;
            false
        }
        Err(e) => {
            // Unknown outcome: settled next round by asking the node.
            warn!(task_id = %id, node = %target, error = %e, "offer's answer lost; will ask the node");
            false
        }
    }
}
