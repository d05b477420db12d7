//! Publishes this node's load (free cores per NUMA node, running and queued
//! tasks, host CPU use) in its gossip state every interval, from the
//! supervisor's view.

use std::time::Duration;

use mesh_protocol::load::Load;
use tokio_util::sync::CancellationToken;

use super::Tasks;
use super::hostload::CpuSampler;

/// Runs until `shutdown` (or until the supervisor stops).
pub async fn run(tasks: Tasks, every: Duration, shutdown: CancellationToken) {
    let mut cpu = CpuSampler::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(view) = tasks.supervisor().node().await else {
            return;
        };
        let load = Load {
            free_per_numa: view.load.iter().map(|l| l.free).collect(),
            running: view.running as u32,
            queued: view.queued as u32,
            cpu_percent: cpu.sample(),
        };
        tasks.mesh().set_load(&load).await;
    }
}
