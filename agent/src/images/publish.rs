//! Publishes which images this host holds, and its pulls under way, in its
//! gossip state (`img`, see `mesh_protocol::image::held`), so placement can
//! prefer a node that already has a task's image. The runtime lists the
//! images every [`LIST_EVERY_ROUNDS`] gossip rounds (images loaded or removed
//! by hand are seen then) and whenever one of our pulls starts or ends.

use std::time::Duration;

use mesh_protocol::image::{ImageSummary, ListedImage};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Pulls;
use crate::mesh::Mesh;
use crate::runtime::ContainerRuntime;

/// Gossip rounds between two listings when no pull happens.
pub const LIST_EVERY_ROUNDS: u32 = 10;

/// Runs until `shutdown`; `round` is the gossip interval.
pub async fn run<R: ContainerRuntime>(
    pulls: Pulls<R>,
    mesh: Mesh,
    round: Duration,
    shutdown: CancellationToken,
) {
    let runtime = pulls.runtime();
    let mut changes = pulls.changes();
    let mut tick = tokio::time::interval(round * LIST_EVERY_ROUNDS);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut held: Vec<ListedImage> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Ok(()) = changes.changed() => {
                changes.borrow_and_update();
            }
        }
        match runtime.list_images().await {
            Ok(listed) => held = listed,
            // The images have not gone with Docker: the last listing stands.
            Err(e) => debug!(error = %e, "cannot list the host's images"),
        }
        mesh.set_images(&ImageSummary::of(&held, pulls.pulling()))
            .await;
    }
}
