//! The batch task model: what a user asks for (`TaskSpec`), where a task is
//! in its life (`TaskState`), and the record the agent stores, with the pure
//! transitions between states.
//!
//! ```text
//! queued -> starting -> running -> succeeded | failed | killed | lost
//!    ^          |           |
//!    +----------+-----------+  (retry with backoff, or Docker unavailable)
//! ```
//!
//! The agent changes a record only through these transitions (never by
//! setting a field): a transition that the record's state does not allow
//! returns an error and leaves the record as it was. Those that move a task
//! between nodes are in `handover`.

mod handover;
mod spec;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use spec::{
    MAX_AFTER, MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, MAX_ENV_BYTES, MAX_ENV_ENTRIES,
    MAX_IMAGE_BYTES, MAX_LABELS, MAX_LABELS_BYTES, MAX_NAME_BYTES, MAX_RETRIES, SpecError,
    TaskSpec, TaskSpecBuilder,
};

use crate::alloc::Allocation;
use crate::ids::{NodeId, TaskId, UserName};
use crate::image::PullProgress;

/// First retry delay; doubles per attempt up to `MAX_BACKOFF_MS`.
pub const BASE_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Killed,
    Lost,
}

impl TaskState {
    /// Every state, in the order of a task's life.
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Killed | TaskState::Lost
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition that the task's current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task} is {state}: cannot {action}")]
pub struct TransitionError {
    pub task: TaskId,
    pub state: TaskState,
    pub action: &'static str,
}

/// A re-placement older than the attempt a copy already names: the copy
/// follows the newest attempt only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "task {task} is at (epoch, attempt) {current:?} already: an attempt {given:?} is not newer"
)]
pub struct StaleAttempt {
    pub task: TaskId,
    pub current: (u32, u32),
    pub given: (u32, u32),
}

/// Everything the agent stores about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub state: TaskState,
    /// The node that runs (or last ran) it.
    pub node: NodeId,
    /// The current attempt's number: starts that counted against retries.
    pub attempt: u32,
    /// Every container ever created for this task, counted; names and
    /// labels containers, so a start retried after an outage never reuses
    /// the name of a container that may still exist.
    pub starts: u32,
    /// Position in the queue among equal priorities (set on accept, renewed
    /// on retry).
    pub queue_seq: u64,
    /// The cores of the current (or, once ended, the last) attempt.
    pub allocation: Option<Allocation>,
    pub container: Option<String>,
    pub exit_code: Option<i64>,
    /// Why it failed, was lost or is waiting, in words.
    pub message: Option<String>,
    pub kill_requested: bool,
    /// Stopped to move elsewhere (`drain --migrate`): when its container
    /// ends it goes back to the queue as a new attempt, whatever the code.
    pub migrating: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Not before this time (retry backoff).
    pub not_before_ms: u64,
    /// Set while this queued task is being offered to that node: until the
    /// answer is known, the task is out of the queue (it must not start in
    /// two places).
    pub offered_to: Option<NodeId>,
    /// The other agent that holds a durable copy of this task and re-places
    /// it if the runner dies (None: a one-node mesh, nobody to hold it).
    pub keeper: Option<NodeId>,
    /// How many times a keeper re-placed this task after its runner died.
    /// A re-placement outranks every attempt of the epoch before it: a
    /// runner that retried while cut off counts attempts of its own, which
    /// say nothing against the keeper's re-placement.
    pub epoch: u32,
    /// While starting, the pull of its image under way: shown as state
    /// `pulling`. Not a state of its own: a restart requeues a starting
    /// task whatever it was doing.
    #[serde(default)]
    pub pull: Option<PullProgress>,
    /// The API user who submitted it: only they or an admin may kill it.
    /// Records from before owners were kept have `unknown` (admins only).
    #[serde(default = "crate::auth::unknown_owner")]
    pub owner: UserName,
}

/// Delay before the retry that follows attempt `attempt` (1-based).
pub fn backoff_ms(attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(16);
    (BASE_BACKOFF_MS << shift).min(MAX_BACKOFF_MS)
}

impl TaskRecord {
    pub fn new(id: TaskId, spec: TaskSpec, node: NodeId, queue_seq: u64, now: u64) -> Self {
        Self {
            id,
            spec,
            state: TaskState::Queued,
            node,
            attempt: 0,
            starts: 0,
            queue_seq,
            allocation: None,
            container: None,
            exit_code: None,
            message: None,
            kill_requested: false,
            migrating: false,
            created_ms: now,
            updated_ms: now,
            started_ms: None,
            finished_ms: None,
            not_before_ms: now,
            offered_to: None,
            keeper: None,
            epoch: 0,
            pull: None,
            owner: crate::auth::unknown_owner(),
        }
    }

    /// The order of this record's attempts across nodes: the re-placement
    /// epoch first, then the attempt within it.
    pub fn generation(&self) -> (u32, u32) {
        (self.epoch, self.attempt)
    }

    /// The same record, submitted by `owner`.
    pub fn owned_by(mut self, owner: UserName) -> Self {
        self.owner = owner;
        self
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError {
            task: self.id.clone(),
            state: self.state,
            action,
        }
    }

    fn finish(&mut self, state: TaskState, now: u64) {
        self.pull = None;
        self.state = state;
        self.finished_ms = Some(now);
        self.updated_ms = now;
    }

    /// queued -> starting, with the cores it was given.
    pub fn start(&mut self, allocation: Allocation, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued {
            return Err(self.refuse("start"));
        }
        self.state = TaskState::Starting;
        // Saturating: a record from a peer may carry any count.
        self.attempt = self.attempt.saturating_add(1);
        self.starts = self.starts.saturating_add(1);
        self.allocation = Some(allocation);
        self.container = None;
        self.exit_code = None;
        self.message = None;
        self.updated_ms = now;
        Ok(())
    }

    /// starting -> running in `container`.
    pub fn started(&mut self, container: String, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Starting {
            return Err(self.refuse("mark running"));
        }
        self.state = TaskState::Running;
        self.pull = None;
        self.container = Some(container);
        self.started_ms = Some(now);
        self.updated_ms = now;
        Ok(())
    }

    /// Reconciliation found the current attempt's container: a starting
    /// task is now running in it; a running one is followed in it.
    pub fn container_found(&mut self, container: String, now: u64) -> Result<(), TransitionError> {
        match self.state {
            TaskState::Starting => self.started(container, now),
            TaskState::Running => {
                self.container = Some(container);
                Ok(())
            }
            _ => Err(self.refuse("take a container as its current attempt")),
        }
    }

    /// Starting or running -> stopping to move elsewhere (`drain
    /// --migrate`): when its container ends it queues again as a new attempt.
    pub fn stop_to_migrate(&mut self) -> Result<(), TransitionError> {
        if !matches!(self.state, TaskState::Starting | TaskState::Running) {
            return Err(self.refuse("stop to migrate"));
        }
        self.migrating = true;
        Ok(())
    }

    /// A queued retry goes behind the tasks already waiting (of its
    /// priority): its place in the queue is now `seq`.
    pub fn requeued_at(&mut self, seq: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued {
            return Err(self.refuse("take a new place in the queue"));
        }
        self.queue_seq = seq;
        Ok(())
    }

    /// Every task it waited for succeeded: it no longer waits for any.
    pub fn dependencies_met(&mut self) {
        self.spec.after.clear();
    }

    /// starting -> queued, keeping its place: the runtime was unavailable,
    /// which is not the task's fault and does not use up an attempt. A task
    /// whose kill was asked for meanwhile ends killed instead.
    pub fn requeue_unavailable(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Starting {
            return Err(self.refuse("requeue"));
        }
        if self.kill_requested {
            self.container = None;
            self.message = Some(format!("killed before it started ({why})"));
            self.finish(TaskState::Killed, now);
            return Ok(());
        }
        self.state = TaskState::Queued;
        self.pull = None;
        self.attempt = self.attempt.saturating_sub(1);
        self.allocation = None;
        self.container = None;
        self.message = Some(why);
        self.updated_ms = now;
        Ok(())
    }

    /// The container could not be created or started (bad image, bad
    /// command): a failed attempt.
    pub fn start_failed(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        self.could_not_start(why, true, now)
    }

    /// starting: its image is being pulled, this far.
    pub fn pulling(&mut self, progress: PullProgress, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Starting {
            return Err(self.refuse("record a pull"));
        }
        self.pull = Some(progress);
        self.updated_ms = now;
        Ok(())
    }

    /// starting: its container could not be had. A failure that may pass
    /// later (a bad start, an unreachable registry) is a failed attempt,
    /// retried as `--retries` allows; one that cannot (no such image,
    /// credentials refused) fails the task at once.
    pub fn could_not_start(
        &mut self,
        why: String,
        may_succeed_later: bool,
        now: u64,
    ) -> Result<(), TransitionError> {
        if self.state != TaskState::Starting {
            return Err(self.refuse("fail start"));
        }
        if may_succeed_later {
            self.fail_attempt(TaskState::Failed, None, why, now);
        } else {
            self.container = None;
            self.message = Some(why);
            self.finish(TaskState::Failed, now);
        }
        Ok(())
    }

    /// Its display state: `pulling` while starting with a pull under way.
    pub fn shown_state(&self) -> &'static str {
        match (self.state, &self.pull) {
            (TaskState::Starting, Some(_)) => "pulling",
            (state, _) => state.as_str(),
        }
    }

    /// The container ended with `code`.
    pub fn exited(&mut self, code: i64, now: u64) -> Result<(), TransitionError> {
        if !matches!(self.state, TaskState::Running | TaskState::Starting) {
            return Err(self.refuse("record an exit"));
        }
        if self.kill_requested {
            self.exit_code = Some(code);
            self.message = Some("killed on request".into());
            self.finish(TaskState::Killed, now);
        } else if self.migrating && code != 0 {
            // Stopped to move: it runs again elsewhere. (Exit 0 means it
            // finished its work on its own, in the moment it was stopped, or
            // ended cleanly on SIGTERM: it succeeded, and runs no more.)
            self.migrating = false;
            self.state = TaskState::Queued;
            self.container = None;
            if !self.is_held() {
                self.not_before_ms = now;
                self.message = Some(format!(
                    "attempt {} stopped to move off a drained node",
                    self.attempt
                ));
            }
            self.updated_ms = now;
        } else if code == 0 {
            self.migrating = false;
            self.exit_code = Some(0);
            self.message = None;
            self.finish(TaskState::Succeeded, now);
        } else {
            self.fail_attempt(
                TaskState::Failed,
                Some(code),
                format!("exited with code {code}"),
                now,
            );
        }
        Ok(())
    }

    /// The container vanished (removed behind our back, host lost).
    pub fn lost(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        if !matches!(self.state, TaskState::Running | TaskState::Starting) {
            return Err(self.refuse("mark lost"));
        }
        if self.kill_requested {
            self.message = Some(why);
            self.finish(TaskState::Killed, now);
        } else {
            self.fail_attempt(TaskState::Lost, None, why, now);
        }
        Ok(())
    }

    /// Retry after backoff if attempts remain, else end in `terminal`.
    fn fail_attempt(&mut self, terminal: TaskState, code: Option<i64>, why: String, now: u64) {
        self.pull = None;
        self.exit_code = code;
        self.container = None;
        if self.attempt <= self.spec.retries {
            let delay = backoff_ms(self.attempt);
            self.state = TaskState::Queued;
            self.not_before_ms = now.saturating_add(delay);
            self.message = Some(format!(
                "attempt {} {why}; retry {} of {} in {} ms",
                self.attempt, self.attempt, self.spec.retries, delay
            ));
            self.updated_ms = now;
        } else {
            self.message = Some(why);
            self.finish(terminal, now);
        }
    }

    /// queued -> failed: the task can never run here (the host shrank
    /// since it was accepted).
    pub fn unplaceable(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued {
            return Err(self.refuse("fail as unplaceable"));
        }
        self.message = Some(why);
        self.finish(TaskState::Failed, now);
        Ok(())
    }

    /// queued -> failed: a task it waited for did not succeed.
    pub fn dependency_failed(&mut self, why: String, now: u64) -> Result<(), TransitionError> {
        if self.state != TaskState::Queued {
            return Err(self.refuse("fail on a dependency"));
        }
        self.message = Some(why);
        self.finish(TaskState::Failed, now);
        Ok(())
    }

    /// Asks to kill. A queued task ends at once (returns true); a starting or
    /// running one is marked and ends when its container stops (false).
    pub fn kill(&mut self, now: u64) -> Result<bool, TransitionError> {
        match self.state {
            TaskState::Queued => {
                self.kill_requested = true;
                self.message = Some("killed on request before it started".into());
                self.finish(TaskState::Killed, now);
                Ok(true)
            }
            TaskState::Starting | TaskState::Running => {
                self.kill_requested = true;
                self.updated_ms = now;
                Ok(false)
            }
            _ => Err(self.refuse("kill")),
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
