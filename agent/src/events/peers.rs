//! Tells the changes in this node's view of its peers as events
//! (`mesh_protocol::events::peer` decides which), once a gossip round, and
//! the counts of floods gathered meanwhile.

use std::time::Duration;

use mesh_protocol::events::peer::{self, PeerMarks};
use tokio_util::sync::CancellationToken;

use super::EventLog;
use crate::mesh::Mesh;

/// Runs until `shutdown`, looking at the view every `every`.
pub async fn run(log: EventLog, mesh: Mesh, every: Duration, shutdown: CancellationToken) {
    let mut marks = PeerMarks::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let view = mesh.peers().await;
        let (events, next) = peer::changes(&marks, &view);
        for (kind, node, why) in events {
            log.emit(kind, node, why);
        }
        marks = next;
        log.tell_floods();
    }
}
