//! `mesh-testnet bench tasks`: tasks started per second through the mesh,
//! side by side with raw Docker create+start at the same concurrency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use mesh_protocol::{TaskId, labels};
use tokio::time::Instant;

use super::api::{Api, count_of};
use super::cpu::{CpuUse, cpu_now, cpu_since};
use super::{
    BenchError, SETTLE_TIMEOUT, TASK_IMAGE, check_image, cli_round_trip, last_start, median, now_ms,
};
use crate::docker::{Docker, DockerError};
use crate::{Testnet, TestnetName, wait_until};

/// Label on the raw Docker containers of one run.
const BENCH_LABEL: &str = "mesh.bench";
/// How often n1 is asked while waiting (answers may overlap).
const POLL: Duration = Duration::from_millis(100);
/// Raw containers removed at once.
const RM_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone)]
pub struct TasksConfig {
    pub tasks: NonZeroUsize,
    /// Each concurrency is measured `runs` times.
    pub concurrency: Vec<NonZeroUsize>,
    pub runs: NonZeroUsize,
    /// Every agent's topology: the 3 together must hold `tasks` cores.
    pub topology: String,
    pub image: String,
}

/// One run at one concurrency: raw Docker, then the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksRun {
    pub concurrency: usize,
    pub tasks: usize,
    /// Raw Docker: until every `docker run --detach` had returned (on the
    /// testnet's network, as the agents' containers).
    pub docker: Duration,
    /// The mesh: until every submission had been answered 202.
    pub accepted: Duration,
    /// The mesh: until n1's mesh-wide list showed every task started.
    pub running: Duration,
    /// The mesh: the last task's start as its runner recorded it.
    pub last_start: Duration,
    /// Median over tasks of accepted -> running, as the runners recorded it.
    pub task_latency: Duration,
    /// CPU used while raw Docker started its containers.
    pub docker_cpu: Option<CpuUse>,
    /// CPU used from the first submission until every task had started.
    pub mesh_cpu: Option<CpuUse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksReport {
    /// Median of 5 `docker version` calls: what the docker CLI adds to each
    /// raw container on top of Docker's own work.
    pub cli_round_trip: Duration,
    pub runs: Vec<TasksRun>,
}

/// Measures tasks started per second, raw Docker and the mesh in turn, on
/// one 3-agent testnet of its own.
pub async fn tasks(cfg: &TasksConfig) -> Result<TasksReport, BenchError> {
    let docker = Docker::new();
    check_image(&docker, TASK_IMAGE).await?;
    let cli_round_trip = cli_round_trip(&docker).await?;
    let net = super::up(&cfg.topology, &cfg.image).await?;
    let api = Api::new(&net, "n1")?;
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let n = cfg.tasks.get();
    let mut runs = Vec::new();
    for c in cfg.concurrency.iter().map(|c| c.get()) {
        for run in 1..=cfg.runs.get() {
            tracing::info!(concurrency = c, run, tasks = n, "raw Docker");
            let (docker_took, docker_cpu) =
                raw_docker(&docker, net.name().as_str(), n, c, cpus).await?;
            tracing::info!(concurrency = c, run, tasks = n, "the mesh");
            let mesh = mesh_tasks(&net, &api, n, c).await?;
            runs.push(TasksRun {
                docker: docker_took,
                docker_cpu,
                ..mesh
            });
        }
    }
    super::down(net).await;
    Ok(TasksReport {
        cli_round_trip,
        runs,
    })
}

/// Creates and starts `n` containers with `c` `docker run` in flight as the
/// agents create theirs: on the testnet's `network` (a user-defined bridge
/// costs Docker more than its default one), each pinned to one host CPU
/// round-robin. Returns how long until all had started and the CPU that
/// took, after removing them.
async fn raw_docker(
    docker: &Docker,
    network: &str,
    n: usize,
    c: usize,
    cpus: usize,
) -> Result<(Duration, Option<CpuUse>), BenchError> {
    let sweep = Sweep::new(docker.clone());
    let (start, cpu) = (Instant::now(), cpu_now());
    stream::iter(0..n)
        .map(|i| {
            let args = [
                "run".to_owned(),
                "--detach".to_owned(),
                "--name".to_owned(),
                format!("{}-{i}", sweep.token),
                "--label".to_owned(),
                format!("{BENCH_LABEL}={}", sweep.token),
                "--network".to_owned(),
                network.to_owned(),
                "--cpuset-cpus".to_owned(),
                (i % cpus).to_string(),
                TASK_IMAGE.to_owned(),
                "sleep".to_owned(),
                "30".to_owned(),
            ];
            async move { docker.run(&args).await }
        })
        .buffer_unordered(c)
        .try_collect::<Vec<_>>()
        .await?;
    let took = start.elapsed();
    let cpu = cpu_since(cpu);
    sweep.remove().await?;
    Ok((took, cpu))
}

/// Submits `n` one-core tasks through n1 with `c` requests in flight and
/// waits until n1 lists every one started; then kills them and waits until
/// they and their containers are gone.
async fn mesh_tasks(net: &Testnet, api: &Api, n: usize, c: usize) -> Result<TasksRun, BenchError> {
    let (start, start_ms, cpu) = (Instant::now(), now_ms(), cpu_now());
    let ids: Vec<TaskId> = stream::iter(0..n)
        .map(|_| api.submit(&["sleep", "30"]))
        .buffer_unordered(c)
        .try_collect()
        .await?;
    let accepted = start.elapsed();
    // Started, not running: a `sleep 30` may have ended by the time the
    // last one starts.
    let timeout = SETTLE_TIMEOUT + Duration::from_secs(2 * n as u64);
    let (running, list) = api
        .watch(start, "every task started", timeout, POLL, |l| {
            count_of(l, &ids, |t| t.started_ms.is_some())
        })
        .await?;
    let cpu = cpu_since(cpu);
    let mut latencies: Vec<Duration> = list
        .iter()
        .filter(|t| ids.contains(&t.id))
        .filter_map(|t| Some(t.started_ms?.saturating_sub(t.created_ms)))
        .map(Duration::from_millis)
        .collect();
    let run = TasksRun {
        concurrency: c,
        tasks: n,
        docker: Duration::ZERO,
        accepted,
        running,
        last_start: last_start(&list, &ids, start_ms),
        task_latency: median(&mut latencies),
        docker_cpu: None,
        mesh_cpu: cpu,
    };
    api.kill_all(&ids).await?;
    // The next run starts from an engine as empty as raw Docker's.
    let ps = [
        "ps".to_owned(),
        "--all".to_owned(),
        "--quiet".to_owned(),
        "--filter".to_owned(),
        format!("label={}={}", labels::CLUSTER, net.name()),
        "--filter".to_owned(),
        format!("label={}={}", labels::KIND, labels::KIND_TASK),
    ];
    wait_until(
        "the tasks' containers removed",
        SETTLE_TIMEOUT,
        async || match net.docker.run(&ps).await {
            Ok(ids) if ids.is_empty() => Ok(()),
            Ok(ids) => Err(format!("{} left", ids.lines().count())),
            Err(e) => Err(e.to_string()),
        },
    )
    .await?;
    Ok(run)
}

/// The raw containers of one run: removed by [`Sweep::remove`], or when
/// dropped (an error or an interrupt on the way).
#[derive(Debug)]
struct Sweep {
    docker: Docker,
    token: String,
    armed: bool,
}

impl Sweep {
    fn new(docker: Docker) -> Self {
        let token = format!("mesh-bench-{}", TestnetName::unique("raw").as_str());
        Self {
            docker,
            token,
            armed: true,
        }
    }

    fn ps(&self) -> [String; 5] {
        [
            "ps".into(),
            "--all".into(),
            "--quiet".into(),
            "--filter".into(),
            format!("label={BENCH_LABEL}={}", self.token),
        ]
    }

    /// A few at a time: Docker 20.10 removing dozens of containers of one
    /// user-defined network at once can leave a stale endpoint behind,
    /// which keeps the network from being removed (moby/moby#42119).
    async fn remove(mut self) -> Result<(), DockerError> {
        self.armed = false;
        let docker = &self.docker;
        let ids = docker.run(&self.ps()).await?;
        stream::iter(ids.lines())
            .map(|id| async move { docker.run(&["rm", "--force", id]).await })
            .buffer_unordered(RM_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = self.docker.run_blocking(&self.ps()).and_then(|ids| {
            ids.lines()
                .try_for_each(|id| self.docker.run_blocking(&["rm", "--force", id]).map(drop))
        });
        if let Err(e) = removed {
            eprintln!(
                "mesh-testnet: cannot remove the benchmark's containers ({e}); remove them with `docker rm -f $(docker ps -aq --filter label={BENCH_LABEL})`"
            );
        }
    }
}

impl TasksReport {
    /// One markdown row per run, then the median of each concurrency.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| concurrency | run | Docker: all started (s) | Docker tasks/s | Docker: host CPU (s) | mesh: all accepted (s) | mesh: all running, seen from n1 (s) | mesh: last start, runners' clocks (s) | mesh tasks/s | mesh / Docker time | mesh: host CPU (s) | mesh: meshd CPU (s) | per task accept -> running, median (s) |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut by_c: BTreeMap<usize, Vec<&TasksRun>> = BTreeMap::new();
        for r in &self.runs {
            by_c.entry(r.concurrency).or_default().push(r);
        }
        for (c, runs) in by_c {
            for (i, r) in runs.iter().enumerate() {
                row(&mut out, &(i + 1).to_string(), r);
            }
            let mid = |f: fn(&TasksRun) -> Duration| {
                median(&mut runs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let summary = TasksRun {
                concurrency: c,
                tasks: runs.first().map_or(0, |r| r.tasks),
                docker: mid(|r| r.docker),
                accepted: mid(|r| r.accepted),
                running: mid(|r| r.running),
                last_start: mid(|r| r.last_start),
                task_latency: mid(|r| r.task_latency),
                docker_cpu: median_cpu(runs.iter().map(|r| r.docker_cpu)),
                mesh_cpu: median_cpu(runs.iter().map(|r| r.mesh_cpu)),
            };
            row(&mut out, "**median**", &summary);
        }
        let _ = writeln!(
            out,
            "\ndocker CLI round trip (`docker version`, median of 5): {:.0} ms",
            self.cli_round_trip.as_secs_f64() * 1000.0
        );
        out
    }
}

/// The median of each part over the runs that could tell.
fn median_cpu(uses: impl Iterator<Item = Option<CpuUse>>) -> Option<CpuUse> {
    let uses: Vec<CpuUse> = uses.flatten().collect();
    if uses.is_empty() {
        return None;
    }
    Some(CpuUse {
        host: median(&mut uses.iter().map(|u| u.host).collect::<Vec<_>>()),
        meshd: median(&mut uses.iter().map(|u| u.meshd).collect::<Vec<_>>()),
    })
}

fn row(out: &mut String, run: &str, r: &TasksRun) {
    let rate = |d: Duration| r.tasks as f64 / d.as_secs_f64().max(1e-9);
    let cpu = |c: Option<CpuUse>, part: fn(CpuUse) -> Duration| {
        c.map_or("-".to_owned(), |c| format!("{:.2}", part(c).as_secs_f64()))
    };
    let _ = writeln!(
        out,
        "| {} | {run} | {:.2} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {} | {} | {:.2} |",
        r.concurrency,
        r.docker.as_secs_f64(),
        rate(r.docker),
        cpu(r.docker_cpu, |c| c.host),
        r.accepted.as_secs_f64(),
        r.running.as_secs_f64(),
        r.last_start.as_secs_f64(),
        rate(r.running),
        r.running.as_secs_f64() / r.docker.as_secs_f64().max(1e-9),
        cpu(r.mesh_cpu, |c| c.host),
        cpu(r.mesh_cpu, |c| c.meshd),
        r.task_latency.as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_run_and_a_median_per_concurrency() {
        let s = Duration::from_secs;
        let run = |c, docker| TasksRun {
            concurrency: c,
            tasks: 10,
            docker: s(docker),
            accepted: s(1),
            running: s(4),
            last_start: s(3),
            task_latency: s(1),
            docker_cpu: None,
            mesh_cpu: Some(CpuUse {
                host: s(6),
                meshd: s(1),
            }),
        };
        let report = TasksReport {
            cli_round_trip: Duration::from_millis(40),
            runs: vec![run(4, 2), run(4, 4), run(1, 5)],
        };
        let md = report.markdown();
        assert_eq!(md.lines().filter(|l| l.contains("**median**")).count(), 2);
        assert!(md.contains("| 4 | **median** | 3.00 | 3.3 | - |"), "{md}");
        assert!(
            md.contains(
                "| 1 | 1 | 5.00 | 2.0 | - | 1.00 | 4.00 | 3.00 | 2.5 | 0.80 | 6.00 | 1.00 | 1.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("median of 5): 40 ms"), "{md}");
    }
}
