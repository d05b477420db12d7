//! The raw Docker side of the cold-start comparison: an echo container
//! started with `docker run` as an agent starts a service's (same image,
//! cores and network), timed to its first echoed byte, and removed again.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::time::Instant;

use super::defs::{CORES, PORT};
use super::{PROBE_LIMIT, probe};
use crate::bench::{BenchError, TASK_IMAGE};
use crate::docker::Docker;
use crate::{MAX_AGENTS, Testnet};

/// From `docker run` of an echo container on the testnet network (as
/// an agent starts one: same image, cores, network) to its first
/// echoed byte. It gets a fixed address, free in a 2-agent testnet, so
/// no `docker inspect` is timed.
pub(super) async fn first_byte(net: &Testnet, i: usize) -> Result<Duration, BenchError> {
    let ip = net
        .state()
        .subnet
        .agent_ip(MAX_AGENTS - 1)
        .ok_or_else(|| BenchError::Measure("no free address for a raw container".into()))?;
    let container = RawContainer {
        docker: net.docker.clone(),
        name: format!("{}-bench-raw-{i}", net.name()),
        armed: true,
    };
    let args = [
        "run".to_owned(),
        "--detach".to_owned(),
        "--name".to_owned(),
        container.name.clone(),
        "--network".to_owned(),
        net.name().to_string(),
        "--ip".to_owned(),
        ip.to_string(),
        "--cpuset-cpus".to_owned(),
        host_cpus(CORES),
        TASK_IMAGE.to_owned(),
        "echo".to_owned(),
        "--port".to_owned(),
        PORT.to_string(),
    ];
    let start = Instant::now();
    net.docker.run(&args).await?;
    let took = probe::first_byte_once_up(SocketAddr::new(IpAddr::V4(ip), PORT), start, PROBE_LIMIT)
        .await?;
    container.remove().await?;
    Ok(took)
}

/// The host CPUs an agent here gives a `cores`-core container: its
/// topology's cores map round-robin onto this host's CPUs.
fn host_cpus(cores: u32) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get) as u32;
    let mut list: Vec<u32> = (0..cores).map(|c| c % cpus).collect();
    list.sort_unstable();
    list.dedup();
    list.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A raw container of the cold-start comparison: removed by
/// [`RawContainer::remove`], or when dropped (an error or an interrupt).
#[derive(Debug)]
struct RawContainer {
    docker: Docker,
    name: String,
    armed: bool,
}

impl RawContainer {
    async fn remove(mut self) -> Result<(), BenchError> {
        self.armed = false;
        self.docker.run(&["rm", "--force", &self.name]).await?;
        Ok(())
    }
}

impl Drop for RawContainer {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.docker.run_blocking(&["rm", "--force", &self.name]) {
            Err(e) if !e.is_not_found() => eprintln!(
                "mesh-testnet: cannot remove the benchmark's container {} ({e}); remove it with `docker rm -f {}`",
                self.name, self.name
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_container_gets_the_cpus_an_agent_would_give() {
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let expected = if cpus >= 2 { "0,1" } else { "0" };
        assert_eq!(host_cpus(2), expected);
        assert_eq!(host_cpus(1), "0");
    }
}
