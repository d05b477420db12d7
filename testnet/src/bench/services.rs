//! `mesh-testnet bench services`: services measured by a client on this
//! host, side by side with what they are held against, in one run:
//! - time to first byte of warm per-connection and pool services through
//!   the agent that runs the container (local) and through the other agent
//!   (remote, over QUIC), against a direct connection to a ready container;
//!   of cold per-connection services against raw `docker run` + connect;
//! - throughput, MB/s of one large transfer and requests/s of short
//!   connections: direct, through HAProxy in TCP mode, through the local
//!   and the remote agent, to the same container;
//! - the agents' resident memory idle and holding many open connections.
//!
//! The testnet has 2 agents: n2 is big enough for the services' 2-core
//! containers and n1 (one core) is not, so every container runs on n2, a
//! client of n2 is served locally and a client of n1 always crosses the
//! mesh.
//!
//! This file runs the phases; `defs` holds the services and what their
//! figures must show, `probe` the client side, `raw` the raw Docker side,
//! `haproxy` the HAProxy process, `procfs` memory and CPU from /proc, `hold`
//! the held connections of the memory phase, and `markdown` the tables.

mod defs;
mod haproxy;
mod hold;
mod markdown;
mod probe;
pub(crate) use probe::{download, exchanges, hold, requests};
mod procfs;
mod raw;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use mesh_protocol::api::ServiceView;
use mesh_protocol::labels;
use meshctl::client::Client;

use super::{BenchError, TASK_IMAGE, check_image};
use crate::docker::Docker;
use crate::{Testnet, TestnetOptions, wait_until};
use defs::{
    COLD_CONN, ECHO_POOL, ENTRY, ENTRY_TOPOLOGY, PORT, SERVER, SERVER_TOPOLOGY, SOURCE_POOL, Svc,
    WARM_CONN, cold_at_rest, definitions, settled, warm_at_rest,
};
use haproxy::Haproxy;
pub use procfs::ProcUse;

/// How long the services may take to be ready, and to come back to rest
/// (a used per-connection container removed and replaced).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// One first-byte probe, cold starts included.
const PROBE_LIMIT: Duration = Duration::from_secs(60);
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
const TRANSFER_LIMIT: Duration = Duration::from_secs(600);
/// One held connection's echo; one that takes longer stops the opening.
const HOLD_LIMIT: Duration = Duration::from_secs(5);
const HOLD_IN_FLIGHT: usize = 64;
/// Descriptors left to a process besides the held connections.
const FD_SPARE: u64 = 256;
/// Linux's default ephemeral port range (32768-60999), which a container's
/// network namespace starts with: the ports an agent can connect to one
/// container from.
const LOCAL_PORTS: u64 = 28_232;
/// How long closed connections' ports may take to be free again (TIME_WAIT
/// lasts 60 s).
const PORTS_TIMEOUT: Duration = Duration::from_secs(90);
/// Untimed requests on every path before the throughput runs.
const WARMUP_REQUESTS: usize = 100;

#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// The meshd image.
    pub image: String,
    /// First-byte samples of each warm and pool path.
    pub samples: NonZeroUsize,
    /// Cold starts of each cold path.
    pub cold_samples: NonZeroUsize,
    /// Throughput runs of each path.
    pub runs: NonZeroUsize,
    /// Bytes of the large transfer.
    pub transfer_bytes: u64,
    /// Short requests per run.
    pub requests: NonZeroUsize,
    /// Short requests in flight.
    pub concurrency: NonZeroUsize,
    /// Persistent connections of the small-request run, and exchanges on
    /// each per run.
    pub persistent_conns: NonZeroUsize,
    pub exchanges: NonZeroUsize,
    /// Connections to hold open for the memory figures.
    pub hold: usize,
}

/// Which way a client's connection reaches the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Path {
    /// Straight to the container's address on the testnet network.
    #[default]
    Direct,
    /// Through HAProxy on this host (TCP mode, a loopback port).
    Haproxy,
    /// Through the agent that runs the container.
    Local,
    /// Through the other agent, over QUIC to the one that runs it.
    Remote,
}

/// Timings of one kind of connection on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub what: &'static str,
    pub path: Path,
    pub samples: Vec<Duration>,
}

/// Throughput runs of one path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Throughput {
    pub path: Path,
    /// Each run's large transfer, connect to end of stream.
    pub transfers: Vec<Duration>,
    /// Each run's short requests, all of them.
    pub request_runs: Vec<Duration>,
    /// Every short request of every run.
    pub latencies: Vec<Duration>,
    /// Each run's exchanges on persistent connections, all of them.
    pub exchange_runs: Vec<Duration>,
    /// CPU time the forwarding processes (HAProxy; the agents on the
    /// path) used during all transfers, and during all short requests.
    pub transfer_cpu: Duration,
    pub request_cpu: Duration,
    pub exchange_cpu: Duration,
}

/// Every agent's resident memory at one moment, by node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub moment: String,
    pub rss_kib: Vec<(String, u64)>,
}

/// Connections to the echo pool held open through one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub path: Path,
    pub asked: usize,
    /// What the descriptor limits left of `asked`.
    pub tried: usize,
    /// Open, each having echoed once, when the memory was read.
    pub held: usize,
    /// Why `held` is below `asked`.
    pub why_fewer: Vec<String>,
    /// By node: right before opening, then with them open.
    pub before: Vec<(String, ProcUse)>,
    pub holding: Vec<(String, ProcUse)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesReport {
    pub first_byte: Vec<Series>,
    pub cold: Vec<Series>,
    pub throughput: Vec<Throughput>,
    pub snapshots: Vec<Snapshot>,
    pub holds: Vec<Hold>,
    pub transfer_bytes: u64,
    pub requests: usize,
    pub concurrency: usize,
    pub persistent_conns: usize,
    pub exchanges: usize,
    /// Median of 5 `docker version` calls: what the docker CLI adds to a raw
    /// `docker run`.
    pub cli_round_trip: Duration,
    /// HAProxy's version line.
    pub haproxy: String,
}

/// Measures services on a 2-agent testnet of its own, removed at the end.
pub async fn services(cfg: &ServicesConfig) -> Result<ServicesReport, BenchError> {
    let docker = Docker::new();
    check_image(&docker, TASK_IMAGE).await?;
    let haproxy = haproxy::version().await?;
    let cli_round_trip = super::cli_round_trip(&docker).await?;
    let net = super::up_with(
        TestnetOptions::default()
            .nodes(2)
            .topology(SERVER_TOPOLOGY)
            .topology_of(ENTRY, ENTRY_TOPOLOGY)
            .image(&cfg.image)
            // The holds open `hold` connections from this one host.
            .extra_arg("--max-connections")
            .extra_arg((cfg.hold + 1000).to_string())
            .extra_arg("--max-connections-per-source")
            .extra_arg((cfg.hold + 1000).to_string()),
    )
    .await?;
    let run = Run::new(&net).await?;
    let mut snapshots = vec![run.snapshot("agents up, no service")?];
    for request in definitions(cfg.transfer_bytes) {
        run.api.create_service(&request).await?;
    }
    run.settle().await?;
    let echo = run.instance(ECHO_POOL).await?;
    let source = run.instance(SOURCE_POOL).await?;
    snapshots.push(run.snapshot("services defined and ready, no client")?);
    tracing::info!(samples = cfg.samples.get(), "time to first byte");
    let first_byte = run.first_bytes(echo, cfg.samples.get()).await?;
    tracing::info!(samples = cfg.cold_samples.get(), "cold starts");
    let cold = run.cold_starts(cfg.cold_samples.get()).await?;
    tracing::info!(runs = cfg.runs.get(), "throughput");
    let throughput = run.throughput(cfg, echo, source).await?;
    snapshots.push(run.snapshot("after the throughput runs, no client")?);
    let mut holds = Vec::new();
    // Remote first: what the local hold's many connections leave in the
    // server's allocator would hide the remote ones' cost there.
    for path in [Path::Remote, Path::Local] {
        tracing::info!(?path, connections = cfg.hold, "holding connections");
        holds.push(run.hold(path, cfg.hold).await?);
        let which = if path == Path::Local {
            "local"
        } else {
            "remote"
        };
        snapshots.push(run.snapshot(&format!("after the {which} hold, connections closed"))?);
    }
    super::down(net).await;
    Ok(ServicesReport {
        first_byte,
        cold,
        throughput,
        snapshots,
        holds,
        transfer_bytes: cfg.transfer_bytes,
        requests: cfg.requests.get(),
        concurrency: cfg.concurrency.get(),
        persistent_conns: cfg.persistent_conns.get(),
        exchanges: cfg.exchanges.get(),
        cli_round_trip,
        haproxy,
    })
}

/// The testnet as one run measures it.
struct Run<'a> {
    net: &'a Testnet,
    /// [`SERVER`]'s API: its list carries every node's figures.
    api: Client,
    server: IpAddr,
    entry: IpAddr,
    /// Host pids of the agents' meshd, by node.
    pids: Vec<(String, String)>,
}

impl<'a> Run<'a> {
    async fn new(net: &'a Testnet) -> Result<Self, BenchError> {
        let ip = |node| net.state().node(node).map(|n| IpAddr::V4(n.ip));
        let mut pids = Vec::new();
        for node in [ENTRY, SERVER] {
            let container = &net.state().node(node)?.container;
            pids.push((
                node.to_owned(),
                procfs::container_pid(&net.docker, container).await?,
            ));
        }
        Ok(Self {
            net,
            api: net.client(SERVER)?,
            server: ip(SERVER)?,
            entry: ip(ENTRY)?,
            pids,
        })
    }

    /// Where a client reaches `svc` through the local or the remote agent.
    fn at(&self, path: Path, svc: Svc) -> SocketAddr {
        let ip = if path == Path::Remote {
            self.entry
        } else {
            self.server
        };
        SocketAddr::new(ip, svc.listen)
    }

    async fn wait_views(
        &self,
        what: &str,
        check: impl Fn(&[ServiceView]) -> Result<(), String>,
    ) -> Result<(), BenchError> {
        wait_until(what, READY_TIMEOUT, async || {
            check(
                &self
                    .api
                    .services::<Vec<ServiceView>>()
                    .await
                    .map_err(|e| e.to_string())?,
            )
        })
        .await?;
        Ok(())
    }

    /// Waits until the services are ready and [`ENTRY`]'s gossip view
    /// shows [`SERVER`]'s ready containers (what it routes by).
    async fn settle(&self) -> Result<(), BenchError> {
        self.wait_views("the services ready", settled).await?;
        wait_until(
            "n1 seeing n2's ready containers",
            READY_TIMEOUT,
            async || {
                let peers = self.net.peers(ENTRY).await.map_err(|e| e.to_string())?;
                let info = peers
                    .iter()
                    .find(|p| p.node.as_str() == SERVER)
                    .and_then(|p| p.info.as_ref())
                    .ok_or_else(|| format!("{ENTRY} has no values of {SERVER}"))?;
                for svc in [ECHO_POOL, SOURCE_POOL, WARM_CONN] {
                    match info.services.get(svc.name) {
                        Some(load) if load.ready > 0 => {}
                        other => return Err(format!("{}: {other:?}", svc.name)),
                    }
                }
                Ok(())
            },
        )
        .await?;
        Ok(())
    }

    /// The address of `svc`'s one container (a pool's instance).
    async fn instance(&self, svc: Svc) -> Result<SocketAddr, BenchError> {
        let docker = &self.net.docker;
        let ids = docker
            .run(&[
                "ps".to_owned(),
                "--quiet".to_owned(),
                "--filter".to_owned(),
                format!("label={}={}", labels::CLUSTER, self.net.name()),
                "--filter".to_owned(),
                format!("label={}={}", labels::SERVICE, svc.name),
            ])
            .await?;
        let id = ids
            .lines()
            .next()
            .ok_or_else(|| BenchError::Measure(format!("no container of {} runs", svc.name)))?;
        let template = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.net.name()
        );
        let ip = docker.run(&["inspect", "--format", &template, id]).await?;
        let ip: IpAddr = ip.parse().map_err(|_| {
            BenchError::Measure(format!(
                "container {id} of {} has no address on the testnet network: {ip:?}",
                svc.name
            ))
        })?;
        Ok(SocketAddr::new(ip, PORT))
    }

    fn usage(&self) -> Result<Vec<(String, ProcUse)>, BenchError> {
        self.pids
            .iter()
            .map(|(node, pid)| Ok((node.clone(), procfs::read(pid)?)))
            .collect()
    }

    fn snapshot(&self, moment: &str) -> Result<Snapshot, BenchError> {
        let rss_kib = self
            .usage()?
            .into_iter()
            .map(|(node, u)| (node, u.rss_kib))
            .collect();
        Ok(Snapshot {
            moment: moment.to_owned(),
            rss_kib,
        })
    }

    /// `samples` rounds of: direct, pool local, pool remote, warm
    /// per-connection local, warm per-connection remote. A used warm
    /// container is removed and replaced after its connection, so each
    /// round starts, and the probe after a warm one waits, until the warm
    /// pool is back at rest: no container starts or goes beside a probe.
    async fn first_bytes(
        &self,
        echo: SocketAddr,
        samples: usize,
    ) -> Result<Vec<Series>, BenchError> {
        const WARM: &str = "warm per-connection";
        let probes = [
            ("ready container", Path::Direct, echo),
            ("pool", Path::Local, self.at(Path::Local, ECHO_POOL)),
            ("pool", Path::Remote, self.at(Path::Remote, ECHO_POOL)),
            (WARM, Path::Local, self.at(Path::Local, WARM_CONN)),
            (WARM, Path::Remote, self.at(Path::Remote, WARM_CONN)),
        ];
        let mut series: Vec<Series> = probes
            .iter()
            .map(|&(what, path, _)| Series {
                what,
                path,
                samples: Vec::new(),
            })
            .collect();
        for _ in 0..samples {
            let mut after_warm = true;
            for ((what, _, addr), s) in probes.iter().zip(&mut series) {
                if after_warm {
                    self.wait_views("the warm pool at rest", warm_at_rest)
                        .await?;
                }
                s.samples.push(probe::first_byte(*addr, PROBE_LIMIT).await?);
                after_warm = *what == WARM;
            }
        }
        self.wait_views("the warm pool at rest", warm_at_rest)
            .await?;
        Ok(series)
    }

    /// `samples` rounds of: raw `docker run` + connect, then a cold
    /// per-connection service through the local and the remote agent, each
    /// once the previous container is gone.
    async fn cold_starts(&self, samples: usize) -> Result<Vec<Series>, BenchError> {
        let mut raw = Vec::new();
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for i in 0..samples {
            raw.push(raw::first_byte(self.net, i).await?);
            for (path, into) in [(Path::Local, &mut local), (Path::Remote, &mut remote)] {
                self.wait_views("no cold container left", cold_at_rest)
                    .await?;
                into.push(probe::first_byte(self.at(path, COLD_CONN), PROBE_LIMIT).await?);
            }
        }
        self.wait_views("no cold container left", cold_at_rest)
            .await?;
        Ok(vec![
            Series {
                what: "raw docker run + connect",
                path: Path::Direct,
                samples: raw,
            },
            Series {
                what: "cold per-connection",
                path: Path::Local,
                samples: local,
            },
            Series {
                what: "cold per-connection",
                path: Path::Remote,
                samples: remote,
            },
        ])
    }

    /// HAProxy up, a warm-up on every path, then `runs` rounds of every
    /// path in turn: one large transfer, the short requests, then the
    /// exchanges on persistent connections.
    async fn throughput(
        &self,
        cfg: &ServicesConfig,
        echo: SocketAddr,
        source: SocketAddr,
    ) -> Result<Vec<Throughput>, BenchError> {
        let haproxy = Haproxy::start(&[echo, source]).await?;
        let paths = [
            (Path::Direct, echo, source),
            (Path::Haproxy, haproxy.fronts[0], haproxy.fronts[1]),
            (
                Path::Local,
                self.at(Path::Local, ECHO_POOL),
                self.at(Path::Local, SOURCE_POOL),
            ),
            (
                Path::Remote,
                self.at(Path::Remote, ECHO_POOL),
                self.at(Path::Remote, SOURCE_POOL),
            ),
        ];
        let c = cfg.concurrency.get();
        for (_, echo, _) in paths {
            probe::requests(echo, WARMUP_REQUESTS, c, REQUEST_LIMIT).await?;
        }
        let mut out: Vec<Throughput> = paths
            .iter()
            .map(|(path, _, _)| Throughput {
                path: *path,
                ..Default::default()
            })
            .collect();
        for run in 1..=cfg.runs.get() {
            for ((path, echo, source), t) in paths.iter().zip(&mut out) {
                tracing::info!(run, ?path, "transfer and requests");
                let forwarders = self.forwarders(*path, &haproxy);
                let cpu = procfs::cpu_time(&forwarders)?;
                t.transfers
                    .push(probe::download(*source, cfg.transfer_bytes, TRANSFER_LIMIT).await?);
                let between = procfs::cpu_time(&forwarders)?;
                let (all, each) =
                    probe::requests(*echo, cfg.requests.get(), c, REQUEST_LIMIT).await?;
                let after = procfs::cpu_time(&forwarders)?;
                let took = probe::exchanges(
                    *echo,
                    cfg.persistent_conns.get(),
                    cfg.exchanges.get(),
                    TRANSFER_LIMIT,
                )
                .await?;
                let last = procfs::cpu_time(&forwarders)?;
                t.request_runs.push(all);
                t.latencies.extend(each);
                t.exchange_runs.push(took);
                t.transfer_cpu += between.saturating_sub(cpu);
                t.request_cpu += after.saturating_sub(between);
                t.exchange_cpu += last.saturating_sub(after);
            }
        }
        haproxy.stop().await;
        Ok(out)
    }

    /// The pids of the processes that forward a connection on `path`.
    fn forwarders(&self, path: Path, haproxy: &Haproxy) -> Vec<String> {
        let agent = |node: &str| {
            self.pids
                .iter()
                .filter(|(n, _)| n == node)
                .map(|(_, pid)| pid.clone())
                .collect::<Vec<_>>()
        };
        match path {
            Path::Direct => Vec::new(),
            Path::Haproxy => haproxy.pid().map(|p| p.to_string()).into_iter().collect(),
            Path::Local => agent(SERVER),
            Path::Remote => [agent(ENTRY), agent(SERVER)].concat(),
        }
    }
}
