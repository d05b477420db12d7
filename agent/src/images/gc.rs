//! Image GC (`--image-gc`): the task that owns the ledger of images this
//! agent pulled and used (fed by [`ImageNotes`], kept in the data dir by
//! [`LedgerFile`]), and, when a bound is set, a pass on a timer and after
//! each pull: list the host's images, ask which images tasks and services
//! name, let [`gc::plan`] decide, and remove what it says, logging each
//! removal and why. A removal Docker refuses (a container we do not know
//! uses the image) is skipped and logged once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use mesh_protocol::image::{GcPolicy, Ledger, Plan, canonical, gc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ledger_file::LedgerFile;
use super::notes::{Note, NoteInbox};
use crate::clock::Clock;
use crate::runtime::{ContainerRuntime, RemoveImageError};

/// How often a changed ledger is written when nothing else writes it
/// (uses are noted at every start; pulls are written at once).
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Default time between passes.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);

/// Default `--image-gc-idle`.
pub const DEFAULT_MIN_IDLE: Duration = Duration::from_secs(3600);

/// The operator's settings (`--image-gc`, `--image-gc-idle`,
/// `--image-gc-all`); GC is off without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    /// Most bytes the images GC manages may take.
    pub max_bytes: u64,
    /// How long an image must have started no container of ours before it
    /// may go.
    pub min_idle: Duration,
    /// Also manage images this agent did not pull.
    pub all: bool,
    /// Time between passes (besides the one after each pull).
    pub every: Duration,
}

impl GcSettings {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            min_idle: DEFAULT_MIN_IDLE,
            all: false,
            every: DEFAULT_EVERY,
        }
    }

    fn policy(&self) -> GcPolicy {
        GcPolicy {
            max_bytes: self.max_bytes,
            min_idle_ms: u64::try_from(self.min_idle.as_millis()).unwrap_or(u64::MAX),
            foreign_too: self.all,
        }
    }
}

/// Which images this node's tasks and services name: they stay, whether
/// a container of them exists yet or not.
pub trait NamedImages: Send + Sync + 'static {
    fn named(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
}

/// The GC task's state; see the module doc.
pub struct ImageGc<R, N> {
    pub runtime: Arc<R>,
    pub named: N,
    pub file: LedgerFile,
    pub clock: Clock,
    /// None: only the ledger is kept (GC is off).
    pub settings: Option<GcSettings>,
}

impl<R, N> std::fmt::Debug for ImageGc<R, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageGc")
            .field("file", &self.file)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

struct State<R, N> {
    parts: ImageGc<R, N>,
    ledger: Ledger,
    dirty: bool,
    /// Image ids a refused removal was logged for (logged once each).
    refused: BTreeSet<String>,
    /// Whether "over the bound, nothing may go" was logged since the
    /// images last fitted.
    over_logged: bool,
}

impl<R: ContainerRuntime, N: NamedImages> ImageGc<R, N> {
    /// Runs the task until `shutdown`; the ledger is written on the way out.
    pub fn spawn(self, inbox: NoteInbox, shutdown: CancellationToken) -> JoinHandle<()> {
        let ledger = self.file.load();
        let state = State {
            parts: self,
            ledger,
            dirty: false,
            refused: BTreeSet::new(),
            over_logged: false,
        };
        tokio::spawn(state.run(inbox, shutdown))
    }
}

impl<R: ContainerRuntime, N: NamedImages> State<R, N> {
    async fn run(mut self, mut inbox: NoteInbox, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let every = self.parts.settings.map_or(Duration::MAX, |s| s.every);
        let mut passes = tokio::time::interval(every.min(Duration::from_secs(86_400 * 365)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                note = inbox.recv() => match note {
                    Some(note) => self.note(note).await,
                    None => break,
                },
                _ = flush.tick() => self.flush(),
                _ = passes.tick(), if self.parts.settings.is_some() => self.pass().await,
            }
        }
        self.flush();
    }

    async fn note(&mut self, note: Note) {
        let now = self.parts.clock.now_ms();
        match note {
            Note::Used(name) => {
                self.ledger.used(&name, now);
                self.dirty = true;
            }
            Note::Pulled { name, was_present } => {
                self.ledger.pulled(&name, was_present, now);
                self.dirty = true;
                // A pull is what makes an image ours: on disk at once.
                self.flush();
                if self.parts.settings.is_some() {
                    self.pass().await;
                }
            }
        }
    }

    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        match self.parts.file.save(&self.ledger) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                warn!(error = %e, "cannot write image GC's ledger; retried in {FLUSH_EVERY:?}")
            }
        }
    }

    /// One pass: list, decide, remove.
    async fn pass(&mut self) {
        let Some(settings) = self.parts.settings else {
            return;
        };
        let host = match self.parts.runtime.image_usage().await {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "image GC: cannot list the host's images; next pass later");
                return;
            }
        };
        let now = self.parts.clock.now_ms();
        let candidates = self.ledger.refresh(&host, now);
        self.dirty = true;
        let named = match self.parts.named.named().await {
            Ok(n) => n
                .iter()
                .flat_map(|n| [n.clone(), canonical(n)])
                .collect::<BTreeSet<String>>(),
            Err(why) => {
                warn!(%why, "image GC: cannot learn which images tasks and services name; nothing removed");
                return;
            }
        };
        let policy = settings.policy();
        let plan = gc::plan(&candidates, &named, &policy, now);
        self.log_plan(&plan, &policy);
        for r in &plan.remove {
            match self.remove(&r.id, &r.tags).await {
                Ok(()) => info!(
                    image = %r.tags.first().map_or(r.id.as_str(), String::as_str),
                    id = %r.id, bytes = r.size, idle_s = r.idle_ms / 1000,
                    managed_bytes = plan.managed_bytes, bound = policy.max_bytes,
                    "image GC removed an image: over the bound, and the least recently used of those that may go"
                ),
                Err(RemoveImageError::Conflict(why)) => {
                    if self.refused.insert(r.id.clone()) {
                        warn!(id = %r.id, tags = ?r.tags, %why, "image GC: Docker refused to remove the image (in use by a container this agent does not know?); skipped, and not logged again");
                    } else {
                        debug!(id = %r.id, %why, "image GC: removal refused again");
                    }
                }
                Err(RemoveImageError::Runtime(e)) => {
                    warn!(id = %r.id, error = %e, "image GC: cannot remove the image; next pass later");
                    break;
                }
            }
        }
        self.flush();
    }

    fn log_plan(&mut self, plan: &Plan, policy: &GcPolicy) {
        let over = plan.still_over(policy);
        if over && !self.over_logged {
            warn!(
                managed_bytes = plan.managed_bytes,
                after_bytes = plan.after_bytes,
                bound = policy.max_bytes,
                "image GC: the images it manages stay over the bound; the rest are in use, idle for less than --image-gc-idle, or not pulled by this agent"
            );
        }
        self.over_logged = over;
        debug!(
            managed_bytes = plan.managed_bytes,
            removing = plan.remove.len(),
            bound = policy.max_bytes,
            "image GC pass"
        );
    }

    /// Removes an image through its references: each tag (the image goes
    /// with the last), or the id when it has none.
    async fn remove(&self, id: &str, tags: &[String]) -> Result<(), RemoveImageError> {
        if tags.is_empty() {
            return self.parts.runtime.remove_image(id).await;
        }
        for tag in tags {
            self.parts.runtime.remove_image(tag).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
