//! Accepting a task anywhere in the mesh: rank the nodes from this node's
//! gossip view (`mesh_protocol::placement`; among equal nodes, one that
//! holds the task's image first), offer the task to each in turn
//! (the chosen node allocates on receipt and refuses if its real state no
//! longer fits), and queue it here when nobody can take it now.

use mesh_protocol::api::{CopyStatus, SubmitResponse};
use mesh_protocol::auth::Caller;
use mesh_protocol::events::EventKind;
use mesh_protocol::failover;
use mesh_protocol::image::Wanted;
use mesh_protocol::placement::{self, OfferOutcome, PlacementError, Reply, offer_outcome};
use mesh_protocol::rpc::ErrorKind;
use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskSpec, TaskState};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Node, TaskError, Tasks};
use crate::metrics::Placed;
use crate::supervisor::SupervisorError;

/// Offers tried before queueing here.
const MAX_OFFERS: usize = 4;

impl Tasks {
    /// Places a new task; see the module documentation.
    /// Places a new task for `by`, who owns it; see the module documentation.
    pub async fn submit(&self, spec: TaskSpec, by: &Caller) -> Result<SubmitResponse, TaskError> {
        self.submit_as(self.ids.task_id(), spec, by).await
    }

    /// Places an array: `count` members `<parent>-<index>`, each with its
    /// index and the count in its environment. All or nothing: when one is
    /// refused, the members already accepted are killed.
    pub async fn submit_array(
        &self,
        spec: TaskSpec,
        count: u32,
        by: &Caller,
    ) -> Result<SubmitResponse, TaskError> {
        let parent = self.ids.task_id();
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
            match self.submit_as(id, member, by).await {
                Ok(r) => members.push(r),
                Err(e) => {
                    for m in &members {
                        if let Err(k) = self.kill_anywhere(&m.id, by).await {
                            warn!(task_id = %m.id, error = %k, "cannot take back an array member");
                        }
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
            copy: None,
        })
    }

    /// Places a task under a given id.
    async fn submit_as(
        &self,
        id: TaskId,
        spec: TaskSpec,
        by: &Caller,
    ) -> Result<SubmitResponse, TaskError> {
        let record = TaskRecord::new(id.clone(), spec, self.me(), 0, self.ids.clock().now_ms())
            .owned_by(by.user.clone());
        let (node, copy) = self
            .place_record(record, true)
            .instrument(info_span!("task", task_id = %id))
            .await?;
        Ok(SubmitResponse {
            id,
            state: TaskState::Queued,
            node: Some(node),
            members: Vec::new(),
            copy: Some(copy),
        })
    }

    /// Places a record (new, or a keeper's replacement of a dead runner's):
    /// offered to the ranked nodes in turn, else queued here. Before this
    /// returns, the task is stored by its runner and, when the mesh has
    /// another live node, by its keeper, if the keeper could keep it.
    /// Returns the node that took it and what became of the keeper's copy.
    /// The time from the start to a node taking it (the keeper's copy not
    /// included) is observed in `meshd_task_placement_seconds`.
    pub async fn place_record(
        &self,
        record: TaskRecord,
        fresh: bool,
    ) -> Result<(NodeId, CopyStatus), TaskError> {
        let started = tokio::time::Instant::now();
        let took = |outcome| self.placement_times.observe(outcome, started.elapsed());
        let id = record.id.clone();
        let me = self.me();
        let view = self.mesh.candidates().await;
        let wanted = Wanted::of(&record.spec.image);
        let order = match placement::rank(&id, record.spec.cores, wanted.as_ref(), &view) {
            // A task waiting for others waits here; it moves once free.
            Ok(_) if !record.spec.after.is_empty() => Vec::new(),
            Ok(order) => order,
            Err(e @ PlacementError::NeverFits { .. }) => {
                return Err(SupervisorError::Impossible(e.to_string()).into());
            }
            // Nobody has room now: it waits here.
            Err(PlacementError::Busy { .. }) => Vec::new(),
        };
        let peers = self.peers().await;
        let live = live_ids(&me, &peers);
        for id_of in order.into_iter().take(MAX_OFFERS) {
            let Some(node) = self.node_in(&id_of, &peers) else {
                continue;
            };
            let mut offered = record.clone();
            name_keeper(&mut offered, &node.id, &me, &live);
            match self.offer_once(&node, offered.clone()).await {
                Offered::Taken => {
                    info!(node = %node.id, keeper = ?offered.keeper, "task placed");
                    took(Placed::Offered);
                    self.tell_placed(&record, fresh, format!("on {}: it had room", node.id));
                    offered.placed_on(node.id.clone());
                    let copy = self.keep_copy(&peers, offered).await;
                    return Ok((node.id, copy));
                }
                Offered::Refused(e) => {
                    debug!(node = %node.id, error = %e, "offer refused; trying the next node")
                }
                Offered::InDoubt(e) => {
                    // It may run there: never offered elsewhere until that
                    // node says. Its runner, if it took it, pushes to the
                    // keeper named in the offer; if not, it runs here and
                    // gets a keeper as a runner does. So the record held
                    // names no keeper (settling it gives no copy away).
                    warn!(node = %node.id, error = %e, "offer's answer lost; the task waits here until that node says whether it took it");
                    self.tell_placed(
                        &record,
                        fresh,
                        format!("offered to {}, which did not answer; it waits on {me} until that node says whether it took it", node.id),
                    );
                    self.supervisor
                        .hold_in_doubt(record.clone(), node.id.clone())
                        .await?;
                    took(Placed::InDoubt);
                    let copy = CopyStatus::NotKept {
                        node: node.id.clone(),
                        reason: format!("{} did not answer the offer; asked again", node.id),
                    };
                    return Ok((node.id, copy));
                }
            }
        }
        // Nobody could start it now: it waits in this node's queue (for a
        // node that fits it, when it is larger than this one).
        let mut queued = record.clone();
        name_keeper(&mut queued, &me, &me, &live);
        match self.supervisor.adopt(queued.clone(), fresh).await {
            Ok(()) => {
                took(Placed::Queued);
                self.tell_placed(
                    &record,
                    fresh,
                    format!("queued on {me}: no node can start it now"),
                );
                queued.placed_on(me.clone());
                let copy = self.keep_copy(&peers, queued).await;
                Ok((me, copy))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Tells that a task was accepted (when `fresh`) and placed; a keeper's
    /// re-placement is told by the keeper, with its cause.
    fn tell_placed(&self, record: &TaskRecord, fresh: bool, placed: String) {
        if !fresh {
            return;
        }
        let spec = &record.spec;
        self.events.emit(
            EventKind::TaskAccepted,
            &record.id,
            format!(
                "submitted by {} to {}: {} core{}, image {}",
                record.owner,
                self.me(),
                spec.cores,
                if spec.cores.get() == 1 { "" } else { "s" },
                spec.image
            ),
        );
        self.events.emit(EventKind::TaskPlaced, &record.id, placed);
    }

    /// Offers `record` to `node`. An offer without an answer may still have
    /// been taken: the node is asked before the next one is tried (and,
    /// saying it does not hold the task, refuses the offer should it still
    /// arrive: `mesh_protocol::disclaim`); when that goes unanswered too,
    /// the outcome is in doubt (the task must not be offered to another
    /// node, or it may start twice).
    async fn offer_once(&self, node: &Node, record: TaskRecord) -> Offered {
        let id = record.id.clone();
        let offer = node.offer(record).await;
        let check = match &offer {
            // Asked so that a late offer is refused: a "not here" holds.
            Err(TaskError::Unreachable { .. }) => Some(node.disclaim(&id).await),
            _ => None,
        };
        let answered = match &offer {
            Ok(()) => Reply::Yes,
            Err(TaskError::Unreachable { .. }) => Reply::Silent,
            Err(_) => Reply::No,
        };
        let holds = check.as_ref().map(|c| match c {
            Ok(_) => Reply::Yes,
            Err(e) if e.kind() == ErrorKind::NotFound => Reply::No,
            Err(_) => Reply::Silent,
        });
        let outcome = offer_outcome(answered, holds);
        match (outcome, offer) {
            (OfferOutcome::Taken, _) => Offered::Taken,
            (OfferOutcome::Refused, Err(e)) => Offered::Refused(e),
            (OfferOutcome::InDoubt, Err(e)) => Offered::InDoubt(e),
            // An accepted offer is taken whatever the check says.
            (_, Ok(())) => Offered::Taken,
        }
    }

    /// Stores the keeper's copy of a just-placed task: here, or on the
    /// keeper (tried twice). A failure leaves one copy (the runner's), is
    /// logged and returned; the runner's next push stores it once the
    /// keeper can.
    pub async fn keep_copy(&self, peers: &[Node], record: TaskRecord) -> CopyStatus {
        let Some(keeper) = record.keeper.clone() else {
            return CopyStatus::NoKeeper {
                reason: "no other live node in the mesh".into(),
            };
        };
        let Some(node) = self.node_in(&keeper, peers) else {
            return CopyStatus::NotKept {
                node: keeper,
                reason: "not a live node now".into(),
            };
        };
        let id = record.id.clone();
        let mut answer = node.hold(record.clone()).await;
        if answer.is_err() && !node.is_here() {
            answer = node.hold(record).await;
        }
        match answer {
            Ok(()) => CopyStatus::Kept {
                node: keeper,
                current: true,
            },
            Err(e) => {
                warn!(task_id = %id, %keeper, error = %e, "keeper did not store its copy; one copy for now");
                CopyStatus::NotKept {
                    node: keeper,
                    reason: e.to_string(),
                }
            }
        }
    }
}

/// What became of one offer (`mesh_protocol::placement::offer_outcome`).
enum Offered {
    Taken,
    Refused(TaskError),
    InDoubt(TaskError),
}

/// The ids of the live nodes: these peers and this node.
pub fn live_ids(me: &NodeId, peers: &[Node]) -> Vec<NodeId> {
    peers
        .iter()
        .map(|n| n.id.clone())
        .chain([me.clone()])
        .collect()
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

/// Gives `record`, about to run on `runner`, the keeper [`keeper_for`]
/// chooses (or none, when the mesh has no other live node).
pub fn name_keeper(record: &mut TaskRecord, runner: &NodeId, me: &NodeId, live: &[NodeId]) {
    match keeper_for(record, runner, me, live) {
        Some(keeper) => record.keeper_set(keeper),
        None => record.keeper_dropped(),
    }
}
