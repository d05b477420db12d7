//! Watches the host's image events (through the runtime) for the publisher:
//! every change, and every (re)connection, since changes made while the
//! stream was down were missed, becomes a notice. A stream that breaks
//! (Docker restarted or down) is asked for again with a back-off; that is
//! said once when it happens and once when the events are back.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::ContainerRuntime;

/// The first wait before asking again.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait; a stream that lasted this long starts over at
/// [`RETRY_MIN`].
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long to wait before asking for the events again.
#[derive(Debug, Default)]
pub struct Backoff {
    delay: Duration,
}

impl Backoff {
    /// After an attempt that failed at once (`lasted` zero) or a stream
    /// that broke after `lasted`: the wait before the next one, doubling
    /// from [`RETRY_MIN`] to [`RETRY_MAX`] while attempts keep failing.
    pub fn after(&mut self, lasted: Duration) -> Duration {
        if lasted >= RETRY_MAX {
            self.delay = Duration::ZERO;
        }
        self.delay = (self.delay * 2).clamp(RETRY_MIN, RETRY_MAX);
        self.delay
    }
}

/// Sends a notice to `notices` for each image change on `runtime`'s host
/// and each time its event stream (re)connects, until `shutdown` or until
/// nobody receives them. Notices coalesce: one waiting is enough.
pub async fn watch<R: ContainerRuntime>(
    runtime: &R,
    notices: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    // Whether the stream is known to be down (and that was said).
    let mut down = false;
    loop {
        let opened = Instant::now();
        let asked = tokio::select! {
            _ = shutdown.cancelled() => return,
            asked = runtime.image_events() => asked,
        };
        let why = match asked {
            Err(e) => e.to_string(),
            Ok(mut events) => {
                if down {
                    info!("the host's image events are back");
                    down = false;
                }
                loop {
                    if !notify(&notices) {
                        return;
                    }
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = events.next() => next,
                    };
                    match next {
                        Some(Ok(())) => {}
                        Some(Err(e)) => break e.to_string(),
                        None => break "the image event stream ended".to_owned(),
                    }
                }
            }
        };
        let wait = backoff.after(opened.elapsed());
        if !down {
            warn!(
                error = %why,
                retry_from_s = wait.as_secs(),
                "not watching the host's image events; images changed by hand are seen at the next timed listing until they are back"
            );
            down = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends a notice unless one waits already; false once the receiver is gone.
fn notify(notices: &mpsc::Sender<()>) -> bool {
    !matches!(
        notices.try_send(()),
        Err(mpsc::error::TrySendError::Closed(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_wait_longer_each_time_up_to_the_bound() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.after(Duration::ZERO).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_stream_that_lasted_starts_the_waits_over() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.after(Duration::ZERO);
        }
        assert_eq!(b.after(RETRY_MAX), RETRY_MIN);
        assert_eq!(b.after(Duration::from_secs(3)), RETRY_MIN * 2);
    }
}
