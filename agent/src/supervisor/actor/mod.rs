//! The supervisor's state and its loop. Every change to a task goes through
//! a pure transition in `mesh_protocol::task`, is written to the store, and
//! only then acted upon.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::api::{Health, RuntimeHealth};
use mesh_protocol::auth::Caller;
use mesh_protocol::queue::{Dispatch, QueuedTask, TaskQueue};
use mesh_protocol::task::TransitionError;
use mesh_protocol::{CoreAllocator, TaskId, TaskRecord, TaskState};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod events;
mod keeper;
mod moves;
mod news;
mod retention;
mod views;
mod writes;

use super::audit::AuditLog;
use super::jobs::{self};
use super::{Command, QueueHead, SupervisorConfig, SupervisorError, container};
use crate::images::Pulls;
use crate::logs::LogDir;
use crate::runtime::ContainerRuntime;
use crate::store::Store;

pub(crate) struct Supervisor<R> {
    cfg: SupervisorConfig,
    runtime: Arc<R>,
    store: Store,
    logs: LogDir,
    records: BTreeMap<TaskId, TaskRecord>,
    alloc: CoreAllocator,
    queue: TaskQueue,
    next_seq: u64,
    docker: RuntimeHealth,
    /// Docker's view and ours agree; until then nothing new starts.
    reconciled: bool,
    observing: bool,
    /// Tasks whose current attempt a live job follows.
    watched: BTreeSet<TaskId>,
    /// Stored tasks whose records could not be read (set aside).
    unreadable: BTreeSet<TaskId>,
    /// Tasks loaded starting or running, until the first reconciliation:
    /// queued again by it, they wait for their keeper's word (see
    /// `TaskRecord::hold_after_restart`).
    restarted: BTreeSet<TaskId>,
    /// No new task starts here while set.
    draining: bool,
    /// Copies of tasks other agents run, held as their keeper.
    copies: BTreeMap<TaskId, TaskRecord>,
    /// Tasks this node said it does not hold, whose offers it refuses.
    disclaimed: mesh_protocol::disclaim::Disclaimed,
    /// Why the last write to the store failed, until a retry succeeds:
    /// meanwhile no task is accepted or started here.
    store_error: Option<String>,
    /// Records and copies whose latest state is not on disk yet.
    unsaved: BTreeSet<TaskId>,
    unsaved_copies: BTreeSet<TaskId>,
    jobs: JoinSet<()>,
    events_tx: jobs::Events,
    /// This host's image pulls, shared with the services.
    pulls: Pulls<R>,
    /// `--audit-log`: every change of the allocator's holdings.
    audit: Option<AuditLog>,
    /// Decisions counted for /metrics.
    tally: crate::metrics::Tally,
    /// What was last told of each record (`news`).
    marks: std::collections::HashMap<TaskId, mesh_protocol::events::task::Mark>,
}

impl<R: ContainerRuntime> Supervisor<R> {
    fn now_ms(&self) -> u64 {
        self.cfg.clock.now_ms()
    }

    pub(crate) fn new(
        cfg: SupervisorConfig,
        runtime: Arc<R>,
        pulls: Pulls<R>,
        store: Store,
        logs: LogDir,
        loaded: crate::store::Loaded,
        audit: Option<AuditLog>,
    ) -> Self {
        let alloc = CoreAllocator::new(cfg.topology.model.clone());
        let queue = TaskQueue::new();
        let docker = RuntimeHealth {
            reachable: false,
            endpoint: runtime.endpoint(),
            version: None,
            error: Some("not checked yet".into()),
        };
        // Replaced in `run` with the real sender.
        let (events_tx, _) = mpsc::unbounded_channel();
        let mut supervisor = Self {
            cfg,
            runtime,
            store,
            logs,
            records: BTreeMap::new(),
            alloc,
            queue,
            next_seq: 0,
            docker,
            reconciled: false,
            observing: false,
            watched: BTreeSet::new(),
            unreadable: BTreeSet::new(),
            restarted: BTreeSet::new(),
            draining: false,
            copies: BTreeMap::new(),
            disclaimed: Default::default(),
            store_error: None,
            unsaved: BTreeSet::new(),
            unsaved_copies: BTreeSet::new(),
            jobs: JoinSet::new(),
            events_tx,
            pulls,
            audit,
            tally: crate::metrics::Tally::default(),
            marks: Default::default(),
        };
        supervisor.load(loaded);
        supervisor.audit();
        supervisor
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        self.events_tx = events_tx;
        let mut ping = tokio::time::interval(self.cfg.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(self.cfg.prune_every);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self
                .queue
                .next_wakeup(self.now_ms())
                .map(|t| Duration::from_millis(t.saturating_sub(self.now_ms())))
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(ev) = events.recv() => self.event(ev),
                _ = ping.tick() => {
                    self.retry_writes();
                    self.spawn(jobs::ping(self.runtime.clone(), self.events_tx.clone()));
                }
                _ = prune.tick() => self.prune(),
                Some(_) = self.jobs.join_next(), if !self.jobs.is_empty() => {}
                _ = tokio::time::sleep(wake) => {}
            }
            self.dispatch();
            self.audit();
        }
        // Containers keep running; a restarted agent adopts them.
        self.jobs.abort_all();
        while self.jobs.join_next().await.is_some() {}
        info!(node = %self.cfg.node, "supervisor stopped");
    }

    /// Logs what changed in the core holdings (`--audit-log`).
    fn audit(&mut self) {
        let now = self.now_ms();
        if let Some(log) = &mut self.audit {
            let records = &self.records;
            log.record(&self.alloc, |id| records.contains_key(id), now);
        }
    }

    fn spawn(&mut self, job: impl Future<Output = ()> + Send + 'static) {
        self.jobs.spawn(job);
    }

    /// Rebuilds queue and core holdings from what the store held.
    fn load(&mut self, loaded: crate::store::Loaded) {
        for key in loaded.set_aside {
            warn!(task_id = %key, "a stored task record was set aside (it does not decode): its containers are left alone");
            if let Ok(id) = TaskId::new(key) {
                self.unreadable.insert(id);
            }
        }
        let now = self.now_ms();
        for mut r in loaded.records {
            self.next_seq = self.next_seq.max(r.queue_seq.saturating_add(1));
            match r.state {
                // A task whose offer's outcome is unknown waits outside the
                // queue until the mover asks the node it was offered to.
                TaskState::Queued if r.offered_to.is_none() => {
                    // Its keeper may have re-placed it while this node was
                    // down: held (when it has one) until the keeper answers.
                    let _ = r.hold_after_restart(now);
                    self.queue.put(queued(&r));
                }
                TaskState::Starting | TaskState::Running => {
                    self.restarted.insert(r.id.clone());
                    if let Some(a) = &r.allocation
                        && let Err(e) = self.alloc.take(&r.id, a)
                    {
                        error!(task_id = %r.id, error = %e, "stored allocation conflicts");
                    }
                }
                _ => {}
            }
            self.marks
                .insert(r.id.clone(), mesh_protocol::events::task::Mark::of(&r));
            self.records.insert(r.id.clone(), r);
        }
        self.copies = loaded
            .copies
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        info!(
            tasks = self.records.len(),
            queued = self.queue.len(),
            copies = self.copies.len(),
            set_aside = self.unreadable.len(),
            "loaded task store"
        );
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Offer(record, reply) => {
                let answer = self.offer(*record);
                self.tally.offer(&answer);
                let _ = reply.send(answer);
            }
            Command::SetDraining(draining, migrate, reply) => {
                if draining != self.draining {
                    info!(draining, "drain state changed");
                }
                self.draining = draining;
                if draining && migrate {
                    self.migrate_running();
                }
                let _ = reply.send(());
            }
            Command::Adopt(record, fresh, reply) => {
                let _ = reply.send(self.adopt(*record, fresh));
            }
            Command::Replicate(record, caller, reply) => {
                let _ = reply.send(self.replicate(*record, caller));
            }
            Command::Hold(record, reply) => {
                let _ = reply.send(self.hold(*record));
            }
            Command::Blocked(reply) => {
                let blocked = self
                    .records
                    .values()
                    .filter(|r| r.state == TaskState::Queued && !r.spec.after.is_empty())
                    .map(|r| (r.id.clone(), r.spec.after.clone()))
                    .collect();
                let _ = reply.send(blocked);
            }
            Command::Unblock(id) => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.dependencies_met();
                    if self.queue.contains(&id) {
                        self.queue.put(queued(r));
                    }
                    info!(task_id = %id, "dependencies succeeded");
                    self.persist(&id);
                }
            }
            Command::DependencyFailed(id, why) => {
                let now = self.now_ms();
                if let Some(r) = self.records.get_mut(&id) {
                    match r.dependency_failed(why, now) {
                        Ok(()) => {
                            self.queue.remove(&id);
                            self.persist(&id);
                        }
                        // Killed since the settler saw it waiting.
                        Err(e) => {
                            warn!(task_id = %id, error = %e, "dependency failure not applied")
                        }
                    }
                }
            }
            Command::Copies(reply) => {
                let _ = reply.send(self.copies.values().cloned().collect());
            }
            Command::Copy(id, reply) => {
                let _ = reply.send(self.copies.get(&id).cloned().ok_or_else(|| {
                    SupervisorError::NotFound(format!("no copy of {id} on {}", self.cfg.node))
                }));
            }
            Command::Replaced(id, node, epoch, attempt) => {
                self.tally.replacements += 1;
                self.replaced(&id, node, epoch, attempt)
            }
            Command::Stamps(ids, reply) => {
                let _ = reply.send(self.stamps(&ids));
            }
            Command::ForgetCopy(id) => self.forget_copy(&id),
            Command::ImagesNamed(reply) => {
                let _ = reply.send(
                    self.records
                        .values()
                        .filter(|r| !r.state.is_terminal())
                        .map(|r| r.spec.image.clone())
                        .collect(),
                );
            }
            Command::Kept(reply) => {
                let _ = reply.send(
                    self.records
                        .values()
                        .filter(|r| r.offered_to.is_none())
                        .cloned()
                        .collect(),
                );
            }
            Command::SetKeeper(id, keeper) => self.set_keeper(&id, keeper),
            Command::Supersede(id, why) => self.supersede(&id, why),
            Command::Fence(id, why) => self.fence(&id, why),
            Command::Unhold(id) => self.unhold(&id),
            Command::QueueHead(reply) => {
                let now = self.now_ms();
                let head = self
                    .queue
                    .iter()
                    .find(|t| t.not_before_ms <= now && !t.blocked)
                    .map(|t| QueueHead {
                        id: t.id.clone(),
                        cores: t.cores,
                        image: self
                            .records
                            .get(&t.id)
                            .map(|r| r.spec.image.clone())
                            .unwrap_or_default(),
                    });
                let _ = reply.send(head);
            }
            Command::BeginMove(id, to, reply) => {
                let _ = reply.send(self.begin_move(&id, to));
            }
            Command::EndMove(id, moved) => self.end_move(&id, moved),
            Command::HoldInDoubt(record, to, reply) => {
                let _ = reply.send(self.hold_in_doubt(*record, to));
            }
            Command::InDoubt(reply) => {
                let doubts = self
                    .records
                    .values()
                    .filter(|r| r.state == TaskState::Queued && !self.queue.contains(&r.id))
                    .filter_map(|r| r.offered_to.clone().map(|n| (r.clone(), n)))
                    .collect();
                let _ = reply.send(doubts);
            }
            Command::Disclaim(id, reply) => {
                let _ = reply.send(self.disclaim(id));
            }
            Command::Get(id, reply) => {
                let _ = reply.send(
                    self.records
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| SupervisorError::NotFound(id.to_string())),
                );
            }
            Command::List(after, limit, reply) => {
                let _ = reply.send(self.page(after.as_ref(), limit));
            }
            Command::Kill(id, by, reply) => {
                let _ = reply.send(self.kill(&id, &by));
            }
            Command::Logs(id, reply) => {
                let _ = reply.send(self.logs_at(&id));
            }
            Command::Node(reply) => {
                let _ = reply.send(self.node_view());
            }
            Command::TaskCounts(reply) => {
                let _ = reply.send((self.task_counts(), self.tally.clone()));
            }
            Command::Reserve(holder, cores, reply) => {
                let _ = reply.send(self.reserve(&holder, cores));
            }
            Command::Release(holder) => {
                if self.alloc.release(&holder).is_some() {
                    self.dispatch();
                }
            }
            Command::Health(reply) => {
                let _ = reply.send(Health {
                    ok: self.docker.reachable && self.store_error.is_none(),
                    node: self.cfg.node.clone(),
                    docker: self.docker.clone(),
                    store_error: self.store_error.clone(),
                });
            }
        }
    }

    /// Service containers share the allocator with tasks, so no core is
    /// ever held twice. First come, first served: a steady stream of
    /// service connections can keep a large queued task waiting.
    fn reserve(
        &mut self,
        holder: &TaskId,
        cores: mesh_protocol::CoreCount,
    ) -> Result<super::Reservation, SupervisorError> {
        if self.draining {
            return Err(SupervisorError::Busy(format!(
                "node {} is draining",
                self.cfg.node
            )));
        }
        let allocation = self
            .alloc
            .allocate(holder, cores)
            .map_err(|e| SupervisorError::Busy(e.to_string()))?;
        if !allocation.single_numa() {
            self.alloc.release(holder);
            return Err(SupervisorError::Busy(format!(
                "no NUMA node of {} has {cores} free cores",
                self.cfg.node
            )));
        }
        let (host_cpus, host_mems) = self
            .cfg
            .topology
            .mapping
            .map(&allocation.cpus, &allocation.mems);
        Ok(super::Reservation {
            allocation,
            host_cpus,
            host_mems,
        })
    }

    fn kill(&mut self, id: &TaskId, by: &Caller) -> Result<TaskRecord, SupervisorError> {
        let now = self.now_ms();
        let r = self
            .records
            .get_mut(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))?;
        if !by.may_act_on(&r.owner) {
            return Err(SupervisorError::Forbidden(
                by.refusal(&format!("task {id}"), &r.owner),
            ));
        }
        let done = r
            .kill(now)
            .map_err(|e| SupervisorError::Conflict(e.to_string()))?;
        let container = r.container.clone();
        let snapshot = r.clone();
        if done {
            self.queue.remove(id);
        } else if let Some(c) = container {
            self.spawn(jobs::kill(self.runtime.clone(), id.clone(), c));
        }
        // A starting task is killed as soon as its container is known.
        self.persist(id);
        info!(task_id = %id, by = %by.user, "kill requested");
        Ok(snapshot)
    }

    /// Starts whatever the queue says fits, if Docker is there.
    fn dispatch(&mut self) {
        if self.draining
            || !self.docker.reachable
            || !self.reconciled
            || self.store_error.is_some()
            || self.queue.is_empty()
        {
            return;
        }
        let now = self.now_ms();
        let decisions = self.queue.dispatch(&mut self.alloc, now);
        let mut changed = Vec::new();
        let mut before = Vec::new();
        let mut to_run = Vec::new();
        for d in decisions {
            match d {
                Dispatch::Start(id, allocation) => {
                    let Some(r) = self.records.get_mut(&id) else {
                        self.alloc.release(&id);
                        continue;
                    };
                    before.push(r.clone());
                    if let Err(e) = r.start(allocation.clone(), now) {
                        refused(&e);
                        self.alloc.release(&id);
                        continue;
                    }
                    let spec = container::container_spec(
                        &self.cfg.node,
                        &self.cfg.cluster,
                        r,
                        &allocation,
                        &self.cfg.topology.mapping,
                        self.cfg.network.as_deref(),
                    );
                    changed.push(id.clone());
                    to_run.push((id, r.attempt, spec));
                }
                Dispatch::Impossible(id, e) => {
                    let Some(r) = self.records.get_mut(&id) else {
                        continue;
                    };
                    before.push(r.clone());
                    match r.unplaceable(format!("cannot run on this node: {e}"), now) {
                        Ok(()) => changed.push(id),
                        Err(e) => refused(&e),
                    }
                }
            }
        }
        // Starting is durable before the container exists: a restart then
        // finds either the container (adopt) or nothing (requeue).
        let records: Vec<&TaskRecord> = changed
            .iter()
            .filter_map(|id| self.records.get(id))
            .collect();
        if let Err(e) = self.store.put_all(records) {
            // Not on disk: nothing starts, and the tasks wait as they were.
            for r in before.into_iter().filter(|r| changed.contains(&r.id)) {
                self.alloc.release(&r.id);
                self.queue.put(queued(&r));
                self.records.insert(r.id.clone(), r);
            }
            self.write_failed(&e);
            return;
        }
        for id in &changed {
            self.tell(id);
        }
        self.tally.attempts_started += to_run.len() as u64;
        for (id, attempt, spec) in to_run {
            self.watched.insert(id.clone());
            let policy = self
                .records
                .get(&id)
                .map(|r| r.spec.pull)
                .unwrap_or_default();
            self.jobs.spawn(jobs::run_attempt(
                self.runtime.clone(),
                self.pulls.clone(),
                policy,
                self.logs.clone(),
                spec,
                id,
                attempt,
                self.events_tx.clone(),
            ));
        }
    }
}

/// A transition our own bookkeeping should have allowed was refused (the
/// queue, the jobs and the record disagree): logged, and the record is left
/// as it was, since a refused transition changes nothing.
fn refused(e: &TransitionError) {
    error!(task_id = %e.task, state = %e.state, refused = e.action, "task bookkeeping is off: transition refused, record left as it was");
}

fn queued(r: &TaskRecord) -> QueuedTask {
    QueuedTask {
        id: r.id.clone(),
        cores: r.spec.cores,
        priority: r.spec.priority,
        seq: r.queue_seq,
        not_before_ms: r.not_before_ms,
        blocked: !r.spec.after.is_empty(),
    }
}
