//! The task supervisor: the one owner of this node's tasks, cores and queue.
//!
//! A single tokio task runs [`actor::Supervisor`]; everything else talks to
//! it through a cheap, clonable [`SupervisorHandle`]. Docker work runs in
//! jobs ([`jobs`]) that report back as events, so no caller waits on Docker
//! while holding state.

mod actor;
mod audit;
pub mod container;
pub mod jobs;
pub mod reconcile;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::api::{Health, NodeView};
use mesh_protocol::auth::Caller;
use mesh_protocol::rpc::{ErrorKind, RemoteError};
use mesh_protocol::{NodeId, TaskId, TaskRecord};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::images::Pulls;
use crate::logs::LogDir;
use crate::runtime::{ContainerRuntime, LogStream};
use crate::store::Store;
use crate::topology::LoadedTopology;

/// How often a follower of a not-yet-started task checks again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Why a request to the supervisor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no task with id {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request can never be satisfied on this node.
    #[error("{0}")]
    Impossible(String),
    /// The request is valid but conflicts with the task's state.
    #[error("{0}")]
    Conflict(String),
    /// Refused for now (queue full, draining); retry later.
    #[error("{0}")]
    Busy(String),
    /// The API user may not do this to this task (not its owner).
    #[error("{0}")]
    Forbidden(String),
    /// What the request asked to keep could not be written to the store.
    #[error("{0}")]
    Storage(String),
    #[error("the agent is shutting down")]
    Stopped,
}

impl SupervisorError {
    /// The kind a caller decides on (and a peer receives).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SupervisorError::NotFound(_) => ErrorKind::NotFound,
            SupervisorError::Invalid(_) => ErrorKind::Invalid,
            SupervisorError::Impossible(_) => ErrorKind::Impossible,
            SupervisorError::Conflict(_) => ErrorKind::Conflict,
            SupervisorError::Busy(_) => ErrorKind::Busy,
            SupervisorError::Forbidden(_) => ErrorKind::Forbidden,
            SupervisorError::Storage(_) => ErrorKind::Storage,
            SupervisorError::Stopped => ErrorKind::Unavailable,
        }
    }

    /// As an answer to a peer's call.
    pub fn to_remote(&self) -> RemoteError {
        RemoteError::new(self.kind(), self.to_string())
    }
}

/// Output of a task, or nothing yet because it has not started.
pub enum Logs {
    Stream(LogStream),
    NotYet,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Logs::Stream(_) => "Logs::Stream",
            Logs::NotYet => "Logs::NotYet",
        })
    }
}

pub(crate) enum Command {
    /// Another node offers a task: take it only if it can start now.
    Offer(
        Box<TaskRecord>,
        oneshot::Sender<Result<(), SupervisorError>>,
    ),
    /// The first queued task ready to start, and what it asks.
    QueueHead(oneshot::Sender<Option<QueueHead>>),
    /// Takes a queued task out of the queue to offer it to a node.
    BeginMove(TaskId, NodeId, oneshot::Sender<Option<TaskRecord>>),
    /// The outcome of a move: `true` it runs there now (forget it here),
    /// `false` it was refused (back in the queue, in its place).
    EndMove(TaskId, bool),
    /// Holds here, on offer to the node, a task placement offered there
    /// without learning whether it was taken (the answer was lost).
    HoldInDoubt(
        Box<TaskRecord>,
        NodeId,
        oneshot::Sender<Result<(), SupervisorError>>,
    ),
    /// Tasks whose offer's outcome is unknown (the agent stopped meanwhile).
    InDoubt(oneshot::Sender<Vec<(TaskRecord, NodeId)>>),
    Get(TaskId, oneshot::Sender<Result<TaskRecord, SupervisorError>>),
    /// The record if held; if not, the task is disclaimed (its offer
    /// refused should it still arrive) and the answer is `NotFound`.
    Disclaim(TaskId, oneshot::Sender<Result<TaskRecord, SupervisorError>>),
    /// Records whose ids sort after the first (all: `None`), at most the
    /// count, in id order, and whether more follow.
    List(
        Option<TaskId>,
        usize,
        oneshot::Sender<mesh_protocol::listing::Page>,
    ),
    Kill(
        TaskId,
        Caller,
        oneshot::Sender<Result<TaskRecord, SupervisorError>>,
    ),
    Logs(TaskId, oneshot::Sender<Result<LogsAt, SupervisorError>>),
    Node(oneshot::Sender<NodeView>),
    /// How many of this node's task records are in each state, and the
    /// decisions taken since start.
    TaskCounts(
        oneshot::Sender<(
            Vec<(mesh_protocol::TaskState, usize)>,
            crate::metrics::Tally,
        )>,
    ),
    Health(oneshot::Sender<Health>),
    /// Stop (or resume) starting tasks here; queued ones move elsewhere.
    /// With `migrate`, running ones are stopped and queued to move too.
    SetDraining(bool, bool, oneshot::Sender<()>),
    /// Queue an existing record here unconditionally (a keeper re-placing a
    /// task, or a local fallback with its keeper already chosen).
    /// A fresh submission (`true`) respects the queue's bound; a re-placed
    /// task is never refused for it.
    Adopt(
        Box<TaskRecord>,
        bool,
        oneshot::Sender<Result<(), SupervisorError>>,
    ),
    /// As keeper: judge and store a runner's push.
    Replicate(
        Box<TaskRecord>,
        NodeId,
        oneshot::Sender<Result<mesh_protocol::failover::Verdict, SupervisorError>>,
    ),
    /// Queued tasks waiting for others (`--after`), with what they wait for.
    Blocked(oneshot::Sender<Vec<(TaskId, Vec<TaskId>)>>),
    /// Their dependencies succeeded: free to start (or move).
    Unblock(TaskId),
    /// A dependency ended otherwise: the task fails with `why`.
    DependencyFailed(TaskId, String),
    /// As keeper: store a copy as the placing node sent it.
    Hold(
        Box<TaskRecord>,
        oneshot::Sender<Result<(), SupervisorError>>,
    ),
    /// As keeper: every copy held.
    Copies(oneshot::Sender<Vec<TaskRecord>>),
    /// As keeper: the copy held of one task.
    Copy(TaskId, oneshot::Sender<Result<TaskRecord, SupervisorError>>),
    /// As keeper: a copy was re-placed on `node` as attempt `attempt`.
    Replaced(TaskId, NodeId, u32, u32),
    /// What this node holds of these tasks, as runner and as keeper.
    Stamps(
        Vec<TaskId>,
        oneshot::Sender<Vec<mesh_protocol::confirm::Stamp>>,
    ),
    /// As keeper: a newer record elsewhere says the task ended; the copy
    /// held is stale.
    ForgetCopy(TaskId),
    /// As runner: records that have (or need) a keeper.
    Kept(oneshot::Sender<Vec<TaskRecord>>),
    /// The images this node's unfinished tasks name (image GC keeps them).
    ImagesNamed(oneshot::Sender<Vec<String>>),
    SetKeeper(TaskId, NodeId),
    /// As runner: this attempt was re-placed elsewhere; stop it.
    Supersede(TaskId, String),
    Fence(TaskId, String),
    Unhold(TaskId),
    /// Holds cores for a service container under `holder` (all on one NUMA
    /// node), if they are free now and the node is not draining.
    Reserve(
        TaskId,
        mesh_protocol::CoreCount,
        oneshot::Sender<Result<Reservation, SupervisorError>>,
    ),
    /// Frees what `Reserve` held.
    Release(TaskId),
}

/// The first task of the queue that may start now, for the mover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHead {
    pub id: TaskId,
    pub cores: mesh_protocol::CoreCount,
    /// Its image, which placement prefers a node to hold.
    pub image: String,
}

/// Cores held for a service container: the model's and the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub allocation: mesh_protocol::Allocation,
    pub host_cpus: mesh_protocol::CpuSet,
    pub host_mems: mesh_protocol::CpuSet,
}

/// Where a task's output is, as the actor sees it.
pub(crate) enum LogsAt {
    /// Live from the container; the attempt's kept copy continues it if
    /// the container goes away mid-stream.
    Container(String, TaskId, u32),
    Saved(TaskId, u32),
    NotYet,
}

/// Settings of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub node: NodeId,
    /// The mesh's cluster id, put on every container with the node id.
    pub cluster: String,
    pub topology: LoadedTopology,
    pub max_queue: usize,
    /// Docker network task containers join (None: the default bridge).
    pub network: Option<String>,
    pub log_dir: PathBuf,
    /// How often Docker is pinged.
    pub ping_interval: Duration,
    pub clock: crate::clock::Clock,
    /// Which finished tasks (and copies) to keep, checked every
    /// `prune_every`.
    pub retention: mesh_protocol::retention::Retention,
    pub prune_every: Duration,
    /// Most bytes of an attempt's output kept (its tail).
    pub max_log_bytes: u64,
    /// How kept output is written.
    pub disk: crate::disk::Disk,
    /// Where core allocations and releases are logged (`--audit-log`).
    pub audit_log: Option<PathBuf>,
    /// Where the tasks' changes are told (`meshctl events`).
    pub events: crate::events::EventLog,
}

/// Why the supervisor did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the log dir {path}: {source}")]
    Logs {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the --audit-log file: {0}")]
    Audit(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Opens a container's output stream (the runtime, without its type).
type LogOpener = Arc<dyn Fn(&str, bool) -> LogStream + Send + Sync>;

/// A cheap handle to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Command>,
    logs: LogDir,
    open_container_logs: LogOpener,
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHandle").finish_non_exhaustive()
    }
}

/// Starts the supervisor with what the store holds; it runs until
/// `shutdown` is cancelled. A store that cannot be read is an error: the
/// supervisor never starts without its tasks.
pub fn spawn<R: ContainerRuntime>(
    config: SupervisorConfig,
    runtime: Arc<R>,
    pulls: Pulls<R>,
    mut store: Store,
    shutdown: CancellationToken,
) -> Result<(SupervisorHandle, tokio::task::JoinHandle<()>), SpawnError> {
    let logs = LogDir::new(
        config.log_dir.clone(),
        config.max_log_bytes,
        config.disk.clone(),
    )
    .map_err(|source| SpawnError::Logs {
        path: config.log_dir.display().to_string(),
        source,
    })?;
    let loaded = store.load()?;
    let (tx, rx) = mpsc::channel(1024);
    let opener = {
        let runtime = runtime.clone();
        Arc::new(move |id: &str, follow: bool| runtime.logs(id, follow))
    };
    let audit = config
        .audit_log
        .as_deref()
        .map(audit::AuditLog::open)
        .transpose()
        .map_err(SpawnError::Audit)?;
    let actor = actor::Supervisor::new(config, runtime, pulls, store, logs.clone(), loaded, audit);
    let join = tokio::spawn(actor.run(rx, shutdown));
    Ok((
        SupervisorHandle {
            tx,
            logs,
            open_container_logs: opener,
        },
        join,
    ))
}

impl SupervisorHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SupervisorError::Stopped)?;
        rx.await.map_err(|_| SupervisorError::Stopped)
    }

    /// Holds `cores` for a service container named by `holder`.
    pub async fn reserve(
        &self,
        holder: TaskId,
        cores: mesh_protocol::CoreCount,
    ) -> Result<Reservation, SupervisorError> {
        self.ask(|r| Command::Reserve(holder, cores, r)).await?
    }

    /// Frees a service container's cores.
    pub async fn release(&self, holder: TaskId) {
        let _ = self.tx.send(Command::Release(holder)).await;
    }

    /// Takes a task offered by a peer if its cores are free here now (it is
    /// then stored durably and started); refuses otherwise.
    pub async fn offer(&self, record: TaskRecord) -> Result<(), SupervisorError> {
        self.ask(|r| Command::Offer(Box::new(record), r)).await?
    }

    pub async fn get(&self, id: TaskId) -> Result<TaskRecord, SupervisorError> {
        self.ask(|r| Command::Get(id, r)).await?
    }

    /// Whether this node holds a task whose offer went unanswered; if not,
    /// it never takes that offer (`mesh_protocol::disclaim`).
    pub async fn disclaim(&self, id: TaskId) -> Result<TaskRecord, SupervisorError> {
        self.ask(|r| Command::Disclaim(id, r)).await?
    }

    /// A page of this node's tasks: ids after `after`, at most `limit`.
    pub async fn list(
        &self,
        after: Option<TaskId>,
        limit: usize,
    ) -> Result<mesh_protocol::listing::Page, SupervisorError> {
        self.ask(|r| Command::List(after, limit, r)).await
    }

    /// Kills a task for `by`, if they may: its owner or an admin.
    pub async fn kill(&self, id: TaskId, by: Caller) -> Result<TaskRecord, SupervisorError> {
        self.ask(|r| Command::Kill(id, by, r)).await?
    }

    pub async fn node(&self) -> Result<NodeView, SupervisorError> {
        self.ask(Command::Node).await
    }

    /// How many of this node's task records are in each state (every
    /// state, zeros too), and the decisions taken since start: for /metrics.
    pub async fn task_counts(
        &self,
    ) -> Result<
        (
            Vec<(mesh_protocol::TaskState, usize)>,
            crate::metrics::Tally,
        ),
        SupervisorError,
    > {
        self.ask(Command::TaskCounts).await
    }

    /// The images this node's queued, starting and running tasks name.
    pub async fn images_named(&self) -> Result<Vec<String>, SupervisorError> {
        self.ask(Command::ImagesNamed).await
    }

    pub async fn health(&self) -> Result<Health, SupervisorError> {
        self.ask(Command::Health).await
    }

    /// Draining: no new task starts here (offers are refused, queued tasks
    /// wait for the mover to take them elsewhere); running ones finish.
    pub async fn set_draining(&self, draining: bool, migrate: bool) -> Result<(), SupervisorError> {
        self.ask(|r| Command::SetDraining(draining, migrate, r))
            .await
    }

    pub async fn adopt(&self, record: TaskRecord, fresh: bool) -> Result<(), SupervisorError> {
        self.ask(|r| Command::Adopt(Box::new(record), fresh, r))
            .await?
    }

    pub async fn replicate(
        &self,
        record: TaskRecord,
        caller: NodeId,
    ) -> Result<mesh_protocol::failover::Verdict, SupervisorError> {
        self.ask(|r| Command::Replicate(Box::new(record), caller, r))
            .await?
    }

    pub async fn blocked(&self) -> Result<Vec<(TaskId, Vec<TaskId>)>, SupervisorError> {
        self.ask(Command::Blocked).await
    }

    pub async fn unblock(&self, id: TaskId) -> Result<(), SupervisorError> {
        self.tell(Command::Unblock(id)).await
    }

    pub async fn dependency_failed(&self, id: TaskId, why: String) -> Result<(), SupervisorError> {
        self.tell(Command::DependencyFailed(id, why)).await
    }

    /// Stores a copy as keeper; Ok once it is on disk.
    pub async fn hold(&self, record: TaskRecord) -> Result<(), SupervisorError> {
        self.ask(|r| Command::Hold(Box::new(record), r)).await?
    }

    pub async fn copies(&self) -> Result<Vec<TaskRecord>, SupervisorError> {
        self.ask(Command::Copies).await
    }

    /// The copy this node keeps of `id`, as its keeper.
    pub async fn copy(&self, id: TaskId) -> Result<TaskRecord, SupervisorError> {
        self.ask(|r| Command::Copy(id, r)).await?
    }

    /// What this node holds of `ids`, as runner and as keeper.
    pub async fn stamps(
        &self,
        ids: Vec<TaskId>,
    ) -> Result<Vec<mesh_protocol::confirm::Stamp>, SupervisorError> {
        self.ask(|r| Command::Stamps(ids, r)).await
    }

    /// Forgets a stale copy, whose task ended on another keeper's watch.
    pub async fn forget_copy(&self, id: TaskId) -> Result<(), SupervisorError> {
        self.tell(Command::ForgetCopy(id)).await
    }

    pub async fn kept(&self) -> Result<Vec<TaskRecord>, SupervisorError> {
        self.ask(Command::Kept).await
    }

    async fn tell(&self, cmd: Command) -> Result<(), SupervisorError> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| SupervisorError::Stopped)
    }

    pub async fn replaced(
        &self,
        id: TaskId,
        node: NodeId,
        epoch: u32,
        attempt: u32,
    ) -> Result<(), SupervisorError> {
        self.tell(Command::Replaced(id, node, epoch, attempt)).await
    }

    pub async fn set_keeper(&self, id: TaskId, keeper: NodeId) -> Result<(), SupervisorError> {
        self.tell(Command::SetKeeper(id, keeper)).await
    }

    pub async fn supersede(&self, id: TaskId, why: String) -> Result<(), SupervisorError> {
        self.tell(Command::Supersede(id, why)).await
    }

    /// Stops this node's attempt of a task whose lease it lost and holds
    /// the task until [`SupervisorHandle::unhold`].
    pub async fn fence(&self, id: TaskId, why: String) -> Result<(), SupervisorError> {
        self.tell(Command::Fence(id, why)).await
    }

    /// Lets a held task start: its keeper kept this node's push of it.
    pub async fn unhold(&self, id: TaskId) -> Result<(), SupervisorError> {
        self.tell(Command::Unhold(id)).await
    }

    pub async fn queue_head(&self) -> Result<Option<QueueHead>, SupervisorError> {
        self.ask(Command::QueueHead).await
    }

    /// Takes a queued task out of the queue to offer it to `to`; durable
    /// before it returns, so a restart knows the outcome is in doubt.
    pub async fn begin_move(
        &self,
        id: TaskId,
        to: NodeId,
    ) -> Result<Option<TaskRecord>, SupervisorError> {
        self.ask(|r| Command::BeginMove(id, to, r)).await
    }

    pub async fn end_move(&self, id: TaskId, moved: bool) -> Result<(), SupervisorError> {
        self.tx
            .send(Command::EndMove(id, moved))
            .await
            .map_err(|_| SupervisorError::Stopped)
    }

    /// Holds `record` here, on offer to `to`, whose answer to the offer
    /// was lost: the mover asks `to` whether it took it (`in_doubt`), and
    /// it is queued here only if not.
    pub async fn hold_in_doubt(
        &self,
        record: TaskRecord,
        to: NodeId,
    ) -> Result<(), SupervisorError> {
        self.ask(|r| Command::HoldInDoubt(Box::new(record), to, r))
            .await?
    }

    pub async fn in_doubt(&self) -> Result<Vec<(TaskRecord, NodeId)>, SupervisorError> {
        self.ask(Command::InDoubt).await
    }

    /// The task's output as one stream. With `follow`, a task that has not
    /// started yet is waited for, and the stream ends when its container
    /// does; without, a task that has not started has no output.
    pub async fn output(&self, id: TaskId, follow: bool) -> Result<LogStream, SupervisorError> {
        loop {
            match self.logs(id.clone(), follow).await? {
                Logs::Stream(stream) => return Ok(stream),
                Logs::NotYet if follow => tokio::time::sleep(FOLLOW_POLL).await,
                Logs::NotYet => return Ok(Box::pin(futures_util::stream::empty())),
            }
        }
    }

    /// The task's output: live from its container while it runs, from the
    /// kept copy once it has ended.
    pub async fn logs(&self, id: TaskId, follow: bool) -> Result<Logs, SupervisorError> {
        match self.ask(|r| Command::Logs(id, r)).await?? {
            LogsAt::Container(c, task, attempt) => Ok(Logs::Stream(crate::logs::live_then_kept(
                (self.open_container_logs)(&c, follow),
                self.logs.clone(),
                task,
                attempt,
            ))),
            LogsAt::Saved(task, attempt) => Ok(match self.logs.open(&task, attempt).await {
                Some(s) => Logs::Stream(s),
                None => Logs::Stream(Box::pin(futures_util::stream::empty())),
            }),
            LogsAt::NotYet => Ok(Logs::NotYet),
        }
    }
}
