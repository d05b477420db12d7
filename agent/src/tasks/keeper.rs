//! Failover between agents (decisions in `mesh_protocol::failover` and
//! `mesh_protocol::lease`):
//! - as runner, push every change of a task to its keeper, find a new keeper
//!   when the old one is dead (only while a majority is in sight), stop an
//!   attempt the keeper says was superseded (this node was away and the task
//!   was re-placed), and fence a task whose keeper and majority it has not
//!   heard for `--fence-after`: stop it and hold it until the keeper answers;
//! - as keeper, re-place the unfinished tasks of a runner the failure
//!   detector declared dead, once, as a new attempt with the same id: only
//!   once it has seen a majority without a break for the lease (a keeper back
//!   from its own cut waits), and only once the runner's lease is over;
//! - as keeper, once a lease, forget the unfinished copies whose live
//!   runner says the task ended (`super::confirm::refresh`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use mesh_protocol::failover::{self, Verdict};
use mesh_protocol::gossip::{PeerState, PeerView};
use mesh_protocol::lease::{self, Sighting};
use mesh_protocol::{NodeId, TaskId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::{Node, Tasks, Timing};
use crate::repeat::RepeatGates;

/// After start, keepers are not replaced for this many gossip rounds: the
/// view must fill in first, or a live keeper would look absent.
const SETTLE_ROUNDS: u32 = 10;

/// Runs until `shutdown`, one round per gossip interval, in loops
/// that never wait on each other: pushing this node's changes to keepers (a
/// push to a keeper that just died waits out its call timeout) and settling
/// dependencies; fencing the tasks whose lease is over, which must happen on
/// time whatever the network does; re-placing the tasks of dead nodes; and,
/// once a lease, asking live runners about this node's unfinished copies.
pub async fn run(tasks: Tasks, timing: Timing, shutdown: CancellationToken) {
    let every = timing.every;
    let started = Instant::now();
    let settled = move || started.elapsed() > every * SETTLE_ROUNDS;
    let lease = move || Lease {
        fence_after: timing.fence_after,
        margin: lease::margin(every),
        every,
    };
    let as_runner = async {
        let mut pushed: HashMap<TaskId, (u64, NodeId)> = HashMap::new();
        // Keepers that do not take a task's update: said once per reason.
        let mut refused = RepeatGates::default();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let runner = Runner {
                pushed: &mut pushed,
                refused: &mut refused,
            };
            sync_as_runner(&tasks, runner, settled(), lease()).await;
            super::deps::resolve(&tasks).await;
        }
    };
    let as_fencer = async {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            fence_lost_leases(&tasks, lease()).await;
        }
    };
    let as_keeper = async {
        let mut tick = tokio::time::interval(every);
        // Since when (ms since start) this node has seen a majority unbroken.
        let mut majority_since = None;
        let mut asking = super::confirm::Asking::default();
        // Dead nodes' tasks that find no place yet: said once per reason.
        let mut unplaced = RepeatGates::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let view = tasks.mesh().peers().await;
            let seen = sightings(&view);
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            majority_since = lease::majority_since(majority_since, &seen, now);
            let l = lease();
            if settled() && lease::steady_majority(majority_since, now, l.fence_after, l.margin) {
                adopt_orphans(&tasks, &view, (&mut asking, &mut unplaced), now, l).await;
            }
        }
    };
    // Once a lease: stale copies are found while their runners still live.
    let as_refresher = async {
        let mut tick = tokio::time::interval(lease().fence_after.saturating_add(lease().margin));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if settled() {
                let view = tasks.mesh().peers().await;
                super::confirm::refresh(&tasks, &view).await;
            }
        }
    };
    tokio::join!(as_runner, as_fencer, as_keeper, as_refresher);
}

/// The lease's settings.
#[derive(Debug, Clone, Copy)]
struct Lease {
    fence_after: Duration,
    margin: Duration,
    every: Duration,
}

/// What the lease decisions need of the peer view.
fn sightings(view: &[PeerView]) -> Vec<Sighting> {
    view.iter()
        .map(|p| Sighting {
            node: p.node.clone(),
            is_self: p.is_self,
            alive: p.state == PeerState::Alive,
            heard_ms_ago: p.last_heard_ms,
        })
        .collect()
}

/// What the runner's loop keeps from round to round: the update last
/// pushed of each task, and the keepers that refused one.
struct Runner<'a> {
    pushed: &'a mut HashMap<TaskId, (u64, NodeId)>,
    refused: &'a mut RepeatGates<TaskId>,
}

async fn sync_as_runner(
    tasks: &Tasks,
    Runner { pushed, refused }: Runner<'_>,
    settled: bool,
    lease: Lease,
) {
    let supervisor = tasks.supervisor();
    let Ok(records) = supervisor.kept().await else {
        return;
    };
    // Forget what was pushed of tasks no longer here (moved, or forgotten
    // past --retain-finished), so the map does not grow without bound.
    let here: BTreeSet<&TaskId> = records.iter().map(|r| &r.id).collect();
    pushed.retain(|id, _| here.contains(id));
    refused.retain(|id| here.contains(id));
    let me = tasks.me();
    let view = tasks.mesh().peers().await;
    let seen = sightings(&view);
    let majority = lease::sees_majority(&seen);
    // A keeper silent for a few rounds may have re-placed an unfinished
    // task meanwhile: push those again once it is heard, to learn whether
    // they were superseded. (Ended ones have nothing left to stop; with
    // thousands retained, pushing them after every silence would be waste.)
    let silent = |k: &NodeId| {
        view.iter()
            .find(|p| &p.node == k)
            .and_then(|p| p.last_heard_ms)
            .is_none_or(|ms| u128::from(ms) > lease.every.as_millis() * 3)
    };
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
        // Its lease is over: the fencer stops it; pushed again once held.
        if !r.state.is_terminal()
            && !r.is_held()
            && lease::must_fence(&seen, r.keeper.as_ref(), lease.fence_after)
        {
            pushed.remove(&r.id);
            continue;
        }
        if !r.state.is_terminal() && r.keeper.as_ref().is_some_and(silent) {
            pushed.remove(&r.id);
        }
        let keeper = match r.keeper.clone().map(|k| (state_of(&k), k)) {
            Some((Some((PeerState::Alive, _)), k)) => k,
            // Unknown yet (the view is filling in): wait.
            Some((None, _)) if !settled => continue,
            // Dead, unknown for long, or none: a new keeper, for unfinished tasks.
            // A new keeper only in sight of a majority: in a minority the old
            // keeper may be alive on the other side, re-placing the task.
            _ => {
                if r.state.is_terminal() || !settled || !majority {
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
                if let Some(last) = refused.cleared(&r.id) {
                    info!(task_id = %r.id, keeper = %keeper.id, last_error = %last.reason, repeats = last.repeats, "keeper takes the updates again");
                }
                if r.is_held() {
                    if let Err(e) = supervisor.unhold(r.id.clone()).await {
                        warn!(task_id = %r.id, error = %e, "cannot let a held task start");
                    }
                    continue;
                }
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
            Err(e) => match refused.failed(r.id.clone(), &e.to_string()) {
                Some(None) => {
                    warn!(task_id = %r.id, keeper = %keeper.id, error = %e, "keeper did not take the update; retrying every round (said again when the reason changes)")
                }
                Some(Some(before)) => {
                    warn!(task_id = %r.id, keeper = %keeper.id, error = %e, before = %before.reason, repeats = before.repeats, "keeper did not take the update, for another reason now; retrying every round")
                }
                None => {}
            },
        }
    }
}

/// Stops, and holds, every unfinished task of this node whose keeper and
/// majority it has not heard for the lease. Only local calls: never waits
/// on the network.
async fn fence_lost_leases(tasks: &Tasks, lease: Lease) {
    let supervisor = tasks.supervisor();
    let Ok(records) = supervisor.kept().await else {
        return;
    };
    let seen = sightings(&tasks.mesh().peers().await);
    for r in records {
        if r.state.is_terminal()
            || r.is_held()
            || !lease::must_fence(&seen, r.keeper.as_ref(), lease.fence_after)
        {
            continue;
        }
        let why = format!(
            "attempt {} stopped: this node heard neither its keeper nor most of the mesh for {:?}; it waits for its keeper, which may have re-placed it",
            r.attempt, lease.fence_after
        );
        if let Err(e) = supervisor.fence(r.id.clone(), why).await {
            warn!(task_id = %r.id, error = %e, "cannot fence a task");
        }
    }
}

/// Re-places the unfinished tasks of dead runners that this node keeps,
/// once no live peer holds a newer record of them (`super::confirm`).
async fn adopt_orphans(
    tasks: &Tasks,
    view: &[PeerView],
    (asking, unplaced): (&mut super::confirm::Asking, &mut RepeatGates<TaskId>),
    now_ms: u64,
    lease: Lease,
) {
    let seen = &sightings(view);
    let dead: BTreeSet<NodeId> = seen
        .iter()
        .filter(|s| lease::may_replace(seen, &s.node, lease.fence_after, lease.margin))
        .map(|s| s.node.clone())
        .collect();
    if dead.is_empty() {
        unplaced.retain(|_| false);
        return;
    }
    let supervisor = tasks.supervisor();
    let Ok(copies) = supervisor.copies().await else {
        return;
    };
    let me = tasks.me();
    let orphans: Vec<_> = failover::orphans(&copies, &me, &dead)
        .into_iter()
        .cloned()
        .collect();
    let lease_ms =
        u64::try_from((lease.fence_after + lease.margin).as_millis()).unwrap_or(u64::MAX);
    let orphans = super::confirm::confirm(tasks, orphans, view, asking, now_ms, lease_ms).await;
    unplaced.retain(|id| orphans.iter().any(|o| &o.id == id));
    let now = tasks.ids.clock().now_ms();
    for orphan in orphans {
        let why = format!("re-placed after its node {} died", orphan.node);
        let replacement = orphan.replacement(why, now);
        let epoch = replacement.epoch;
        let span = info_span!("task", task_id = %orphan.id);
        let placed = tasks
            .place_record(replacement, false)
            .instrument(span)
            .await;
        let id = &orphan.id;
        // Saturating: the copy's attempt is what its runner said.
        let attempt = orphan.attempt.saturating_add(1);
        match placed {
            Ok((node, copy)) => {
                if let Some(last) = unplaced.cleared(id) {
                    info!(task_id = %id, last_error = %last.reason, repeats = last.repeats, "a dead node's task found a place after failed tries");
                }
                info!(task_id = %id, dead = %orphan.node, %node, epoch, attempt, %copy, "re-placed a dead node's task");
                tasks.events().emit(
                    mesh_protocol::events::EventKind::TaskReplaced,
                    id,
                    format!(
                        "its node {} was declared dead by the failure detector and its lease ran out; keeper {me} placed attempt {attempt} on {node}",
                        orphan.node
                    ),
                );
                if let Err(e) = supervisor.replaced(id.clone(), node, epoch, attempt).await {
                    warn!(task_id = %id, error = %e, "cannot record a re-placement");
                }
            }
            Err(e) => match unplaced.failed(id.clone(), &e.to_string()) {
                Some(None) => {
                    warn!(task_id = %id, error = %e, "cannot re-place a dead node's task yet; tried again every round (said again when the reason changes)")
                }
                Some(Some(before)) => {
                    warn!(task_id = %id, error = %e, before = %before.reason, repeats = before.repeats, "cannot re-place a dead node's task yet, for another reason now")
                }
                None => {}
            },
        }
    }
}
