//! Before re-placing a dead runner's tasks, a keeper asks every live peer
//! what it holds of them (decisions in `mesh_protocol::confirm`): a copy
//! that went stale while this keeper was away (the runner pushed its later
//! changes, the end among them, to another keeper) is forgotten when the
//! task ended, left alone while a newer record is held elsewhere, and never
//! re-placed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mesh_protocol::confirm::{self, Asked, Backoff, Question, Standing};
use mesh_protocol::gossip::PeerView;
use mesh_protocol::{NodeId, TaskId, TaskRecord};
use tracing::{debug, info, warn};

use super::{Node, Tasks};

/// Since when (ms on the keeper loop's clock) each orphan has been asked
/// about: after a lease, silent peers no longer hold it up. And when to
/// ask again about orphans still unsettled (`confirm::Backoff`).
#[derive(Default)]
pub struct Asking {
    since: HashMap<TaskId, u64>,
    backoff: Backoff,
}

/// Of `orphans`, the ones no live peer outdates: those to re-place now.
/// Forgets the copies of tasks that ended elsewhere. Asks nothing, and
/// returns none, while the back-off says the same orphans were asked about
/// too recently (an orphan the mesh has no room for stays one).
pub async fn confirm(
    tasks: &Tasks,
    orphans: Vec<TaskRecord>,
    view: &[PeerView],
    asking: &mut Asking,
    now_ms: u64,
    lease_ms: u64,
) -> Vec<TaskRecord> {
    if orphans.is_empty() {
        *asking = Asking::default();
        return Vec::new();
    }
    let ids: Vec<TaskId> = orphans.iter().map(|o| o.id.clone()).collect();
    let wanted: BTreeSet<&TaskId> = ids.iter().collect();
    asking.since.retain(|id, _| wanted.contains(id));
    for id in &ids {
        asking.since.entry(id.clone()).or_insert(now_ms);
    }
    let waited_out = |id: &TaskId| {
        let since = asking.since.get(id).copied().unwrap_or(now_ms);
        now_ms.saturating_sub(since) > lease_ms
    };
    let peers: Vec<Node> = view
        .iter()
        .filter(|p| !p.is_self && p.state.is_live())
        .map(|p| Node::peer(p.node.clone(), tasks.mesh().clone(), p.gossip_addr))
        .collect();
    let question = Question {
        orphans: ids.iter().cloned().collect(),
        peers: peers.iter().map(|p| p.id.clone()).collect(),
        waited_out: ids.iter().filter(|id| waited_out(id)).cloned().collect(),
    };
    if !asking.backoff.ask_now(question, now_ms) {
        return Vec::new();
    }
    debug!(
        orphans = ids.len(),
        peers = peers.len(),
        "asking live peers what they hold of orphans"
    );
    let answers = futures_util::future::join_all(peers.iter().map(|p| p.stamps(ids.clone()))).await;
    let mut heard = Vec::new();
    let mut answered = 0;
    for (peer, answer) in peers.iter().zip(answers) {
        match answer {
            Ok(stamps) => {
                answered += 1;
                heard.extend(stamps);
            }
            Err(e) => debug!(peer = %peer.id, error = %e, "a peer did not say what it holds"),
        }
    }
    let supervisor = tasks.supervisor();
    let mut replace = Vec::new();
    for orphan in orphans {
        let asked = Asked {
            known: view.len(),
            asked: peers.len(),
            answered,
            waited_out: waited_out(&orphan.id),
        };
        match confirm::standing(&orphan, &heard, asked) {
            Standing::Replace => replace.push(orphan),
            Standing::Ended => {
                info!(task_id = %orphan.id, runner = %orphan.node, "not re-placed: a newer record elsewhere says it ended");
                if let Err(e) = supervisor.forget_copy(orphan.id.clone()).await {
                    warn!(task_id = %orphan.id, error = %e, "cannot forget a stale copy");
                }
            }
            Standing::Wait(why) => {
                debug!(task_id = %orphan.id, runner = %orphan.node, why, "not re-placed yet")
            }
        }
    }
    replace
}

/// Asks the live runners of this keeper's unfinished copies what they hold
/// of them, and forgets the copies whose runner says the task ended (see
/// `confirm::ended_elsewhere`). Only the runner's own word counts: it is
/// alive and answers, so nothing is re-placed on it.
pub async fn refresh(tasks: &Tasks, view: &[PeerView]) {
    let supervisor = tasks.supervisor();
    let Ok(copies) = supervisor.copies().await else {
        return;
    };
    let me = tasks.me();
    let mut by_runner: BTreeMap<&NodeId, Vec<&TaskRecord>> = BTreeMap::new();
    for c in copies
        .iter()
        .filter(|c| !c.state.is_terminal() && c.node != me)
    {
        by_runner.entry(&c.node).or_default().push(c);
    }
    let runners: Vec<(Node, Vec<&TaskRecord>)> = by_runner
        .into_iter()
        .filter_map(|(runner, held)| {
            let p = view
                .iter()
                .find(|p| &p.node == runner && !p.is_self && p.state.is_live())?;
            Some((
                Node::peer(p.node.clone(), tasks.mesh().clone(), p.gossip_addr),
                held,
            ))
        })
        .collect();
    let answers = futures_util::future::join_all(runners.iter().map(|(runner, held)| {
        let ids: Vec<TaskId> = held.iter().map(|c| c.id.clone()).collect();
        async move { runner.stamps(ids).await }
    }))
    .await;
    for ((runner, held), answer) in runners.iter().zip(answers) {
        let stamps = match answer {
            Ok(stamps) => stamps,
            Err(e) => {
                debug!(peer = %runner.id, error = %e, "a runner did not say what it holds");
                continue;
            }
        };
        for copy in held.iter().filter(|c| confirm::ended_elsewhere(c, &stamps)) {
            info!(task_id = %copy.id, runner = %runner.id, "its runner says the task ended: the copy here is stale");
            if let Err(e) = supervisor.forget_copy(copy.id.clone()).await {
                warn!(task_id = %copy.id, error = %e, "cannot forget a stale copy");
            }
        }
    }
}
