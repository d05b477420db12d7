//! Failover between agents (decisions in `mesh_protocol::failover`):
//! - as runner, push every change of a task to its keeper, find a new keeper
//!   when the old one is dead, and stop an attempt the keeper says was
//!   superseded (this node was away and the task was re-placed);
//! - as keeper, re-place the unfinished tasks of a runner the failure
//!   detector declared dead, once, as a new attempt with the same id.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use mesh_protocol::failover::{self, Verdict};
use mesh_protocol::gossip::PeerState;
use mesh_protocol::{NodeId, TaskId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::{Node, Tasks};

/// After start, keepers are not replaced for this many gossip rounds: the
/// view must fill in first, or a live keeper would look absent.
const SETTLE_ROUNDS: u32 = 10;

/// Runs until `shutdown`, one round per gossip interval, in two loops that
/// never wait on each other: pushing this node's changes to keepers (a push
/// to a keeper that just died waits out its call timeout) and settling
/// dependencies, and re-placing the tasks of dead nodes.
pub async fn run(tasks: Tasks, every: Duration, shutdown: CancellationToken) {
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
            sync_as_runner(&tasks, &mut pushed, settled()).await;
            super::deps::resolve(&tasks).await;
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
                adopt_orphans(&tasks).await;
            }
        }
    };
    tokio::join!(as_runner, as_keeper);
}

async fn sync_as_runner(tasks: &Tasks, pushed: &mut HashMap<TaskId, (u64, NodeId)>, settled: bool) {
    let supervisor = tasks.supervisor();
    let Ok(records) = supervisor.kept().await else {
        return;
    };
    let me = tasks.me();
    let view = tasks.mesh().peers().await;
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
                if let Err(e) = supervisor.set_keeper(r.id.clone(), k.clone()).await {
                    warn!(task_id = %r.id, error = %e, "cannot record a new keeper");
                    continue;
                }
                k
            }
        };
        if pushed.get(&r.id) == Some(&(r.updated_ms, keeper.clone())) {
            continue;
        }
        if let Some((_, addr)) = state_of(&keeper) {
            due.push((r, Node::peer(keeper, tasks.mesh().clone(), addr)));
        }
    }
    // Concurrently: one slow or dead keeper must not hold up the others.
    let answers =
        futures_util::future::join_all(due.iter().map(|(r, keeper)| keeper.replicate(r.clone())))
            .await;
    for ((r, keeper), answer) in due.into_iter().zip(answers) {
        match answer {
            Ok(Verdict::Keep) => {
                pushed.insert(r.id.clone(), (r.updated_ms, keeper.id));
            }
            Ok(Verdict::Superseded { node, attempt }) => {
                let why =
                    format!("re-placed on {node} as attempt {attempt} while this node was away");
                if let Err(e) = supervisor.supersede(r.id.clone(), why).await {
                    warn!(task_id = %r.id, error = %e, "cannot stop a superseded attempt");
                }
                pushed.remove(&r.id);
            }
            Err(e) => {
                warn!(task_id = %r.id, keeper = %keeper.id, error = %e, "keeper did not take the update; retrying")
            }
        }
    }
}

async fn adopt_orphans(tasks: &Tasks) {
    let dead: BTreeSet<NodeId> = tasks
        .mesh()
        .peers()
        .await
        .into_iter()
        .filter(|p| !p.is_self && p.state == PeerState::Dead)
        .map(|p| p.node)
        .collect();
    if dead.is_empty() {
        return;
    }
    let supervisor = tasks.supervisor();
    let Ok(copies) = supervisor.copies().await else {
        return;
    };
    let me = tasks.me();
    let now = tasks.ids.clock().now_ms();
    for orphan in failover::orphans(&copies, &me, &dead) {
        let why = format!("re-placed after its node {} died", orphan.node);
        let replacement = orphan.replacement(why, now);
        let span = info_span!("task", task_id = %orphan.id);
        let placed = tasks
            .place_record(replacement, false)
            .instrument(span)
            .await;
        let id = &orphan.id;
        // Saturating: the copy's attempt is what its runner said.
        let attempt = orphan.attempt.saturating_add(1);
        match placed {
            Ok(node) => {
                info!(task_id = %id, dead = %orphan.node, %node, attempt, "re-placed a dead node's task");
                if let Err(e) = supervisor.replaced(id.clone(), node, attempt).await {
                    warn!(task_id = %id, error = %e, "cannot record a re-placement");
                }
            }
            Err(e) => {
                warn!(task_id = %id, error = %e, "cannot re-place a dead node's task yet")
            }
        }
    }
}
