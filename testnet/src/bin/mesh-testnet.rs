//! `mesh-testnet`: starts and drives a testnet of meshd agents on this host's
//! Docker (see [`mesh_testnet`]). `scripts/testnet` builds what it needs and
//! runs it.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_testnet::{
    DEFAULT_IMAGE, DEFAULT_TOPOLOGY, MAX_AGENTS, Testnet, TestnetName, TestnetOptions, table,
};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "mesh-testnet",
    about = "Starts, cuts, kills and removes a test network of meshd agents on this host's Docker"
)]
struct Cli {
    /// The testnet: its Docker network, container prefix and cluster id.
    #[arg(long, global = true, env = "MESH_TESTNET", default_value = TestnetName::DEFAULT)]
    name: TestnetName,
    /// Where its state, certificates and data live [default: <repo>/target/testnet/NAME].
    #[arg(long, global = true, env = "MESH_TESTNET_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start agents n1..nN and wait until each answers /v1/health.
    Up {
        /// How many agents.
        #[arg(short = 'n', long, value_parser = clap::value_parser!(u16).range(1..=MAX_AGENTS as i64))]
        nodes: u16,
        /// Synthetic hwloc topology of every agent.
        #[arg(long, default_value = DEFAULT_TOPOLOGY)]
        topology: String,
        #[arg(long, default_value_t = 500)]
        gossip_interval_ms: u64,
        /// The meshd image (built by scripts/images).
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
        /// Give each agent a Docker engine of its own (a second dockerd on
        /// this host, started with no images), so that images are per node
        /// as on real hosts.
        #[arg(long)]
        own_docker: bool,
        /// Extra meshd flags, after `--`.
        #[arg(last = true)]
        meshd_args: Vec<String>,
    },
    /// Kill an agent and remove the containers it started (the loss of a host).
    Kill { node: String },
    /// Start a killed agent again, with its data and certificate.
    Restart { node: String },
    /// Cut agents off the network.
    Partition {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Split the mesh in two: these agents on one side, the rest on the
    /// other; each side still talks among itself (host firewall rules;
    /// needs root). `heal` undoes it.
    Split {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Reconnect every cut-off agent and undo a split.
    Heal,
    /// Remove the agents, their containers, the network and the state.
    Down,
    /// Benchmark gossip at scale: N chitchat instances in this process over
    /// the in-memory transport, with the real state schema, on a simulated
    /// clock; prints one markdown table row per size.
    Sim {
        /// Mesh sizes to simulate, e.g. --nodes 10 --nodes 100 --nodes 1000.
        #[arg(long = "nodes", required = true)]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 500)]
        gossip_interval_ms: u64,
        #[arg(long, default_value_t = 6.0)]
        phi_threshold: f64,
        /// Start every node at the same instant (by default the starts are
        /// spread over the first gossip interval, as real agents' are).
        #[arg(long)]
        synchronized_start: bool,
        /// Send every SYN-ACK whole, not coded against the SYN it answers
        /// (the wire before RPC version 11), to compare.
        #[arg(long)]
        whole_answers: bool,
    },
    /// Benchmark tasks or services on a testnet of its own (removed at the
    /// end, Ctrl-C included); prints markdown tables. Needs the images of
    /// scripts/images (scripts/bench builds them).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Chaos: a testnet of its own under steady load (tasks with arrays,
    /// retries and dependencies) while faults chosen from --seed come and go
    /// (kill/restart, 2 agents cut off/heal, drain/undrain); then checks that
    /// every task ended, none ran in two places at once or succeeded twice,
    /// no container was left and no agent panicked. Prints a summary table
    /// and exits 1 on any violation. The testnet is removed at the end.
    Chaos {
        /// The seed of the plan of faults and load (printed; rerun with it).
        #[arg(long)]
        seed: u64,
        /// How long faults and load go on, in seconds (the checks come after).
        #[arg(long, default_value_t = 120)]
        duration: u64,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(3..=MAX_AGENTS as i64))]
        agents: u16,
    },
    /// List the nodes: name, state, address, API URL, container.
    Ls {
        /// Print JSON (a list of {name, container, address, state, api_url, foreign, token_file}).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The persistent small-request load of `bench services` against one
    /// echo server (a container, HAProxy, an agent's service port), alone:
    /// prints requests/s of each round, for profiling one path.
    Exchanges {
        /// The echo server (for example an agent's listen port of a pool
        /// service running `mesh-testsvc echo`).
        addr: std::net::SocketAddr,
        #[arg(long, default_value = "50")]
        conns: NonZeroUsize,
        #[arg(long, default_value = "1000")]
        exchanges: NonZeroUsize,
        #[arg(long, default_value = "3")]
        rounds: NonZeroUsize,
    },
    /// The short-request load of `bench services` alone: requests of 64
    /// bytes echoed, each on a new connection; prints requests/s of each
    /// round.
    Requests {
        /// The echo server.
        addr: std::net::SocketAddr,
        #[arg(long, default_value = "2000")]
        requests: NonZeroUsize,
        #[arg(long, default_value = "16")]
        concurrency: NonZeroUsize,
        #[arg(long, default_value = "3")]
        rounds: NonZeroUsize,
    },
    /// The transfer of `bench services` alone: reads the whole answer of a
    /// `mesh-testsvc source` server; prints MB/s of each round.
    Download {
        /// The source server.
        addr: std::net::SocketAddr,
        /// The bytes the server sends (its `--bytes`).
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value = "3")]
        rounds: NonZeroUsize,
    },
    /// Opens connections to an echo server, each echoing once, prints
    /// `holding N` (and why fewer than asked), keeps them open for
    /// `--seconds`, then closes them: for reading a forwarder's memory.
    Hold {
        /// The echo server.
        addr: std::net::SocketAddr,
        #[arg(long, default_value = "1000")]
        conns: NonZeroUsize,
        #[arg(long, default_value = "10")]
        seconds: u64,
    },
    /// Tasks started per second: raw `docker run --detach` of N containers,
    /// then N one-core tasks submitted through n1, at the same concurrency,
    /// `--runs` times per concurrency.
    Tasks {
        #[arg(long, default_value = "48")]
        tasks: NonZeroUsize,
        /// Requests (or `docker run`s) in flight; repeat to measure several.
        #[arg(long = "concurrency", default_value = "4")]
        concurrency: Vec<NonZeroUsize>,
        #[arg(long, default_value = "3")]
        runs: NonZeroUsize,
        /// Every agent's topology: the 3 together must hold --tasks cores.
        #[arg(long, default_value = "numa:2 core:16 pu:1")]
        topology: String,
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
    },
    /// Failover time: submit --tasks long tasks through n1, kill the other
    /// node running most of them, time until they run elsewhere; the node is
    /// restarted between runs.
    Failover {
        #[arg(long, default_value = "5")]
        runs: NonZeroUsize,
        #[arg(long, default_value = "4")]
        tasks: NonZeroUsize,
        /// How long the tasks run before the kill (0: right after they
        /// all started).
        #[arg(long, default_value_t = 2000)]
        settle_ms: u64,
        #[arg(long, default_value = DEFAULT_TOPOLOGY)]
        topology: String,
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
    },
    /// Services on a 2-agent testnet (n2 runs every container, n1 none):
    /// time to first byte (warm and pool against a direct connection, cold
    /// against raw `docker run`), throughput directly, through HAProxy
    /// (needs `haproxy`) and through the local and remote agent, and agent
    /// memory holding --hold connections.
    Services {
        /// First-byte samples of each warm and pool path.
        #[arg(long, default_value = "50")]
        samples: NonZeroUsize,
        /// Cold starts of each cold path.
        #[arg(long, default_value = "10")]
        cold_samples: NonZeroUsize,
        /// Throughput runs of each path.
        #[arg(long, default_value = "3")]
        runs: NonZeroUsize,
        /// Size of the large transfer, MiB.
        #[arg(long, default_value_t = 256)]
        transfer_mib: u64,
        /// Short requests per run.
        #[arg(long, default_value = "2000")]
        requests: NonZeroUsize,
        /// Short requests in flight.
        #[arg(long, default_value = "16")]
        concurrency: NonZeroUsize,
        /// Persistent connections of the small-request run.
        #[arg(long, default_value = "50")]
        persistent: NonZeroUsize,
        /// Small exchanges (64 bytes echoed) on each persistent connection
        /// per run.
        #[arg(long, default_value = "1000")]
        exchanges: NonZeroUsize,
        /// Connections held open for the memory figures (fewer if the
        /// descriptor limits do not allow them; raise this process's with
        /// `ulimit -n`).
        #[arg(long, default_value_t = 10_000)]
        hold: usize,
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("MESH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-testnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        name,
        state_dir,
        command,
    } = cli;
    let open = || Testnet::open(&name, state_dir.clone());
    match command {
        Command::Sim {
            nodes,
            gossip_interval_ms,
            phi_threshold,
            synchronized_start,
            whole_answers,
        } => {
            println!("{}", mesh_testnet::sim::SimReport::markdown_header());
            for n in nodes {
                let cfg = mesh_testnet::sim::SimConfig {
                    nodes: n.max(2),
                    gossip_interval: Duration::from_millis(gossip_interval_ms),
                    phi_threshold,
                    staggered_start: !synchronized_start,
                    coded_answers: !whole_answers,
                    ..Default::default()
                };
                // Its own runtime on its own thread: the simulation pauses
                // the clock, which this runtime must not share.
                let report =
                    tokio::task::spawn_blocking(move || mesh_testnet::sim::run(&cfg)).await??;
                println!("{}", report.markdown_row());
            }
        }
        Command::Bench { bench } => {
            // An interrupt drops the benchmark, whose guards remove what it
            // started.
            tokio::select! {
                done = run_bench(bench) => done?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; removed what the benchmark had started"),
            }
        }
        Command::Chaos {
            seed,
            duration,
            agents,
        } => {
            println!("chaos seed {seed}");
            // A testnet of its own, clear of a user's `ganger`.
            let name = if name.as_str() == TestnetName::DEFAULT {
                TestnetName::unique("chaos")
            } else {
                name
            };
            let mut opts = mesh_testnet::chaos::ChaosOptions::new(
                seed,
                Duration::from_secs(duration),
                usize::from(agents),
                name,
            );
            opts.testnet.state_dir = state_dir.clone();
            // An interrupt drops the run, whose testnet is removed on drop.
            let report = tokio::select! {
                report = mesh_testnet::chaos::run(opts) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; removed the chaos testnet"),
            };
            print!("{}", report.table());
            if !report.passed() {
                anyhow::bail!(
                    "seed {seed}: {} violation(s); rerun with --seed {seed}",
                    report.failures().count()
                );
            }
        }
        Command::Up {
            nodes,
            topology,
            gossip_interval_ms,
            image,
            own_docker,
            meshd_args,
        } => {
            let mut opts = TestnetOptions::default()
                .name(name.clone())
                .nodes(usize::from(nodes))
                .topology(topology)
                .gossip_interval(Duration::from_millis(gossip_interval_ms))
                .image(image)
                .own_docker(own_docker);
            opts.state_dir = state_dir.clone();
            opts.extra_args = meshd_args;
            let net = Testnet::up(opts)
                .await
                .with_context(|| format!("cannot start testnet {name}"))?;
            print!("{}", table(&net.ls().await?));
        }
        Command::Kill { node } => {
            let removed = open()?.kill(&node).await?;
            println!("killed {node}; removed {removed} container(s) it had started");
        }
        Command::Restart { node } => {
            open()?.restart(&node).await?;
            println!("restarted {node}");
        }
        Command::Partition { nodes } => {
            open()?.partition(&nodes).await?;
            println!("cut off {}", nodes.join(", "));
        }
        Command::Split { nodes } => {
            open()?.split(&nodes).await?;
            println!("split {} from the rest", nodes.join(", "));
        }
        Command::Heal => {
            let healed = open()?.heal().await?;
            if healed.is_empty() {
                println!("nothing to heal");
            } else {
                let names: Vec<String> = healed.iter().map(ToString::to_string).collect();
                println!("reconnected {}", names.join(", "));
            }
        }
        Command::Down => {
            let removed = Testnet::remove(&name, state_dir).await?;
            println!(
                "removed testnet {name}: {} agent(s), {} container(s) they started, {} own engine(s), network {}, state directory {}",
                removed.agents,
                removed.containers,
                removed.engines,
                removed.network,
                if removed.state_dir {
                    "removed"
                } else {
                    "absent"
                },
            );
        }
        Command::Ls { json } => {
            let nodes = open()?.ls().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print!("{}", table(&nodes));
            }
        }
    }
    Ok(())
}

async fn run_bench(bench: Bench) -> anyhow::Result<()> {
    use mesh_testnet::bench;
    match bench {
        Bench::Tasks {
            tasks,
            concurrency,
            runs,
            topology,
            image,
        } => {
            let cfg = bench::TasksConfig {
                tasks,
                concurrency,
                runs,
                topology,
                image,
            };
            let report = bench::tasks(&cfg).await?;
            print!("{}", report.markdown());
        }
        Bench::Failover {
            runs,
            tasks,
            settle_ms,
            topology,
            image,
        } => {
            let cfg = bench::FailoverConfig {
                runs,
                tasks,
                topology,
                image,
                settle: Duration::from_millis(settle_ms),
            };
            print!(
                "{}",
                bench::failover_markdown(&bench::failover(&cfg).await?)
            );
        }
        Bench::Services {
            samples,
            cold_samples,
            runs,
            transfer_mib,
            requests,
            concurrency,
            persistent,
            exchanges,
            hold,
            image,
        } => {
            let cfg = bench::ServicesConfig {
                image,
                samples,
                cold_samples,
                runs,
                transfer_bytes: transfer_mib
                    .checked_mul(1 << 20)
                    .context("--transfer-mib is too large")?,
                requests,
                concurrency,
                persistent_conns: persistent,
                exchanges,
                hold,
            };
            print!("{}", bench::services(&cfg).await?.markdown());
        }
        Bench::Exchanges {
            addr,
            conns,
            exchanges,
            rounds,
        } => {
            let rates = bench::exchanges(addr, conns.get(), exchanges.get(), rounds.get()).await?;
            for (i, r) in rates.iter().enumerate() {
                println!("round {}: {r:.0} requests/s", i + 1);
            }
        }
        Bench::Requests {
            addr,
            requests,
            concurrency,
            rounds,
        } => {
            let rates =
                bench::requests(addr, requests.get(), concurrency.get(), rounds.get()).await?;
            for (i, r) in rates.iter().enumerate() {
                println!("round {}: {r:.0} requests/s", i + 1);
            }
        }
        Bench::Download {
            addr,
            bytes,
            rounds,
        } => {
            let rates = bench::downloads(addr, bytes, rounds.get()).await?;
            for (i, r) in rates.iter().enumerate() {
                println!("round {}: {r:.1} MB/s", i + 1);
            }
        }
        Bench::Hold {
            addr,
            conns,
            seconds,
        } => {
            use std::io::Write;
            bench::hold(addr, conns.get(), |n, why| async move {
                match why {
                    Some(why) => println!("holding {n} ({why})"),
                    None => println!("holding {n}"),
                }
                let _ = std::io::stdout().flush();
                tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
            })
            .await;
        }
    }
    Ok(())
}
