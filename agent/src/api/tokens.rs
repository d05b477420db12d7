//! The API's tokens file, read again when it changes: a token added or
//! removed, or a user revoked (`USER revoked`, which also refuses their
//! client certificates), takes effect within [`RELOAD_EVERY`] without a
//! restart. A file that no longer parses is not taken: the agent keeps the
//! set it has and says why, once per new reason.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use mesh_protocol::token::Tokens;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the file is looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The tokens the API accepts now.
#[derive(Debug)]
pub struct TokenFile {
    current: RwLock<Arc<Tokens>>,
    path: Option<PathBuf>,
}

impl TokenFile {
    /// Tokens given in full (tests, embedders): never read again.
    pub fn fixed(tokens: Tokens) -> Self {
        Self {
            current: RwLock::new(Arc::new(tokens)),
            path: None,
        }
    }

    /// Tokens read from `path` at start, read again when it changes.
    pub fn from_file(path: PathBuf, tokens: Tokens) -> Self {
        Self {
            current: RwLock::new(Arc::new(tokens)),
            path: Some(path),
        }
    }

    pub fn get(&self) -> Arc<Tokens> {
        // A writer that panicked left a whole Arc in place: use it.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, tokens: Tokens) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
    }

    /// Until `shutdown`: reads the file again each time its modification
    /// time or length changes. `revocations_only_ok`: with client
    /// certificates, a file without tokens is fine.
    pub async fn watch(self: Arc<Self>, revocations_only_ok: bool, shutdown: CancellationToken) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let stamp = |p: &PathBuf| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let mut seen = stamp(&path);
        let mut last_error: Option<String> = None;
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match crate::config::read_tokens(&path, revocations_only_ok) {
                Ok(tokens) => {
                    let (accepted, revoked) = tokens.counts();
                    self.set(tokens);
                    last_error = None;
                    info!(path = %path.display(), accepted, revoked, "API tokens file read again");
                }
                Err(e) => {
                    let why = e.to_string();
                    if last_error.as_ref() != Some(&why) {
                        warn!(path = %path.display(), error = %why, "API tokens file changed but cannot be taken; the tokens read before still apply");
                        last_error = Some(why);
                    }
                }
            }
        }
    }
}
