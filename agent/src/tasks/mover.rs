//! Keeps the mesh's queue moving: a task waiting here goes to another node
//! as soon as that node's gossip shows room for it, so "queued when the mesh
//! is full" means the mesh, not just the node that accepted it.
//!
//! Moving is an offer like placement's (the other node takes the task only
//! if it can start it at once), made safe against lost answers: the task is
//! durably marked "offered to X" before the call, and a move whose answer
//! was lost is settled by asking X whether it has the task.

use std::time::Duration;

use mesh_protocol::image::Wanted;
use mesh_protocol::placement;
use mesh_protocol::rpc::ErrorKind;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::place::{live_ids, name_keeper};
use super::{TaskError, Tasks};
use crate::supervisor::QueueHead;

/// Runs until `shutdown`, one round per gossip interval.
pub async fn run(tasks: Tasks, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        settle_doubts(&tasks).await;
        // Move at most a few per round: the gossip view must catch up
        // with each move before the next is judged.
        for _ in 0..4 {
            if !move_head(&tasks).await {
                break;
            }
        }
    }
}

/// Ends the moves whose answer was lost: asks the node offered to whether
/// it took the task.
async fn settle_doubts(tasks: &Tasks) {
    let supervisor = tasks.supervisor();
    let Ok(doubts) = supervisor.in_doubt().await else {
        return;
    };
    for (record, to) in doubts {
        let id = record.id.clone();
        let answer = match tasks.node(&to).await {
            // "Not here" is a promise never to take the late offer.
            Ok(node) => node.disclaim(&id).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let moved = match answer {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound && !matches!(e, TaskError::NoSuchNode(_)) => {
                false
            }
            // Gone without an answer: run it here. Should that node come
            // back with it, its keeper's copy (which now names this node)
            // tells it its attempt was superseded.
            Err(_) if !tasks.alive(&to).await => false,
            Err(_) => continue,
        };
        debug!(task_id = %id, node = %to, moved, "settled an offer in doubt");
        let mut copy = record;
        copy.placed_on(if moved { to } else { tasks.me() });
        let peers = tasks.peers().await;
        tasks.keep_copy(&peers, copy).await;
        if let Err(e) = supervisor.end_move(id.clone(), moved).await {
            warn!(task_id = %id, error = %e, "cannot record a settled move");
        }
    }
}

/// Offers the head of the local queue to the best other node with room;
/// true if it moved.
async fn move_head(tasks: &Tasks) -> bool {
    let supervisor = tasks.supervisor();
    let Ok(Some(QueueHead { id, cores, image })) = supervisor.queue_head().await else {
        return false;
    };
    let me = tasks.me();
    let view: Vec<_> = tasks
        .mesh()
        .candidates()
        .await
        .into_iter()
        .filter(|c| c.node != me)
        .collect();
    let wanted = Wanted::of(&image);
    let Ok(order) = placement::rank(&id, cores, wanted.as_ref(), &view) else {
        return false;
    };
    let Some(target) = order.first() else {
        return false;
    };
    let peers = tasks.peers().await;
    let Some(node) = peers.iter().find(|n| n.id == *target).cloned() else {
        return false;
    };
    let live = live_ids(&me, &peers);
    let Ok(Some(mut record)) = supervisor.begin_move(id.clone(), target.clone()).await else {
        return false;
    };
    name_keeper(&mut record, target, &me, &live);
    let span = info_span!("task", task_id = %id);
    let moved = async {
        match node.offer(record.clone()).await {
            Ok(()) => {
                tasks.events().emit(
                    mesh_protocol::events::EventKind::TaskPlaced,
                    &id,
                    format!("on {target}, from the queue of {me}: it has room now"),
                );
                record.placed_on(target.clone());
                tasks.keep_copy(&peers, record).await;
                Some(true)
            }
            Err(e @ TaskError::Unreachable { .. }) => {
                // Unknown outcome: settled next round by asking the node.
                warn!(node = %target, error = %e, "offer's answer lost; will ask the node");
                None
            }
            Err(e) => {
                debug!(node = %target, error = %e, "move refused");
                Some(false)
            }
        }
    }
    .instrument(span)
    .await;
    match moved {
        Some(moved) => {
            if let Err(e) = supervisor.end_move(id.clone(), moved).await {
                warn!(task_id = %id, error = %e, "cannot record a move's outcome");
            }
            moved
        }
        None => false,
    }
}
