//! Publishes which images this host holds, and its pulls under way, in its
//! gossip state (`img`, see `mesh_protocol::image::held`), so placement can
//! prefer a node that already has a task's image. The runtime lists the
//! images when one of our pulls starts or ends, when the host's image
//! events (`events.rs`) say they changed, whoever changed them (at most
//! once every [`MIN_GAP`]: a burst of changes is one listing, at once, and
//! one more a gap later), and every [`RELIST_EVERY`] as a safety net for
//! changes the events missed.

use std::future::Future;
use std::time::Duration;

use mesh_protocol::image::{ImageSummary, ListedImage};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Pulls, events};
use crate::mesh::Mesh;
use crate::runtime::ContainerRuntime;

/// The shortest time between two listings the image events ask for.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// Time between two listings when nothing asks for one.
pub const RELIST_EVERY: Duration = Duration::from_secs(60);

/// Where the summary goes.
pub trait PublishImages: Send + Sync {
    fn set_images(&self, images: &ImageSummary) -> impl Future<Output = ()> + Send;
}

impl PublishImages for Mesh {
    async fn set_images(&self, images: &ImageSummary) {
        Mesh::set_images(self, images).await;
    }
}

/// When to list after notices that the images changed: at once when no
/// listing started in the last `gap`, else once, `gap` after the last one,
/// however many notices come in between.
#[derive(Debug)]
pub struct Debounce {
    gap: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl Debounce {
    pub fn new(gap: Duration) -> Self {
        Debounce {
            gap,
            last: None,
            pending: false,
        }
    }

    /// A notice at `now`: whether to list now (else [`Debounce::due`] says when).
    pub fn notice(&mut self, now: Instant) -> bool {
        if self.last.is_none_or(|last| now >= last + self.gap) {
            return true;
        }
        self.pending = true;
        false
    }

    /// When the listing held back is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.last
            .filter(|_| self.pending)
            .map(|last| last + self.gap)
    }

    /// A listing, for whatever reason, started at `now`: it sees every
    /// change noticed before.
    pub fn listed(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
    }
}

/// Runs until `shutdown`.
pub async fn run<R: ContainerRuntime, P: PublishImages>(
    pulls: Pulls<R>,
    to: P,
    shutdown: CancellationToken,
) {
    let runtime = pulls.runtime();
    // One notice waiting is as good as many.
    let (notify, notices) = mpsc::channel(1);
    tokio::join!(
        events::watch(runtime.as_ref(), notify, shutdown.clone()),
        publish(pulls, to, notices, shutdown),
    );
}

async fn publish<R: ContainerRuntime, P: PublishImages>(
    pulls: Pulls<R>,
    to: P,
    mut notices: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    let runtime = pulls.runtime();
    let mut changes = pulls.changes();
    let mut tick = tokio::time::interval(RELIST_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut debounce = Debounce::new(MIN_GAP);
    let mut held: Vec<ListedImage> = Vec::new();
    loop {
        let due = debounce.due();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Ok(()) = changes.changed() => {
                changes.borrow_and_update();
            }
            Some(()) = notices.recv() => {
                if !debounce.notice(Instant::now()) {
                    continue;
                }
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
        }
        debounce.listed(Instant::now());
        match runtime.list_images().await {
            Ok(listed) => held = listed,
            // The images have not gone with Docker: the last listing stands.
            Err(e) => debug!(error = %e, "cannot list the host's images"),
        }
        to.set_images(&ImageSummary::of(&held, pulls.pulling()))
            .await;
    }
}

#[cfg(test)]
mod tests;
