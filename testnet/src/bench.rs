//! Benchmarks on this host's Docker, for docs/benchmarks.md: tasks started
//! per second through a 3-agent mesh side by side with raw Docker
//! create+start at the same concurrency ([`tasks()`]), the time from the
//! loss of a node to its tasks running elsewhere ([`failover()`]), and
//! services' time to first byte, throughput and agent memory side by side
//! with direct connections, raw Docker and HAProxy ([`services()`]).
//!
//! They measure and report; nothing here judges a timing. Everything a
//! benchmark starts (its own testnet, raw containers, HAProxy) is removed
//! when it ends, fails or is dropped (Ctrl-C in `mesh-testnet bench`).

mod alone;
mod api;
mod cpu;
mod failover;
mod services;
mod tasks;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_protocol::{TaskId, TaskRecord};

use crate::docker::{Docker, DockerError};
use crate::error::{StepError, TestnetError};
use crate::{Testnet, TestnetName, TestnetOptions, expect};

pub use alone::{downloads, exchanges, hold, requests};
pub use cpu::CpuUse;
pub use failover::{FailoverConfig, FailoverRun, failover, failover_markdown};
pub use services::{
    Hold, Path, ProcUse, Series, ServicesConfig, ServicesReport, Snapshot, Throughput, services,
};
pub use tasks::{TasksConfig, TasksReport, TasksRun, tasks};

/// What every benchmark task and raw container runs.
pub const TASK_IMAGE: &str = "mesh-testsvc:latest";
/// How long the mesh may take to settle: agents to see each other, tasks to
/// start or end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a benchmark could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Testnet(#[from] TestnetError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("the image {0} does not exist; build it with `scripts/images`")]
    NoImage(String),
    #[error(transparent)]
    Api(#[from] meshctl::client::ClientError),
    #[error("nothing to fail over: {0}")]
    NoVictim(String),
    #[error("cannot {what} {target}: {source}")]
    Io {
        what: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot run haproxy: {0}; install Debian's haproxy (`apt-get install haproxy`; `scripts/bench services` does)"
    )]
    Haproxy(String),
    /// A measurement that did not go as it must (a wrong echo, a short
    /// transfer, no answer in time).
    #[error("{0}")]
    Measure(String),
}

/// A 3-agent testnet of its own (a unique name, removed when dropped),
/// every agent seeing every other.
async fn up(topology: &str, image: &str) -> Result<Testnet, BenchError> {
    up_with(
        TestnetOptions::default()
            .nodes(3)
            .topology(topology)
            .image(image),
    )
    .await
}

/// A testnet of `opts` under a unique name, removed when dropped, every
/// agent seeing every other.
async fn up_with(opts: TestnetOptions) -> Result<Testnet, BenchError> {
    let net = Testnet::up(
        opts.name(TestnetName::unique("bench"))
            .teardown_on_drop(true),
    )
    .await?;
    let all = net.nodes();
    net.wait_views(
        "all see all",
        SETTLE_TIMEOUT,
        &all,
        expect::alive_with_topology(&all),
    )
    .await?;
    Ok(net)
}

/// Removes the testnet. A failure is reported, not returned: the
/// measurements are taken by then and worth more than a stuck network.
async fn down(net: Testnet) {
    let name = net.name().clone();
    if let Err(e) = net.down().await {
        tracing::warn!(testnet = %name, error = %e, "the benchmark's testnet was not fully removed");
    }
}

async fn check_image(docker: &Docker, image: &str) -> Result<(), BenchError> {
    match docker
        .run(&["image", "inspect", "--format", "{{.Id}}", image])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(BenchError::NoImage(image.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Milliseconds since the Unix epoch: the clock the agents stamp records
/// with (their containers share this host's kernel clock).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// From `start_ms` to the latest recorded start among `ids`.
fn last_start(list: &[TaskRecord], ids: &[TaskId], start_ms: u64) -> Duration {
    let last = list
        .iter()
        .filter(|t| ids.contains(&t.id))
        .filter_map(|t| t.started_ms)
        .max()
        .unwrap_or(start_ms);
    Duration::from_millis(last.saturating_sub(start_ms))
}

/// The docker CLI's own round trip (`docker version`, median of 5): what
/// raw-Docker figures include that the agents, on the API, do not pay.
async fn cli_round_trip(docker: &Docker) -> Result<Duration, BenchError> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = tokio::time::Instant::now();
        docker
            .run(&["version", "--format", "{{.Server.Version}}"])
            .await?;
        times.push(start.elapsed());
    }
    Ok(median(&mut times))
}

pub fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `values`, which
/// it sorts; zero for none.
pub fn percentile(values: &mut [Duration], p: u32) -> Duration {
    values.sort_unstable();
    let n = values.len();
    if n == 0 {
        return Duration::ZERO;
    }
    // ceil(p/100 * n), 1-based, kept within 1..=n.
    let rank = (n * p.min(100) as usize).div_ceil(100).max(1);
    values[rank - 1]
}

#[cfg(test)]
pub(crate) mod test_support {
    use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskSpec, TaskState};

    pub fn record(id: &str, node: &str, state: TaskState) -> TaskRecord {
        let spec = TaskSpec::builder("i").build().unwrap();
        let mut r = TaskRecord::new(
            TaskId::new(id).unwrap(),
            spec,
            NodeId::new(node).unwrap(),
            0,
            0,
        );
        r.state = state;
        r
    }

    pub fn ids(names: &[&str]) -> Vec<TaskId> {
        names.iter().map(|n| TaskId::new(*n).unwrap()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{ids, record};
    use super::*;
    use mesh_protocol::TaskState;

    #[test]
    fn median_of_odd_even_and_none() {
        let s = Duration::from_secs;
        assert_eq!(median(&mut [s(3), s(1), s(2)]), s(2));
        assert_eq!(
            median(&mut [s(4), s(1), s(2), s(3)]),
            Duration::from_millis(2500)
        );
        assert_eq!(median(&mut []), Duration::ZERO);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let ms = Duration::from_millis;
        let mut v: Vec<Duration> = (1..=10).rev().map(ms).collect();
        assert_eq!(percentile(&mut v, 90), ms(9));
        assert_eq!(percentile(&mut v, 50), ms(5));
        assert_eq!(percentile(&mut v, 100), ms(10));
        assert_eq!(percentile(&mut [ms(7)], 90), ms(7));
        assert_eq!(percentile(&mut [], 90), Duration::ZERO);
    }

    #[test]
    fn last_start_is_the_latest_of_the_given_tasks() {
        let mut a = record("a", "n1", TaskState::Running);
        a.started_ms = Some(1_500);
        let mut b = record("b", "n1", TaskState::Running);
        b.started_ms = Some(3_000);
        let list = [a, b];
        assert_eq!(
            last_start(&list, &ids(&["a"]), 1_000),
            Duration::from_millis(500)
        );
        assert_eq!(
            last_start(&list, &ids(&["a", "b"]), 1_000),
            Duration::from_secs(2)
        );
        assert_eq!(last_start(&list, &ids(&["z"]), 1_000), Duration::ZERO);
    }
}
