//! The in-memory runtime's image events: every change to its images sends
//! a notice to each stream open; going unavailable ends the open streams,
//! as a Docker daemon that stops ends its event streams.

use std::sync::Mutex;

use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::locked;
use crate::runtime::ImageEvents;

/// Notices held for a stream that lags; more coalesce into one.
const BACKLOG: usize = 16;

#[derive(Debug)]
pub(super) struct Notices(Mutex<broadcast::Sender<()>>);

impl Default for Notices {
    fn default() -> Self {
        Notices(Mutex::new(broadcast::channel(BACKLOG).0))
    }
}

impl Notices {
    /// The images changed.
    pub(super) fn changed(&self) {
        // No stream open is fine: nobody is watching.
        let _ = locked(&self.0).send(());
    }

    /// A stream of the changes from now on.
    pub(super) fn watch(&self) -> ImageEvents {
        let rx = locked(&self.0).subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some((Ok(()), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    /// Ends every stream open now.
    pub(super) fn cut(&self) {
        *locked(&self.0) = broadcast::channel(BACKLOG).0;
    }
}
