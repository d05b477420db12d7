//! Before re-placing a dead runner's tasks, a keeper asks every live peer
//! what it holds of them (decisions in `mesh_protocol::confirm`): a copy
//! that went stale while this keeper was away (the runner pushed its later
//! changes, the end among them, to another keeper) is forgotten when the
//! task ended, left alone while a newer record is held elsewhere, and never
//! re-placed.

use std::collections::{BTreeSet, HashMap};

use mesh_protocol::confirm::{self, Asked, Stamp, Standing};
use mesh_protocol::gossip::{PeerState, PeerView};
use mesh_protocol::{TaskId, TaskRecord};
use tracing::{debug, info, warn};

use super::{Node, Tasks};

/// Since when (ms on the keeper loop's clock) each orphan has been asked
/// about: after a lease, silent peers no longer hold it up.
#[derive(Default)]
pub struct Asking {
    since: HashMap<TaskId, u64>,
}

/// Of `orphans`, the ones no live peer outdates: those to re-place now.
/// Forgets the copies of tasks that ended elsewhere.
pub async fn confirm(
    tasks: &Tasks,
    orphans: Vec<TaskRecord>,
    view: &[PeerView],
    asking: &mut Asking,
    now_ms: u64,
    lease_ms: u64,
) -> Vec<TaskRecord> {
    let ids: Vec<TaskId> = orphans.iter().map(|o| o.id.clone()).collect();
    let wanted: BTreeSet<&TaskId> = ids.iter().collect();
    asking.since.retain(|id, _| wanted.contains(id));
    for id in &ids {
        asking.since.entry(id.clone()).or_insert(now_ms);
    }
    let peers: Vec<Node> = view
        .iter()
        .filter(|p| !p.is_self && p.state == PeerState::Alive)
        .map(|p| Node::peer(p.node.clone(), tasks.mesh().clone(), p.gossip_addr))
        .collect();
    let answers = futures_util::future::join_all(peers.iter().map(|p| ask_all(p, &ids))).await;
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
        let waited = now_ms.saturating_sub(asking.since.get(&orphan.id).copied().unwrap_or(now_ms));
        let asked = Asked {
            known: view.len(),
            asked: peers.len(),
            answered,
            waited_out: waited > lease_ms,
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

/// Every stamp `peer` holds of `ids`, asked in chunks of at most
/// `confirm::MAX_IDS`.
async fn ask_all(peer: &Node, ids: &[TaskId]) -> Result<Vec<Stamp>, super::TaskError> {
    let mut stamps = Vec::new();
    for chunk in ids.chunks(confirm::MAX_IDS) {
        stamps.extend(peer.stamps(chunk.to_vec()).await?);
    }
    Ok(stamps)
}
