//! Failover between agents (decisions in `mesh_protocol::failover`):
//! - as runner, push every change of a task to its keeper, find a new keeper
//!   when the old one is dead, and stop an attempt the keeper says was
//!   superseded (this node was away and the task was re-placed);
//! - as keeper, re-place the unfinished tasks of a runner the failure
//!   detector declared dead, once, as a new attempt with the same id.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use mesh_protocol::failover;
use mesh_protocol::gossip::PeerState;
use mesh_protocol::rpc::{Request, Response};
use mesh_protocol::{NodeId, TaskId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Mesh;
use super::place::{self, CALL_TIMEOUT};
use crate::supervisor::SupervisorHandle;

/// After start, keepers are not replaced for this many gossip rounds: the
/// view must fill in first, or a live keeper would look absent.
const SETTLE_ROUNDS: u32 = 10;

/// Runs until `shutdown`, one round per gossip interval, in two loops that
/// never wait on each other: pushing this node's changes to keepers (a push
/// to a keeper that just died waits out its call timeout), and re-placing
/// the tasks of dead nodes.
pub async fn run(
    mesh: Mesh,
    supervisor: SupervisorHandle,
    every: Duration,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let settled = move || started.elapsed() > every * SETTLE_ROUNDS;
    let as_runner = async {
        let mut pushed: HashMap<TaskId, (u64, NodeId)> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            sync_as_runner(&mesh, &supervisor, &mut pushed, settled()).await;
            super::deps::resolve(&mesh, &supervisor).await;
        }
    };
    let as_keeper = async {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if settled() {
                adopt_orphans(&mesh, &supervisor).await;
            }
        }
    };
    tokio::join!(as_runner, as_keeper);
}

async fn sync_as_runner(
    mesh: &Mesh,
    supervisor: &SupervisorHandle,
    pushed: &mut HashMap<TaskId, (u64, NodeId)>,
    settled: bool,
) {
    let Ok(records) = supervisor.kept().await else {
        return;
    };
    let me = mesh.node();
    let view = mesh.peers().await;
    let state_of = |n: &NodeId| {
        view.iter()
            .find(|p| &p.node == n && !p.is_self)
            .map(|p| (p.state, p.gossip_addr))
    };
    let live: Vec<NodeId> = view
        .iter()
        .filter(|p| p.state == PeerState::Alive)
        .map(|p| p.node.clone())
        .collect();
    let mut due = Vec::new();
    for r in records {
        let keeper = match r.keeper.clone().map(|k| (state_of(&k), k)) {
            Some((Some((PeerState::Alive, _)), k)) => k,
            // Unknown yet (the view is filling in): wait.
            Some((None, _)) if !settled => continue,
            // Dead, unknown for long, or none: a new keeper, for unfinished tasks.
            _ => {
                if r.state.is_terminal() || !settled {
                    continue;
                }
                let Some(k) = failover::choose_keeper(&r.id, &me, &me, &live) else {
                    continue;
                };
                let _ = supervisor.set_keeper(r.id.clone(), k.clone()).await;
                k
            }
        };
        if pushed.get(&r.id) == Some(&(r.updated_ms, keeper.clone())) {
            continue;
        }
        if let Some((_, addr)) = state_of(&keeper) {
            due.push((r, keeper, addr));
        }
    }
    // Concurrently: one slow or dead keeper must not hold up the others.
    let answers = futures_util::future::join_all(due.iter().map(|(r, _, addr)| {
        let request = Request::Replicate(Box::new(r.clone()));
        async move { mesh.call(*addr, &request, CALL_TIMEOUT).await }
    }))
    .await;
    for ((r, keeper, _), answer) in due.into_iter().zip(answers) {
        match answer {
            Ok(Response::Kept) => {
                pushed.insert(r.id.clone(), (r.updated_ms, keeper));
            }
            Ok(Response::Superseded { node, attempt }) => {
                let why =
                    format!("re-placed on {node} as attempt {attempt} while this node was away");
                let _ = supervisor.supersede(r.id.clone(), why).await;
                pushed.remove(&r.id);
            }
            other => {
                warn!(task_id = %r.id, %keeper, answer = ?other, "keeper did not take the update; retrying")
            }
        }
    }
}

async fn adopt_orphans(mesh: &Mesh, supervisor: &SupervisorHandle) {
    let dead: BTreeSet<NodeId> = mesh
        .peers()
        .await
        .into_iter()
        .filter(|p| !p.is_self && p.state == PeerState::Dead)
        .map(|p| p.node)
        .collect();
    if dead.is_empty() {
        return;
    }
    let Ok(copies) = supervisor.copies().await else {
        return;
    };
    let me = mesh.node();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for orphan in failover::orphans(&copies, &me, &dead) {
        let why = format!("re-placed after its node {} died", orphan.node);
        let replacement = orphan.replacement(why, now);
        match place::place_record(supervisor, mesh, replacement, false).await {
            Ok(node) => {
                info!(task_id = %orphan.id, dead = %orphan.node, %node, attempt = orphan.attempt + 1, "re-placed a dead node's task");
                let _ = supervisor
                    .replaced(orphan.id.clone(), node, orphan.attempt + 1)
                    .await;
            }
            Err(e) => {
                warn!(task_id = %orphan.id, error = %e, "cannot re-place a dead node's task yet")
            }
        }
    }
}
