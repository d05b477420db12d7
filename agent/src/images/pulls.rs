//! Getting an image onto this host before a container starts: the pull
//! policy decides whether to pull; `--image-source` in which order a peer
//! that holds it and its registry are tried; concurrent asks for one image
//! share one pull, each seeing its progress; a failed pull says whether it
//! may succeed later (with the registry's reason). Pulls and starts are
//! noted for image GC (`notes`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use mesh_protocol::image::share::sources;
use mesh_protocol::image::{
    ImageRef, ImageRefError, ImageSource, PullFailure, PullPolicy, PullProgress, Source,
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::RegistryAuth;
use super::fetch;
use super::notes::ImageNotes;
use super::peers::ImagePeers;
use crate::runtime::{ContainerRuntime, PullError, RuntimeError};

/// Why an image could not be made present.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnsureError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("pulling {image}: {failure}")]
    Pull { image: String, failure: PullFailure },
    #[error("image {0} is not on this host, and the pull policy is never")]
    NeverPull(String),
    #[error("image name: {0}")]
    BadName(#[from] ImageRefError),
}

impl EnsureError {
    /// Whether a later attempt may succeed (Docker or the registry was
    /// unreachable), so the failure is retried as `--retries` allows.
    pub fn may_succeed_later(&self) -> bool {
        match self {
            EnsureError::Runtime(_) => true,
            EnsureError::Pull { failure, .. } => failure.may_succeed_later(),
            EnsureError::NeverPull(_) | EnsureError::BadName(_) => false,
        }
    }
}

/// Where one shared pull stands.
#[derive(Debug, Clone)]
enum Pull {
    Going(PullProgress),
    Done,
    Failed(PullError),
}

/// A pull under way: where it stands, and whether its bytes are coming
/// (from the registry or a peer) or it waits for a peer that is getting
/// the image (what `HasImage` tells peers).
#[derive(Debug, Clone)]
struct Going {
    pull: watch::Receiver<Pull>,
    downloading: Arc<AtomicBool>,
}

/// The pulls of this host, shared by every task and service instance.
pub struct Pulls<R> {
    runtime: Arc<R>,
    auth: Arc<RegistryAuth>,
    going: Arc<Mutex<HashMap<String, Going>>>,
    /// Where pulls and starts are noted (image GC's ledger).
    notes: ImageNotes,
    source: ImageSource,
    /// The peers images may come from, once the mesh is up.
    peers: Arc<OnceLock<Arc<dyn ImagePeers>>>,
    /// Counts pulls started and ended, so the image publisher hears of each.
    changes: Arc<watch::Sender<u64>>,
    /// Pulls ended and bytes received, for /metrics.
    counts: Arc<crate::metrics::PullCounts>,
}

impl<R> std::fmt::Debug for Pulls<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulls")
            .field("going", &self.going().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<R> Pulls<R> {
    fn going(&self) -> MutexGuard<'_, HashMap<String, Going>> {
        // A poisoned lock only means a thread panicked; the map is intact.
        self.going.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R> Clone for Pulls<R> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            auth: self.auth.clone(),
            going: self.going.clone(),
            notes: self.notes.clone(),
            source: self.source,
            peers: self.peers.clone(),
            changes: self.changes.clone(),
            counts: self.counts.clone(),
        }
    }
}

impl<R: ContainerRuntime> Pulls<R> {
    pub fn new(runtime: Arc<R>, auth: RegistryAuth) -> Self {
        Self {
            runtime,
            auth: Arc::new(auth),
            going: Arc::default(),
            notes: ImageNotes::discard(),
            source: ImageSource::RegistryOnly,
            peers: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
            counts: Arc::default(),
        }
    }

    /// Notes this host's pulls and starts to `notes` (image GC's ledger).
    pub fn with_notes(mut self, notes: ImageNotes) -> Self {
        self.notes = notes;
        self
    }

    /// A container of ours started from `image`: its last use, for GC.
    pub fn started(&self, image: &str) {
        self.notes.used(image);
    }

    /// Gets images from peers too, in the order `source` says, once
    /// [`Pulls::share_through`] has given the peers.
    pub fn with_source(mut self, source: ImageSource) -> Self {
        self.source = source;
        self
    }

    /// The peers images may come from (every clone of these pulls sees
    /// them); a second call changes nothing.
    pub fn share_through(&self, peers: Arc<dyn ImagePeers>) {
        let _ = self.peers.set(peers);
    }

    /// Pulls under way now.
    pub fn pulling(&self) -> u32 {
        self.going().len() as u32
    }

    /// Whether this host is getting `image` (a name as [`ImageRef`]
    /// prints it) now: `Some(true)` while its bytes are coming, `Some(false)`
    /// while it waits for a peer that is getting it.
    pub fn getting(&self, image: &str) -> Option<bool> {
        let going = self.going();
        let g = going.get(image)?;
        Some(g.downloading.load(Ordering::Relaxed))
    }

    /// Pulls ended and bytes received since start (every clone's).
    pub fn counts(&self) -> Arc<crate::metrics::PullCounts> {
        self.counts.clone()
    }

    /// Changes each time a pull starts or ends.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The runtime pulls go through.
    pub fn runtime(&self) -> Arc<R> {
        self.runtime.clone()
    }

    /// Makes sure `image` is on this host as `policy` asks, calling
    /// `progress` as a pull it waits on moves.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        mut progress: impl FnMut(PullProgress) + Send,
    ) -> Result<(), EnsureError> {
        let present = self.runtime.has_image(image).await?;
        if !policy.must_pull(present) {
            return if present {
                Ok(())
            } else {
                Err(EnsureError::NeverPull(image.to_owned()))
            };
        }
        let name = ImageRef::parse(image)?;
        let mut pull = self.join(name, policy, present);
        loop {
            let now = pull.borrow_and_update().clone();
            match now {
                Pull::Going(p) => progress(p),
                Pull::Done => return Ok(()),
                Pull::Failed(PullError::Runtime(e)) => return Err(e.into()),
                Pull::Failed(PullError::Failed(failure)) => {
                    return Err(EnsureError::Pull {
                        image: image.to_owned(),
                        failure,
                    });
                }
            }
            if pull.changed().await.is_err() {
                // The pull's task ended without a verdict (the runtime shut
                // down): as good as unreachable.
                return Err(EnsureError::Pull {
                    image: image.to_owned(),
                    failure: PullFailure::Unreachable("the pull was interrupted".into()),
                });
            }
        }
    }

    /// The pull of `name` under way, or a new one (`present`: the host
    /// had the image before it).
    fn join(&self, name: ImageRef, policy: PullPolicy, present: bool) -> watch::Receiver<Pull> {
        let key = name.to_string();
        let mut going = self.going();
        if let Some(g) = going.get(&key) {
            return g.pull.clone();
        }
        let (tx, rx) = watch::channel(Pull::Going(PullProgress::default()));
        let downloading = Arc::new(AtomicBool::new(false));
        let g = Going {
            pull: rx.clone(),
            downloading: downloading.clone(),
        };
        going.insert(key.clone(), g);
        drop(going);
        self.changed();
        let this = self.clone();
        tokio::spawn(async move {
            let (moved, mut moves) = watch::channel(PullProgress::default());
            let pull = this.get(&name, policy, &moved, &downloading);
            tokio::pin!(pull);
            let mut seen = 0;
            let result = loop {
                tokio::select! {
                    result = &mut pull => break result,
                    Ok(()) = moves.changed() => {
                        let p = *moves.borrow_and_update();
                        this.counts.received(crate::metrics::new_bytes(&mut seen, p.bytes_done));
                        tx.send_replace(Pull::Going(p));
                    }
                }
            };
            // The last progress may have come with the end.
            let last = moves.borrow().bytes_done;
            this.counts
                .received(crate::metrics::new_bytes(&mut seen, last));
            this.counts.ended(result.is_ok());
            this.going().remove(&key);
            this.changed();
            match &result {
                Ok(()) => {
                    info!(image = %key, "pulled");
                    this.notes.pulled(&key, present);
                }
                Err(e) => warn!(image = %key, error = %e, "pull failed"),
            }
            tx.send_replace(match result {
                Ok(()) => Pull::Done,
                Err(e) => Pull::Failed(e),
            });
        });
        rx
    }

    /// Brings `name` from each source in turn until one gives it; the
    /// registry's failure if none does (or the peers', with no registry
    /// tried, which `sources` never decides). Peers asked first may be
    /// waited for while one of them gets the image (`first::next_step`);
    /// `downloading` says when the bytes are coming.
    async fn get(
        &self,
        name: &ImageRef,
        policy: PullPolicy,
        progress: &watch::Sender<PullProgress>,
        downloading: &AtomicBool,
    ) -> Result<(), PullError> {
        let mut failed = None;
        for (i, source) in sources(self.source, policy, name).into_iter().enumerate() {
            match source {
                Source::Registry => {
                    let auth = self.auth.for_registry(&name.registry);
                    info!(image = %name, with_credentials = auth.is_some(), "pulling");
                    downloading.store(true, Ordering::Relaxed);
                    match self.runtime.pull(name, auth, progress).await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            info!(image = %name, error = %e, "the registry did not give the image");
                            failed = Some(e);
                        }
                    }
                }
                Source::Peers => {
                    let Some(peers) = self.peers.get() else {
                        continue;
                    };
                    let wait = (i == 0).then_some(downloading);
                    let fetched =
                        fetch::from_peers(&*self.runtime, peers.as_ref(), name, progress, wait);
                    match fetched.await {
                        Ok(node) => {
                            info!(image = %name, peer = %node, "fetched from a peer");
                            return Ok(());
                        }
                        Err(why) => {
                            info!(image = %name, why = %why, "no peer gave the image");
                            failed.get_or_insert(
                                PullFailure::Unreachable(format!("from peers: {why}")).into(),
                            );
                        }
                    }
                }
            }
        }
        Err(failed.unwrap_or_else(|| PullFailure::Unreachable("no source to try".into()).into()))
    }
}

#[cfg(test)]
mod tests;
