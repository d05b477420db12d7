//! `mesh-testnet bench failover`: the time from the loss of a node to its
//! tasks running elsewhere, as n1 sees it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use mesh_protocol::gossip::{PeerState, PeerView};
use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskState};
use tokio::time::Instant;

use super::api::{Api, count_of};
use super::{BenchError, SETTLE_TIMEOUT, TASK_IMAGE, check_image, last_start, median, now_ms};
use crate::docker::Docker;
use crate::{Testnet, expect};

/// How often n1 is asked while waiting (answers may overlap).
const POLL: Duration = Duration::from_millis(50);
/// The node the tasks are submitted through, and never killed.
const ENTRY: &str = "n1";
/// Submissions tried per run before giving up on finding a victim (all
/// tasks may land on n1).
const VICTIM_TRIES: usize = 5;

#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub runs: NonZeroUsize,
    /// Long tasks submitted through n1 before each kill.
    pub tasks: NonZeroUsize,
    pub topology: String,
    pub image: String,
    /// How long the tasks have been running when their node is killed.
    /// Right after a start (zero) a runner may still be pushing the start
    /// to its keeper, which is a different case from a task that has been
    /// running for a while.
    pub settle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverRun {
    pub victim: NodeId,
    pub moved: usize,
    /// How long `Testnet::kill` took (SIGKILL, then removing its containers).
    pub kill: Duration,
    /// From the kill until n1's list showed every moved task running elsewhere.
    pub running: Duration,
    /// From the kill to the last moved task's start, as its runner recorded it.
    pub last_start: Duration,
}

/// Measures the time from killing a node to its tasks running elsewhere,
/// `runs` times on one 3-agent testnet, restarting the node between runs.
pub async fn failover(cfg: &FailoverConfig) -> Result<Vec<FailoverRun>, BenchError> {
    check_image(&Docker::new(), TASK_IMAGE).await?;
    let net = super::up(&cfg.topology, &cfg.image).await?;
    let api = Api::new(&net, ENTRY)?;
    let mut runs = Vec::new();
    for run in 1..=cfg.runs.get() {
        let r = one_run(&net, &api, cfg).await?;
        tracing::info!(run, victim = %r.victim, running = ?r.running, "failover measured");
        runs.push(r);
    }
    super::down(net).await;
    Ok(runs)
}

/// From an idle mesh: submit, kill the victim, time the move, then clean up
/// and bring the victim back.
async fn one_run(
    net: &Testnet,
    api: &Api,
    cfg: &FailoverConfig,
) -> Result<FailoverRun, BenchError> {
    let all = net.nodes();
    let mut tries = 0;
    let (ids, victim, moved) = loop {
        net.wait_views(
            "every node alive and idle in n1's view",
            SETTLE_TIMEOUT,
            &all[..1],
            idle(&all),
        )
        .await?;
        let mut ids = Vec::new();
        for _ in 0..cfg.tasks.get() {
            ids.push(api.submit(&["sleep", "600"]).await?);
        }
        let (_, list) = api
            .watch(
                Instant::now(),
                "every task running",
                SETTLE_TIMEOUT,
                POLL,
                |l| count_of(l, &ids, |t| t.state == TaskState::Running),
            )
            .await?;
        match pick_victim(&list, &ids, ENTRY) {
            Ok((victim, moved)) => break (ids, victim, moved),
            Err(e) if tries + 1 < VICTIM_TRIES => {
                tracing::info!(error = %e, "no victim; submitting again");
                tries += 1;
                api.kill_all(&ids).await?;
            }
            Err(e) => return Err(e),
        }
    };
    // Not synchronisation: how long the tasks have run is a parameter of
    // the measurement.
    tokio::time::sleep(cfg.settle).await;
    tracing::info!(victim = %victim, tasks = moved.len(), "killing");
    let (start, start_ms) = (Instant::now(), now_ms());
    net.kill(victim.as_str()).await?;
    let kill = start.elapsed();
    let (running, list) = api
        .watch(
            start,
            "the killed node's tasks running elsewhere",
            SETTLE_TIMEOUT,
            POLL,
            |l| {
                count_of(l, &moved, |t| {
                    t.state == TaskState::Running && t.node != victim && t.attempt > 1
                })
            },
        )
        .await?;
    let measured = FailoverRun {
        moved: moved.len(),
        kill,
        running,
        last_start: last_start(&list, &moved, start_ms),
        victim: victim.clone(),
    };
    api.kill_all(&ids).await?;
    net.restart(victim.as_str()).await?;
    net.wait_views(
        "the killed node is back",
        SETTLE_TIMEOUT,
        &all,
        expect::alive_with_topology(&all),
    )
    .await?;
    Ok(measured)
}

/// Every one of `nodes` is alive with all its cores free: placement starts
/// from the same mesh each run.
fn idle(nodes: &[NodeId]) -> impl Fn(&[PeerView]) -> Result<(), String> + use<> {
    let nodes = nodes.to_vec();
    move |peers| {
        for node in &nodes {
            let peer = peers.iter().find(|p| &p.node == node);
            match peer.and_then(|p| (p.state == PeerState::Alive).then_some(p.info.as_ref())) {
                Some(Some(info)) if info.load.free_cores() == info.topology.total_cores() => {}
                Some(Some(info)) => {
                    return Err(format!(
                        "{node} has {} of {} cores free",
                        info.load.free_cores(),
                        info.topology.total_cores()
                    ));
                }
                _ => return Err(format!("{node} is not alive with its values published")),
            }
        }
        Ok(())
    }
}

/// The node other than `keep` that runs the most of `ids` (ties: the first
/// by name), with the tasks it runs.
fn pick_victim(
    list: &[TaskRecord],
    ids: &[TaskId],
    keep: &str,
) -> Result<(NodeId, Vec<TaskId>), BenchError> {
    let mut by_node: BTreeMap<&NodeId, Vec<TaskId>> = BTreeMap::new();
    for t in list
        .iter()
        .filter(|t| ids.contains(&t.id) && t.node.as_str() != keep)
    {
        by_node.entry(&t.node).or_default().push(t.id.clone());
    }
    by_node
        .into_iter()
        .rev()
        .max_by_key(|(_, tasks)| tasks.len())
        .map(|(node, tasks)| (node.clone(), tasks))
        .ok_or_else(|| BenchError::NoVictim(format!("every task runs on {keep}")))
}

/// One markdown row per run, then the median and the max.
pub fn failover_markdown(runs: &[FailoverRun]) -> String {
    let mut out = String::from(
        "| run | node killed | tasks moved | kill took (s) | running elsewhere, seen from n1 (s) | last start, runners' clocks (s) |\n|---|---|---:|---:|---:|---:|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            i + 1,
            r.victim,
            r.moved,
            r.kill.as_secs_f64(),
            r.running.as_secs_f64(),
            r.last_start.as_secs_f64()
        );
    }
    let mut seen: Vec<Duration> = runs.iter().map(|r| r.running).collect();
    let max = seen.iter().max().copied().unwrap_or_default();
    let _ = writeln!(
        out,
        "\nrunning elsewhere, seen from n1: median {:.2} s, max {:.2} s over {} runs",
        median(&mut seen).as_secs_f64(),
        max.as_secs_f64(),
        runs.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ids, record};
    use super::*;

    #[test]
    fn the_victim_runs_most_and_is_never_the_kept_node() {
        let list = vec![
            record("a", "n1", TaskState::Running),
            record("b", "n1", TaskState::Running),
            record("c", "n2", TaskState::Running),
            record("d", "n3", TaskState::Running),
            record("e", "n3", TaskState::Running),
        ];
        let (victim, moved) = pick_victim(&list, &ids(&["a", "b", "c", "d", "e"]), "n1").unwrap();
        assert_eq!(victim.as_str(), "n3");
        assert_eq!(moved, ids(&["d", "e"]));
        // Ties go to the first by name.
        let (victim, _) = pick_victim(&list[..4], &ids(&["a", "b", "c", "d"]), "n1").unwrap();
        assert_eq!(victim.as_str(), "n2");
        assert!(pick_victim(&list[..2], &ids(&["a", "b"]), "n1").is_err());
    }

    #[test]
    fn the_table_has_a_row_per_run_then_median_and_max() {
        let s = Duration::from_secs;
        let f = FailoverRun {
            victim: NodeId::new("n2").unwrap(),
            moved: 2,
            kill: s(1),
            running: s(3),
            last_start: s(3),
        };
        let md = failover_markdown(&[f.clone(), FailoverRun { running: s(5), ..f }]);
        assert!(md.contains("| 2 | n2 | 2 | 1.00 | 5.00 | 3.00 |"), "{md}");
        assert!(md.contains("median 4.00 s, max 5.00 s over 2 runs"), "{md}");
    }
}
