//! Getting an image onto this host before a container starts: the pull
//! policy decides whether to pull; concurrent asks for one image share one
//! pull, each seeing its progress; a failed pull says whether it may
//! succeed later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_protocol::image::{ImageRef, ImageRefError, PullFailure, PullPolicy, PullProgress};
use tokio::sync::watch;
use tracing::{info, warn};

use super::RegistryAuth;
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

/// The pulls of this host, shared by every task and service instance.
pub struct Pulls<R> {
    runtime: Arc<R>,
    auth: Arc<RegistryAuth>,
    going: Arc<Mutex<HashMap<String, watch::Receiver<Pull>>>>,
    /// Counts pulls started and ended, so the image publisher hears of each.
    changes: Arc<watch::Sender<u64>>,
}

impl<R> std::fmt::Debug for Pulls<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulls")
            .field("going", &self.going().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<R> Pulls<R> {
    fn going(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<Pull>>> {
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
            changes: self.changes.clone(),
        }
    }
}

impl<R: ContainerRuntime> Pulls<R> {
    pub fn new(runtime: Arc<R>, auth: RegistryAuth) -> Self {
        Self {
            runtime,
            auth: Arc::new(auth),
            going: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// Pulls under way now.
    pub fn pulling(&self) -> u32 {
        self.going().len() as u32
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
        let mut pull = self.join(name);
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

    /// The pull of `name` under way, or a new one.
    fn join(&self, name: ImageRef) -> watch::Receiver<Pull> {
        let key = name.to_string();
        let mut going = self.going();
        if let Some(pull) = going.get(&key) {
            return pull.clone();
        }
        let (tx, rx) = watch::channel(Pull::Going(PullProgress::default()));
        going.insert(key.clone(), rx.clone());
        drop(going);
        self.changed();
        let this = self.clone();
        tokio::spawn(async move {
            let auth = this.auth.for_registry(&name.registry);
            info!(image = %key, with_credentials = auth.is_some(), "pulling");
            let (moved, mut moves) = watch::channel(PullProgress::default());
            let pull = this.runtime.pull(&name, auth, &moved);
            tokio::pin!(pull);
            let result = loop {
                tokio::select! {
                    result = &mut pull => break result,
                    Ok(()) = moves.changed() => {
                        let p = *moves.borrow_and_update();
                        tx.send_replace(Pull::Going(p));
                    }
                }
            };
            this.going().remove(&key);
            this.changed();
            match &result {
                Ok(()) => info!(image = %key, "pulled"),
                Err(e) => warn!(image = %key, error = %e, "pull failed"),
            }
            tx.send_replace(match result {
                Ok(()) => Pull::Done,
                Err(e) => Pull::Failed(e),
            });
        });
        rx
    }
}

#[cfg(test)]
mod tests;
