//! What the supervisor does when a job reports: Docker's health, what
//! Docker has after an outage or restart (reconciliation), a container that
//! started, ended or vanished.

use mesh_protocol::image::PullProgress;
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use tracing::{error, info, warn};

use super::{Supervisor, jobs, queued, refused};
use crate::images::EnsureError;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::supervisor::jobs::Event;
use crate::supervisor::reconcile::{Action, reconcile};

impl<R: ContainerRuntime> Supervisor<R> {
    pub(super) fn event(&mut self, ev: Event) {
        match ev {
            Event::Ping(result) => self.on_ping(result),
            Event::Observed(result) => self.on_observed(result),
            Event::Pulling {
                task,
                attempt,
                progress,
            } => self.on_pulling(task, attempt, progress),
            Event::PullFailed {
                task,
                attempt,
                error,
            } => self.on_pull_failed(task, attempt, error),
            Event::Started {
                task,
                attempt,
                result,
                took,
            } => {
                if let (Ok(_), Some(took)) = (&result, took) {
                    self.tally.container_started(took);
                }
                self.on_started(task, attempt, result)
            }
            Event::Exited {
                task,
                attempt,
                code,
            } => self.on_ended(task, attempt, |r, now| r.exited(code, now)),
            Event::Vanished { task, attempt, why } => {
                self.on_ended(task, attempt, |r, now| r.lost(why, now))
            }
            Event::Interrupted {
                task,
                attempt,
                error,
            } => {
                warn!(task_id = %task, attempt, %error, "lost sight of the container; will reconcile");
                self.watched.remove(&task);
                self.runtime_down(&error);
            }
        }
    }

    pub(super) fn runtime_down(&mut self, error: &RuntimeError) {
        if self.docker.reachable {
            error!(endpoint = %self.docker.endpoint, %error, "Docker unreachable; tasks wait in the queue");
        }
        self.docker.reachable = false;
        self.docker.error = Some(error.to_string());
        self.reconciled = false;
    }

    pub(super) fn on_ping(&mut self, result: Result<String, RuntimeError>) {
        match result {
            Ok(version) => {
                if !self.docker.reachable {
                    info!(endpoint = %self.docker.endpoint, %version, "Docker reachable");
                }
                self.docker.reachable = true;
                self.docker.version = Some(version);
                self.docker.error = None;
                if !self.reconciled && !self.observing {
                    self.observing = true;
                    self.spawn(jobs::observe(
                        self.runtime.clone(),
                        self.cfg.node.to_string(),
                        self.cfg.cluster.clone(),
                        self.events_tx.clone(),
                    ));
                }
            }
            Err(e) => self.runtime_down(&e),
        }
    }

    pub(super) fn on_observed(
        &mut self,
        result: Result<Vec<crate::runtime::ContainerInfo>, RuntimeError>,
    ) {
        self.observing = false;
        let containers = match result {
            Ok(c) => c,
            Err(e) => return self.runtime_down(&e),
        };
        let now = self.now_ms();
        for action in reconcile(&self.records, &containers, &self.watched, &self.unreadable) {
            match action {
                Action::Watch { task, container } => {
                    let Some(r) = self.records.get_mut(&task) else {
                        continue;
                    };
                    if let Err(e) = r.container_found(container.clone(), now) {
                        refused(&e);
                        continue;
                    }
                    let attempt = r.attempt;
                    let kill = r.kill_requested;
                    info!(task_id = %task, attempt, container, "adopted container");
                    self.persist(&task);
                    if kill {
                        self.spawn(jobs::kill(
                            self.runtime.clone(),
                            task.clone(),
                            container.clone(),
                        ));
                    }
                    self.follow(task, attempt, container);
                }
                Action::LeaveAlone { task, container } => {
                    warn!(task_id = %task, container, "left alone: the container of a task whose record was set aside (see set-aside/ in the data dir)");
                }
                Action::Remove { container, why } => {
                    info!(container, why, "removing stray container");
                    self.spawn(jobs::remove(self.runtime.clone(), container.clone(), why));
                    // An ended attempt whose cores wait for this container
                    // to go: followed to its end, which gives them back.
                    if let Some((task, attempt)) = self.held_by_stray(&containers, &container) {
                        self.follow(task, attempt, container);
                    }
                }
                Action::Requeue { task } => {
                    self.alloc.release(&task);
                    let Some(r) = self.records.get_mut(&task) else {
                        continue;
                    };
                    if let Err(e) = r.requeue_unavailable(
                        "the agent stopped before the container was created".into(),
                        now,
                    ) {
                        refused(&e);
                        continue;
                    }
                    if self.restarted.contains(&task) {
                        let _ = r.hold_after_restart(now);
                    }
                    if r.state == TaskState::Queued {
                        self.queue.put(queued(r));
                    }
                    self.persist(&task);
                }
                Action::Lost { task } => {
                    let restarted = self.restarted.contains(&task);
                    self.on_ended_now(&task, now, |r, now| {
                        r.lost(
                            "its container disappeared while the agent was away".into(),
                            now,
                        )?;
                        // A retry waits for the keeper like a requeued start.
                        if restarted {
                            let _ = r.hold_after_restart(now);
                        }
                        Ok(())
                    });
                }
            }
        }
        self.restarted.clear();
        self.release_unheld(&containers);
        self.reconciled = true;
        info!(containers = containers.len(), "reconciled with Docker");
    }

    /// A pull moved: shown, not stored (a restart requeues a starting task
    /// anyway).
    fn on_pulling(&mut self, task: TaskId, attempt: u32, progress: PullProgress) {
        let now = self.now_ms();
        let Some(r) = self.records.get_mut(&task).filter(|r| r.attempt == attempt) else {
            return;
        };
        if let Err(e) = r.pulling(progress, now) {
            refused(&e);
        }
    }

    /// The image could not be had: the attempt fails, and the task with it
    /// unless the failure may pass (an unreachable registry).
    fn on_pull_failed(&mut self, task: TaskId, attempt: u32, error: EnsureError) {
        let now = self.now_ms();
        if self.records.get(&task).is_none_or(|r| r.attempt != attempt) {
            return;
        }
        warn!(task_id = %task, attempt, %error, "image not available");
        let may_pass = error.may_succeed_later();
        self.not_started(task, error.to_string(), may_pass, now);
    }

    /// The attempt's container could not be had: a failed attempt (or a
    /// failed task, when retrying cannot help), or killed if asked to be.
    fn not_started(&mut self, task: TaskId, why: String, may_pass: bool, now: u64) {
        let Some(r) = self.records.get_mut(&task) else {
            return;
        };
        self.watched.remove(&task);
        self.alloc.release(&task);
        let ended = if r.kill_requested {
            r.lost(format!("killed; it had not started: {why}"), now)
        } else {
            r.could_not_start(why, may_pass, now)
        };
        if let Err(refusal) = ended {
            return refused(&refusal);
        }
        if r.state == TaskState::Queued {
            self.queue.put(queued(r));
        }
        self.persist(&task);
    }

    /// Follows `container`, the attempt's, to its end (which the job
    /// reports, giving back its cores).
    fn follow(&mut self, task: TaskId, attempt: u32, container: String) {
        self.watched.insert(task.clone());
        self.spawn(jobs::watch(
            self.runtime.clone(),
            self.logs.clone(),
            container,
            task,
            attempt,
            self.events_tx.clone(),
        ));
    }

    /// The ended attempt, still holding its cores and followed by no job,
    /// whose task `container` (a stray) belongs to.
    fn held_by_stray(
        &self,
        containers: &[crate::runtime::ContainerInfo],
        container: &str,
    ) -> Option<(TaskId, u32)> {
        let c = containers.iter().find(|c| c.id == container)?;
        let task = TaskId::new(c.labels.get(mesh_protocol::labels::TASK)?.as_str()).ok()?;
        let r = self.records.get(&task)?;
        let ended = !matches!(r.state, TaskState::Starting | TaskState::Running);
        (ended && !self.watched.contains(&task) && self.alloc.allocation(&task).is_some())
            .then_some((task, r.attempt))
    }

    /// Gives back the cores of ended attempts that no container of Docker's
    /// and no job holds any more.
    fn release_unheld(&mut self, containers: &[crate::runtime::ContainerInfo]) {
        let ended: Vec<TaskId> = self
            .records
            .values()
            .filter(|r| !matches!(r.state, TaskState::Starting | TaskState::Running))
            .filter(|r| !self.watched.contains(&r.id) && self.alloc.allocation(&r.id).is_some())
            .filter(|r| {
                !containers.iter().any(|c| {
                    c.labels
                        .get(mesh_protocol::labels::TASK)
                        .map(String::as_str)
                        == Some(r.id.as_str())
                })
            })
            .map(|r| r.id.clone())
            .collect();
        for id in ended {
            info!(task_id = %id, "no container holds an ended attempt's cores any more");
            self.alloc.release(&id);
        }
    }

    pub(super) fn on_started(
        &mut self,
        task: TaskId,
        attempt: u32,
        result: Result<String, RuntimeError>,
    ) {
        let now = self.now_ms();
        let current = self
            .records
            .get_mut(&task)
            .filter(|r| r.attempt == attempt && r.state == TaskState::Starting);
        let Some(r) = current else {
            // Superseded (or otherwise ended) while its container was being
            // started: the container must not run on. The job that started
            // it follows it to its end, which gives its cores back.
            if let Ok(container) = result {
                warn!(task_id = %task, attempt, container, "a container started for an attempt that is no longer current; removing it");
                self.spawn(jobs::remove(
                    self.runtime.clone(),
                    container,
                    "started for an attempt no longer current",
                ));
            } else if self
                .records
                .get(&task)
                .is_some_and(|r| r.attempt == attempt)
            {
                self.watched.remove(&task);
                self.alloc.release(&task);
            }
            return;
        };
        match result {
            Ok(container) => {
                if let Err(e) = r.started(container.clone(), now) {
                    return refused(&e);
                }
                info!(task_id = %task, attempt, container, cpus = %r.allocation.as_ref().map(|a| a.cpus.to_string()).unwrap_or_default(), "task running");
                if r.kill_requested || r.migrating {
                    self.spawn(jobs::kill(self.runtime.clone(), task.clone(), container));
                }
                self.persist(&task);
            }
            Err(e) if e.is_unavailable() => {
                self.watched.remove(&task);
                self.alloc.release(&task);
                match r.requeue_unavailable(e.to_string(), now) {
                    Ok(()) => {
                        if r.state == TaskState::Queued {
                            self.queue.put(queued(r));
                        }
                        self.persist(&task);
                    }
                    Err(refusal) => refused(&refusal),
                }
                self.runtime_down(&e);
            }
            Err(e) => {
                warn!(task_id = %task, attempt, error = %e, "container did not start");
                self.not_started(task, format!("could not start: {e}"), true, now);
            }
        }
    }

    pub(super) fn on_ended(
        &mut self,
        task: TaskId,
        attempt: u32,
        apply: impl FnOnce(&mut TaskRecord, u64) -> Result<(), mesh_protocol::task::TransitionError>,
    ) {
        if self.records.get(&task).is_none_or(|r| r.attempt != attempt) {
            return;
        }
        self.watched.remove(&task);
        self.on_ended_now(&task, self.now_ms(), apply);
    }

    /// Applies the end of the current attempt, whose container is gone:
    /// cores back (whatever the record says, as nothing holds them any
    /// more), then a retry queued or the final state.
    pub(super) fn on_ended_now(
        &mut self,
        task: &TaskId,
        now: u64,
        apply: impl FnOnce(&mut TaskRecord, u64) -> Result<(), mesh_protocol::task::TransitionError>,
    ) {
        self.alloc.release(task);
        let Some(r) = self.records.get_mut(task) else {
            return;
        };
        if let Err(e) = apply(r, now) {
            // A superseded attempt's container, removed: only its cores.
            info!(task_id = %task, state = %r.state, error = %e, "container of an ended attempt is gone");
            return;
        }
        if r.state == TaskState::Queued {
            // A retry: back of its priority class.
            match r.requeued_at(self.next_seq) {
                Ok(()) => {
                    self.next_seq = self.next_seq.saturating_add(1);
                    self.queue.put(queued(r));
                    self.tally.retries += 1;
                }
                Err(e) => refused(&e),
            }
        }
        info!(task_id = %task, state = %r.state, exit_code = ?r.exit_code, message = ?r.message, "attempt ended");
        self.persist(task);
    }
}
