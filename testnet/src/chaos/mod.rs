//! The chaos run: a testnet of agents under a steady load of tasks (arrays,
//! retries, dependencies) while faults chosen from a seed come and go (an
//! agent killed and restarted, two agents cut off from three and healed, a
//! drain and undrain, Docker not answering an agent, an agent's data disk
//! full), and clients connect to a service of each mode. At
//! the end it checks, from the containers' own
//! evidence (the [`witness`]), Docker and the agents' logs, that every
//! accepted task reached a final state, that no task's work ran in two
//! places at once or succeeded twice, that no core was held twice at once,
//! that every service connection completed or was refused cleanly, that no
//! container of the mesh was left
//! belonging to nothing and that no agent panicked, and returns a
//! [`Report`] with the counts and every violation.
//!
//! What happens next is decided by [`schedule`] from the seed alone; the
//! rest of this module carries it out.

pub mod check;
mod datadir;
mod load;
mod report;
use datadir::{fill_disk, read_audit_log};
use load::Load;
pub mod schedule;
pub mod services;
pub mod witness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mesh_protocol::api::SubmitRequest;
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use meshctl::client::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::agent::API_PORT;
use crate::error::{StepError, TestnetError};
use crate::net::Testnet;
use crate::options::TestnetOptions;
use crate::steps::wait_until;
use crate::{expect, name::TestnetName};

pub use check::{Interval, Isolation, Violation};
pub use report::{Report, Submissions};
pub use schedule::{Fault, FaultKind, Submission};

/// The label every task of the run carries: the testnet's name.
pub const LABEL_RUN: &str = "chaos.run";
/// The label of the probes ([`probe`]), apart from the load's tasks.
pub const LABEL_PROBE: &str = "chaos.probe";
/// How long a probe has to be accepted, and then to succeed.
const PROBE_LIMIT: Duration = Duration::from_secs(60);
/// The image whose `witness` program the tasks run.
pub const TASK_IMAGE: &str = "mesh-testsvc:latest";
/// How often the load submits.
const SUBMIT_EVERY: Duration = Duration::from_millis(1_500);
/// How long, after the last fault is repaired, every task has to end.
const SETTLE_LIMIT: Duration = Duration::from_secs(240);
/// How long the agents have to remove the containers of ended tasks.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);
/// How long the mesh has to see every agent alive again after the repairs.
const REJOIN_LIMIT: Duration = Duration::from_secs(90);
/// Salt of the load's RNG, so that the load and the faults draw from
/// streams of their own and one does not shift the other.
const LOAD_SALT: u64 = 0x6c6f_6164;
/// Salt of the service clients' RNG.
const CLIENTS_SALT: u64 = 0x636f_6e6e;

/// The size of the last agent's data directory, a tmpfs the run fills.
const SMALL_DISK: &str = "64m";
/// The file that fills it.
const FILL_FILE: &str = "chaos-fill";
/// Each agent's core audit log (`--audit-log`), in its data directory.
const AUDIT_LOG: &str = "audit.jsonl";

/// What one chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    /// How long faults and load go on (the checks come after).
    pub duration: Duration,
    /// The testnet it starts (nodes, name, teardown).
    pub testnet: TestnetOptions,
}

impl ChaosOptions {
    /// A run of `agents` agents on a testnet named `name`, removed at the end.
    pub fn new(seed: u64, duration: Duration, agents: usize, name: TestnetName) -> Self {
        Self {
            seed,
            duration,
            testnet: TestnetOptions::default()
                .name(name)
                .nodes(agents)
                .docker_proxy(true)
                .small_data(format!("n{agents}"), SMALL_DISK)
                .extra_arg("--audit-log")
                .extra_arg(format!("{}/{AUDIT_LOG}", crate::agent::DATA_MOUNT))
                .teardown_on_drop(true),
        }
    }
}

/// Why a chaos run could not be carried out (what the mesh did wrong is a
/// [`Violation`] in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Testnet(#[from] TestnetError),
    #[error("{0}")]
    Step(#[from] StepError),
    #[error(
        "{TASK_IMAGE} has no `witness` program (it was built from older sources): rebuild it with scripts/images"
    )]
    NoWitness,
    #[error("cannot listen for the witness on {addr}: {source}")]
    Witness {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Nodes the run cannot reach through their API right now (killed or cut
/// off), shared by the fault loop and the load.
#[derive(Debug, Default, Clone)]
pub(crate) struct Unreachable(Arc<Mutex<BTreeSet<usize>>>);

impl Unreachable {
    fn set(&self, nodes: &[usize], down: bool) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for n in nodes {
            if down {
                set.insert(*n);
            } else {
                set.remove(n);
            }
        }
    }

    fn reachable(&self, all: usize) -> Vec<usize> {
        let set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (0..all).filter(|n| !set.contains(n)).collect()
    }
}

/// Runs the chaos: starts the testnet, drives faults and load for the
/// duration, repairs everything, waits for the mesh to settle, checks and
/// removes the testnet. An error is the harness failing (Docker, the
/// testnet); what the mesh did wrong is in the report's violations.
pub async fn run(opts: ChaosOptions) -> Result<Report, ChaosError> {
    check_task_image().await?;
    let net = Testnet::up(opts.testnet.clone()).await?;
    let all = net.nodes();
    all_alive(&net, "all see all").await?;
    services::declare(&net, "n1").await?;
    let origin = Instant::now();
    let gateway = SocketAddr::from((net.state().subnet.gateway(), 0));
    let witness = witness::Witness::start(gateway, origin)
        .await
        .map_err(|source| ChaosError::Witness {
            addr: gateway,
            source,
        })?;
    log(
        origin,
        format_args!("seed {}; witness on {}", opts.seed, witness.addr()),
    );

    let mut report = Report::new(opts.seed, opts.duration, all.len());
    let unreachable = Unreachable::default();
    let deadline = origin + opts.duration;
    let load = Load {
        net: &net,
        witness: witness.addr(),
        unreachable: unreachable.clone(),
        origin,
        token: net.api_token()?,
    };
    let (faults, submitted, connections) = tokio::join!(
        drive_faults(&net, opts.seed, deadline, &unreachable, origin),
        load.run(opts.seed ^ LOAD_SALT, deadline),
        services::clients(
            &net,
            opts.seed ^ CLIENTS_SALT,
            deadline,
            &unreachable,
            origin
        ),
    );
    let faults = faults?;
    let faults_isolated = faults.isolated.clone();
    report.operations = faults.operations;
    report.faults = faults.by_kind.clone();
    report.failed_operations = faults.failed;
    report.submissions = submitted.counts;

    log(
        origin,
        format_args!("load stopped; waiting for the mesh to settle"),
    );
    all_alive(&net, "every agent alive again").await?;
    let (listed, mut accepted) = settle(&net, &submitted.accepted, origin).await;
    accepted.extend(submitted.accepted);
    report.count_tasks(&listed, &accepted);
    let intervals = witness.intervals();
    report.violations = check::check_tasks(&accepted, &listed, &intervals, &faults_isolated);
    report.violations.extend(submitted.wrongly_refused);
    report.violations.extend(check::check_cores(&intervals));
    report.count_work(&intervals);
    report.count_connections(&connections);
    report
        .violations
        .extend(services::check_connections(&connections, &faults_isolated));
    report.violations.extend(probe(&net, witness.addr()).await);
    services::remove(&net, "n1").await?;
    report.violations.extend(orphans(&net).await?);
    let mut logs = Vec::new();
    for node in net.state().members() {
        let audit = mesh_protocol::audit::check(&read_audit_log(&net, node.node.as_str()).await?);
        report.audit_records += audit.records;
        report.audit_gaps += audit.gaps;
        report
            .violations
            .extend(check::audit(node.node.as_str(), &audit));
        let log = net.docker.logs(&node.container, 10_000_000).await;
        report
            .violations
            .extend(check::panics(node.node.as_str(), &log));
        logs.push((node.node.to_string(), log));
    }
    if !report.passed() {
        report.logs = keep_logs(net.name(), &logs);
    }
    log(origin, format_args!("checked; removing the testnet"));
    net.down().await?;
    Ok(report)
}

/// Fails unless the task image has the `witness` program: an image built
/// from older sources would fail every task of the run.
async fn check_task_image() -> Result<(), ChaosError> {
    let help = crate::docker::Docker::new()
        .run(&[
            "run",
            "--rm",
            "--label",
            "mesh.image=test",
            TASK_IMAGE,
            "--help",
        ])
        .await
        .map_err(TestnetError::from)?;
    if help.contains("witness IP:PORT") {
        Ok(())
    } else {
        Err(ChaosError::NoWitness)
    }
}

/// Waits until every agent sees every agent alive.
async fn all_alive(net: &Testnet, what: &str) -> Result<Duration, StepError> {
    let all = net.nodes();
    let expect = expect::alive_with_topology(&all);
    net.wait_views(what, REJOIN_LIMIT, &all, expect).await
}

/// Milliseconds since `origin`: the run's clock.
pub(crate) fn millis(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Writes each agent's log to `<repo>/target/chaos/<testnet>/<node>.log`,
/// for a run with violations (the testnet and its containers are removed).
/// Returns the directory, or `None` if it could not be written.
fn keep_logs(name: &TestnetName, logs: &[(String, String)]) -> Option<std::path::PathBuf> {
    let dir = crate::options::default_state_root()
        .with_file_name("chaos")
        .join(name.as_str());
    std::fs::create_dir_all(&dir).ok()?;
    for (node, log) in logs {
        std::fs::write(dir.join(format!("{node}.log")), log).ok()?;
    }
    Some(dir)
}

/// Prints one line of the run's progress, with the time since its start.
pub(crate) fn log(origin: Instant, what: std::fmt::Arguments<'_>) {
    eprintln!("chaos [{:>7.1}s] {what}", origin.elapsed().as_secs_f64());
}

/// What the fault loop did.
#[derive(Debug, Default)]
struct Faults {
    /// When each node was cut off or dead.
    isolated: Vec<check::Isolation>,
    operations: u32,
    failed: u32,
    by_kind: BTreeMap<FaultKind, u32>,
}

/// Injects, holds and repairs faults from the seed's plan until `deadline`;
/// the last one is repaired before it returns.
async fn drive_faults(
    net: &Testnet,
    seed: u64,
    deadline: Instant,
    unreachable: &Unreachable,
    origin: Instant,
) -> Result<Faults, TestnetError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let nodes = net.nodes();
    let small_disk = nodes
        .iter()
        .position(|n| net.state().small_data.contains_key(n.as_str()));
    let mut done = Faults::default();
    while Instant::now() < deadline {
        let fault = schedule::next_fault(&mut rng, nodes.len(), small_disk);
        let names: Vec<String> = fault.nodes.iter().map(|&i| nodes[i].to_string()).collect();
        log(
            origin,
            format_args!(
                "{} {} for {:.1}s{}",
                fault.kind.as_str(),
                names.join(","),
                fault.hold.as_secs_f64(),
                if fault.migrate { " (migrate)" } else { "" }
            ),
        );
        *done.by_kind.entry(fault.kind).or_default() += 1;
        let from_ms = millis(origin);
        let injected = inject(net, &fault, &names, unreachable).await?;
        done.operations += 1;
        if !injected {
            done.failed += 1;
        }
        tokio::time::sleep_until((Instant::now() + fault.hold).min(deadline)).await;
        if !repair(net, &fault, &names, unreachable).await? {
            done.failed += 1;
        }
        done.operations += 1;
        if fault.kind != FaultKind::Drain {
            let to_ms = millis(origin);
            done.isolated
                .extend(names.iter().map(|node| check::Isolation {
                    node: node.clone(),
                    from_ms,
                    to_ms,
                }));
        }
        log(origin, format_args!("repaired {}", names.join(",")));
        tokio::time::sleep_until((Instant::now() + fault.calm).min(deadline)).await;
    }
    Ok(done)
}

/// Carries out a fault. `Ok(false)`: an API call the mesh refused (counted,
/// not fatal); `Err`: the testnet itself failed.
async fn inject(
    net: &Testnet,
    fault: &Fault,
    names: &[String],
    unreachable: &Unreachable,
) -> Result<bool, TestnetError> {
    match fault.kind {
        FaultKind::Kill => {
            unreachable.set(&fault.nodes, true);
            net.kill(&names[0]).await?;
        }
        FaultKind::Partition => {
            unreachable.set(&fault.nodes, true);
            // A true split (the two see each other) where the host allows
            // firewall rules; else each of the two alone.
            match net.split(names).await {
                Ok(()) => {}
                Err(TestnetError::Split(why)) => {
                    tracing::warn!(%why, "no split possible here; cutting each off alone");
                    net.partition(names).await?;
                }
                Err(e) => return Err(e),
            }
        }
        FaultKind::Drain => return Ok(set_draining(net, &names[0], true, fault.migrate).await),
        FaultKind::PauseDocker => net.pause_docker(&names[0], true)?,
        FaultKind::FillDisk => return fill_disk(net, &names[0], true).await,
    }
    Ok(true)
}

async fn repair(
    net: &Testnet,
    fault: &Fault,
    names: &[String],
    unreachable: &Unreachable,
) -> Result<bool, TestnetError> {
    match fault.kind {
        FaultKind::Kill => {
            net.restart(&names[0]).await?;
        }
        FaultKind::Partition => {
            net.heal().await?;
        }
        FaultKind::Drain => return Ok(set_draining(net, &names[0], false, false).await),
        FaultKind::PauseDocker => net.pause_docker(&names[0], false)?,
        FaultKind::FillDisk => return fill_disk(net, &names[0], false).await,
    }
    unreachable.set(&fault.nodes, false);
    Ok(true)
}

/// Drains or undrains `node` through its own API, retried for a while (an
/// agent busy with a failover may be slow to answer).
async fn set_draining(net: &Testnet, node: &str, on: bool, migrate: bool) -> bool {
    let Ok(client) = net.poll_client(node) else {
        return false;
    };
    let what = format!("{} {node}", if on { "drain" } else { "undrain" });
    wait_until(&what, Duration::from_secs(20), async || {
        client
            .set_draining(node, on, migrate)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .inspect_err(|e| tracing::warn!(error = %e, "chaos: {what} failed"))
    .is_ok()
}

/// Waits until every task of the run that any agent lists, and every one
/// accepted, is listed final; returns the last listing (id to state) and
/// the ids of the run's tasks it lists.
async fn settle(
    net: &Testnet,
    accepted: &BTreeSet<String>,
    origin: Instant,
) -> (BTreeMap<String, TaskState>, BTreeSet<String>) {
    let mut last = BTreeMap::new();
    let run = net.name().to_string();
    let result = wait_until("every task final", SETTLE_LIMIT, async || {
        let client = net.client("n1").map_err(|e| e.to_string())?;
        let tasks: Vec<TaskRecord> = match client.tasks().await {
            Ok(tasks) => tasks,
            Err(e) => return Err(e.to_string()),
        };
        last = tasks
            .iter()
            .filter(|t| t.spec.labels.get(LABEL_RUN) == Some(&run))
            .map(|t| (t.id.to_string(), t.state))
            .collect();
        let open = last.values().filter(|s| !s.is_terminal()).count();
        let missing = accepted.iter().filter(|id| !last.contains_key(*id)).count();
        if open == 0 && missing == 0 {
            Ok(())
        } else {
            Err(format!("{open} not final, {missing} accepted not listed"))
        }
    })
    .await;
    match result {
        Ok(took) => log(origin, format_args!("every task final after {took:.1?}")),
        Err(e) => log(origin, format_args!("{e}")),
    }
    let ids = last.keys().cloned().collect();
    (last, ids)
}

/// Once every fault is repaired, every agent takes a short task and runs it
/// to success; one that does not is out of service.
async fn probe(net: &Testnet, witness: SocketAddr) -> Vec<Violation> {
    let mut found = Vec::new();
    for node in net.nodes() {
        let node = node.to_string();
        let why = match probe_one(net, &node, witness).await {
            Ok(()) => continue,
            Err(why) => why,
        };
        found.push(Violation::Unserviceable { node, why });
    }
    found
}

async fn probe_one(net: &Testnet, node: &str, witness: SocketAddr) -> Result<(), String> {
    let client = net.client(node).map_err(|e| e.to_string())?;
    let request = SubmitRequest {
        image: TASK_IMAGE.into(),
        command: ["witness", &witness.to_string(), "0.2"]
            .map(String::from)
            .to_vec(),
        cores: Some(1),
        labels: BTreeMap::from([(LABEL_PROBE.to_owned(), net.name().to_string())]),
        ..Default::default()
    };
    let mut last = String::new();
    // An agent may still be catching up after the last repair: it has a
    // while to take the task.
    wait_until(
        "the probe is accepted",
        PROBE_LIMIT,
        async || match client.submit(&request).await {
            Ok(answer) => {
                last = answer.id.to_string();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let id = TaskId::new(last).map_err(|e| e.to_string())?;
    let record = client
        .wait(&id, Some(PROBE_LIMIT))
        .await
        .map_err(|e| e.to_string())?;
    if record.state == TaskState::Succeeded {
        Ok(())
    } else {
        Err(format!(
            "probe {id} ended {}: {}",
            record.state.as_str(),
            record.message.unwrap_or_default()
        ))
    }
}

/// Containers of the mesh (label `mesh.cluster` = the testnet) still there
/// once every task has ended: they belong to nothing.
async fn orphans(net: &Testnet) -> Result<Vec<Violation>, TestnetError> {
    let filter = format!("label={}={}", mesh_protocol::labels::CLUSTER, net.name());
    let format = format!(
        "{{{{.Names}}}} {{{{.Label \"{}\"}}}} {{{{.Label \"{}\"}}}} {{{{.Status}}}}",
        mesh_protocol::labels::NODE,
        mesh_protocol::labels::TASK
    );
    let mut left = String::new();
    let waited = wait_until(
        "the agents remove their containers",
        CLEANUP_LIMIT,
        async || {
            left = net
                .docker
                .run(&["ps", "--all", "--filter", &filter, "--format", &format])
                .await
                .map_err(|e| e.to_string())?;
            if left.trim().is_empty() {
                Ok(())
            } else {
                Err(left.clone())
            }
        },
    )
    .await;
    if waited.is_ok() {
        return Ok(Vec::new());
    }
    Ok(left
        .lines()
        .filter_map(|l| {
            let (name, what) = l.split_once(' ')?;
            Some(Violation::Orphan {
                container: name.to_owned(),
                what: format!("node, task, status: {what}"),
            })
        })
        .collect())
}
