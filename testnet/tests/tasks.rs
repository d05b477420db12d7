//! Batch tasks across a testnet of real meshd agents on real Docker: any
//! node accepts, tasks spread to the least-utilised nodes pinned to distinct
//! cores, and every node shows, kills and streams the logs of every task.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mesh_protocol::api::{SubmitRequest, SubmitResponse};
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use mesh_testnet::{SCENARIO_LIMIT, expect, scenario, wait_until};
use meshctl::client::{Client, ClientError, Scope, StatusCode};

mod common;

/// Submits a one-core task of the test service running `cmd`.
async fn submit(api: &Client, cmd: &[&str]) -> Result<SubmitResponse> {
    let req = SubmitRequest {
        image: "mesh-testsvc:latest".into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        cores: Some(1),
        ..Default::default()
    };
    Ok(api.submit(&req).await?)
}

#[tokio::test]
async fn twelve_tasks_fill_three_nodes_and_every_node_sees_them() -> Result<()> {
    scenario(
        "twelve_tasks_fill_three_nodes_and_every_node_sees_them",
        SCENARIO_LIMIT,
        async {
            let net = common::three_agents("tasks", "numa:1 core:4 pu:1").await?;
            let all = net.nodes();
            let n1 = net.client("n1")?;

            // 12 one-core tasks through n1 fill 3 nodes of 4 cores: 4/4/4.
            let mut ids = Vec::new();
            for _ in 0..12 {
                ids.push(submit(&n1, &["sleep", "8"]).await?.id.to_string());
            }
            // A 13th waits for a core.
            let extra = submit(&n1, &["sleep", "1"]).await?.id.to_string();

            let running = wait_all(&n1, &ids, TaskState::Running, Duration::from_secs(30)).await?;
            let per_node = per_node(&running);
            ensure!(
                per_node.values().all(|&n| n == 4) && per_node.len() == 3,
                "expected 4/4/4, got {per_node:?}"
            );

            // Each node's tasks hold distinct cores of that node.
            let list = net.client("n2")?.tasks().await?;
            ensure!(
                list.iter()
                    .filter(|t| ids.contains(&t.id.to_string()))
                    .count()
                    == 12,
                "n2 sees the whole mesh"
            );
            for node in &all {
                let mut cores = Vec::new();
                for t in list
                    .iter()
                    .filter(|t| t.node == *node && ids.contains(&t.id.to_string()))
                {
                    cores.extend(
                        t.allocation
                            .as_ref()
                            .context("allocation")?
                            .cores
                            .iter()
                            .copied(),
                    );
                }
                let before = cores.len();
                cores.sort_unstable();
                cores.dedup();
                ensure!(cores.len() == before, "{node}: a core held twice");
            }
            let waiting = list
                .iter()
                .find(|t| t.id.as_str() == extra)
                .context("13th task listed")?;
            ensure!(
                waiting.state == TaskState::Queued,
                "the 13th waits, got {:?}",
                waiting.state
            );

            // Kill and logs work from a node that does not run the task.
            let victim = list
                .iter()
                .find(|t| ids.contains(&t.id.to_string()) && t.node.as_str() != "n3")
                .context("a task off n3")?;
            let n3 = net.client("n3")?;
            let logs = n3.logs_text(&victim.id, false).await?;
            ensure!(
                logs.contains("sleeping 8"),
                "logs across the mesh: {logs:?}"
            );
            n3.kill(&victim.id).await.context("kill across the mesh")?;
            wait_task(&n3, &victim.id, "killed", |t| t.state == TaskState::Killed).await?;

            // Everything ends: the 13th runs once cores free.
            wait_until("all done", Duration::from_secs(60), async || {
                let list = n1.tasks().await.map_err(|e| e.to_string())?;
                let open = list.iter().filter(|t| !t.state.is_terminal()).count();
                if open == 0 {
                    Ok(())
                } else {
                    Err(format!("{open} not ended"))
                }
            })
            .await?;
            let list = n1.tasks().await?;
            for t in &list {
                if t.id == victim.id {
                    continue;
                }
                if t.state != TaskState::Succeeded || t.attempt != 1 {
                    bail!("{} ended {:?} after {} attempts", t.id, t.state, t.attempt);
                }
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_killed_nodes_tasks_run_again_elsewhere_once() -> Result<()> {
    scenario(
        "a_killed_nodes_tasks_run_again_elsewhere_once",
        SCENARIO_LIMIT,
        async {
            let net = common::three_agents("failover", "numa:1 core:2 pu:1").await?;
            let all = net.nodes();
            let n1 = net.client("n1")?;
            let mut ids = Vec::new();
            for _ in 0..6 {
                ids.push(submit(&n1, &["sleep", "8"]).await?.id.to_string());
            }
            let list = wait_all(&n1, &ids, TaskState::Running, Duration::from_secs(30)).await?;
            let lost: Vec<String> = list
                .iter()
                .filter(|t| t.node.as_str() == "n3")
                .map(|t| t.id.to_string())
                .collect();
            ensure!(!lost.is_empty(), "n3 runs some of the tasks: {list:?}");

            net.kill("n3").await?;
            let list = wait_all(&n1, &ids, TaskState::Succeeded, Duration::from_secs(90)).await?;
            for t in &list {
                let expected = if lost.contains(&t.id.to_string()) {
                    2
                } else {
                    1
                };
                ensure!(
                    t.attempt == expected,
                    "{} ran {} times (expected {expected}): {t:?}",
                    t.id,
                    t.attempt
                );
                ensure!(
                    t.node.as_str() != "n3",
                    "{} finished on the dead node",
                    t.id
                );
            }

            // n3 comes back: it reports none of its old attempts as current.
            net.restart("n3").await?;
            net.wait_views(
                "n3 is back",
                Duration::from_secs(20),
                &all,
                expect::alive_with_topology(&all),
            )
            .await?;
            let n3 = net.client("n3")?;
            wait_until(
                "n3's old attempts are not current",
                Duration::from_secs(20),
                async || {
                    let local = n3.tasks_in(Scope::Local).await.map_err(|e| e.to_string())?;
                    let current = local
                        .iter()
                        .filter(|t| lost.contains(&t.id.to_string()) && !t.state.is_terminal())
                        .count();
                    if current == 0 {
                        Ok(())
                    } else {
                        Err(format!("{current} still current on n3"))
                    }
                },
            )
            .await?;
            let list = n3.tasks().await?;
            for t in list.iter().filter(|t| lost.contains(&t.id.to_string())) {
                ensure!(
                    t.attempt == 2 && t.state == TaskState::Succeeded,
                    "the mesh reports the current attempt: {t:?}"
                );
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_cut_off_node_never_leaves_a_task_running_twice() -> Result<()> {
    scenario(
        "a_cut_off_node_never_leaves_a_task_running_twice",
        SCENARIO_LIMIT,
        async {
            let net = common::three_agents("split", "numa:1 core:4 pu:1").await?;
            let n1 = net.client("n1")?;
            let mut ids = Vec::new();
            for _ in 0..6 {
                ids.push(submit(&n1, &["sleep", "40"]).await?.id.to_string());
            }
            let list = wait_all(&n1, &ids, TaskState::Running, Duration::from_secs(30)).await?;
            // Cut off the other node that runs the fewest tasks (at least
            // one): alone, it is a minority; n1 and the third node are the
            // majority.
            let busy = per_node(&list);
            let victim = ["n2", "n3"]
                .into_iter()
                .filter(|n| busy.get(*n).is_some_and(|c| *c > 0))
                .min_by_key(|n| busy[*n])
                .context("n2 or n3 runs a task")?;
            net.partition(&[victim]).await?;
            let cut = tokio::time::Instant::now();
            let mut worst = BTreeMap::new();
            let mut samples = 0;
            // Past the lease (10 s), its margin and the re-placement.
            let mut sample = async |how_long| {
                sample_doubles(&net, cut, how_long, &mut worst, &mut samples).await
            };
            sample(Duration::from_secs(25)).await?;
            net.heal().await?;
            // After the heal, the stale side learns it was superseded.
            sample(Duration::from_secs(12)).await?;
            ensure!(
                worst.is_empty(),
                "tasks with two running containers (task: first seen, after the cut at 0 s and the heal at 25 s) over {samples} samples: {worst:?}"
            );
            // Every task ends, once, and nothing of it runs after.
            let list = wait_all(&n1, &ids, TaskState::Succeeded, Duration::from_secs(120)).await?;
            ensure!(
                list.iter().all(|t| t.node.as_str() != victim || t.attempt == 1),
                "a task ended on the cut-off node in a later attempt: {list:?}"
            );
            wait_until(
                "no container of the tasks runs",
                Duration::from_secs(20),
                async || {
                    let running = running_per_task(&net).await.map_err(|e| e.to_string())?;
                    if running.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{running:?}"))
                    }
                },
            )
            .await?;
            Ok(())
        },
    )
    .await
}

/// For `how_long`, counts every so often the running containers of each
/// task; records in `worst` each task first seen with more than one: when
/// (since `cut`) and on which nodes.
async fn sample_doubles(
    net: &mesh_testnet::Testnet,
    cut: tokio::time::Instant,
    how_long: Duration,
    worst: &mut BTreeMap<String, String>,
    samples: &mut usize,
) -> Result<()> {
    let end = tokio::time::Instant::now() + how_long;
    while tokio::time::Instant::now() < end {
        for (task, nodes) in running_per_task(net).await? {
            if nodes.len() > 1 {
                worst.entry(task).or_insert_with(|| {
                    format!("{nodes:?} at {:.1} s", cut.elapsed().as_secs_f64())
                });
            }
        }
        *samples += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The nodes of the running task containers of the testnet, by task: what
/// Docker runs, not what the agents say.
async fn running_per_task(net: &mesh_testnet::Testnet) -> Result<BTreeMap<String, Vec<String>>> {
    let out = mesh_testnet::docker::Docker::new()
        .run(&[
            "ps",
            "--filter",
            &format!("label=mesh.cluster={}", net.name()),
            "--filter",
            &format!("label={}", mesh_protocol::labels::TASK),
            "--format",
            &format!(
                "{{{{.Label \"{}\"}}}} {{{{.Label \"{}\"}}}}",
                mesh_protocol::labels::TASK,
                mesh_protocol::labels::NODE
            ),
        ])
        .await?;
    let mut per_task: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        if let Some((task, node)) = line.split_once(' ') {
            per_task
                .entry(task.to_owned())
                .or_default()
                .push(node.to_owned());
        }
    }
    Ok(per_task)
}

/// Polls the mesh-wide list until every task of `ids` is in `state`, for
/// `limit` at most; returns their records from that last poll.
async fn wait_all(
    api: &Client,
    ids: &[String],
    state: TaskState,
    limit: Duration,
) -> Result<Vec<TaskRecord>> {
    let mut mine = Vec::new();
    let what = format!("{} tasks {state:?}", ids.len());
    wait_until(&what, limit, async || {
        let list = api.tasks().await.map_err(|e| e.to_string())?;
        mine = list
            .into_iter()
            .filter(|t| ids.contains(&t.id.to_string()))
            .collect();
        let there: Vec<&TaskRecord> = mine.iter().filter(|t| t.state == state).collect();
        if there.len() == ids.len() {
            Ok(())
        } else {
            let per_node = per_node(there.iter().copied());
            Err(format!("{} {state:?}: {per_node:?}", there.len()))
        }
    })
    .await?;
    Ok(mine)
}

/// How many of `tasks` each node runs.
fn per_node<'a>(tasks: impl IntoIterator<Item = &'a TaskRecord>) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for t in tasks {
        *per_node.entry(t.node.to_string()).or_default() += 1;
    }
    per_node
}

/// Polls the mesh-wide record of `id` until `done` holds, for 90 s at most.
/// A failed poll is retried: while a dead node's task is being re-placed,
/// the mesh answers 404 for it.
async fn wait_task(
    api: &Client,
    id: &TaskId,
    what: &str,
    done: impl Fn(&TaskRecord) -> bool,
) -> Result<TaskRecord> {
    let mut last = None;
    wait_until(what, Duration::from_secs(90), async || {
        let t = api.task(id).await.map_err(|e| e.to_string())?;
        let ok = done(&t);
        let state = format!("{:?} attempt {} on {}", t.state, t.attempt, t.node);
        last = Some(t);
        if ok { Ok(()) } else { Err(state) }
    })
    .await?;
    last.context("a record")
}

/// The status a refused request was answered with.
fn refused<T: std::fmt::Debug>(answer: Result<T, ClientError>) -> Result<StatusCode> {
    match answer {
        Ok(got) => bail!("accepted: {got:?}"),
        Err(e) => e.status().with_context(|| format!("no answer: {e}")),
    }
}

#[tokio::test]
async fn arrays_dependencies_retries_drain_and_bad_input_on_real_docker() -> Result<()> {
    scenario(
        "arrays_dependencies_retries_drain_and_bad_input_on_real_docker",
        SCENARIO_LIMIT,
        async {
            let net = common::three_agents("batch", "numa:1 core:2 pu:1").await?;
            let n1 = net.client("n1")?;
            let busybox = |cmd: &str| SubmitRequest {
                image: "mesh-busybox:latest".into(),
                command: vec!["sh".into(), "-c".into(), cmd.into()],
                cores: Some(1),
                ..Default::default()
            };

            // An array: one worker per core of the mesh, each told its index.
            let array = n1
                .submit(&SubmitRequest {
                    array: Some(6),
                    ..busybox("echo member $MESH_TASK_INDEX of $MESH_TASK_COUNT")
                })
                .await?;
            ensure!(array.members.len() == 6, "6 members: {array:?}");
            let mut seen = BTreeMap::new();
            for m in &array.members {
                let t = wait_task(&n1, &m.id, "member succeeded", |t| {
                    t.state == TaskState::Succeeded
                })
                .await?;
                let logs = n1.logs_text(&m.id, false).await?;
                seen.insert(logs.trim().to_owned(), t.node.to_string());
            }
            let want: BTreeMap<String, ()> =
                (0..6).map(|i| (format!("member {i} of 6"), ())).collect();
            ensure!(seen.keys().eq(want.keys()), "every index once: {seen:?}");

            // Dependencies: one waits for a success, one fails with its dependency.
            let first = submit(&n1, &["sleep", "1"]).await?.id;
            let then = n1
                .submit(&SubmitRequest {
                    after: vec![first.clone()],
                    ..busybox("echo after")
                })
                .await?;
            let bad = submit(&n1, &["exit", "3"]).await?.id;
            let never = n1
                .submit(&SubmitRequest {
                    after: vec![bad.clone()],
                    ..busybox("echo never")
                })
                .await?;
            let a = wait_task(&n1, &first, "first succeeded", |t| {
                t.state == TaskState::Succeeded
            })
            .await?;
            let b = wait_task(&n1, &then.id, "dependent succeeded", |t| {
                t.state == TaskState::Succeeded
            })
            .await?;
            ensure!(
                b.started_ms >= a.finished_ms,
                "ran after its dependency: {a:?} {b:?}"
            );
            let n = wait_task(&n1, &never.id, "dependent failed", |t| {
                t.state == TaskState::Failed
            })
            .await?;
            ensure!(
                n.message.as_deref().unwrap_or("").contains(bad.as_str()),
                "says which dependency failed: {n:?}"
            );
            ensure!(n.attempt == 0, "it never ran: {n:?}");

            // Retries: a failing task runs 1 + 2 times, then fails.
            let flaky = n1
                .submit(&SubmitRequest {
                    retries: Some(2),
                    ..busybox("exit 1")
                })
                .await?;
            let f = wait_task(&n1, &flaky.id, "failed after retries", |t| {
                t.state == TaskState::Failed
            })
            .await?;
            ensure!(f.attempt == 3 && f.exit_code == Some(1), "{f:?}");

            // Drain --migrate: a running task moves off the drained node now.
            let long = submit(&n1, &["sleep", "30"]).await?.id;
            let t = wait_task(&n1, &long, "running", |t| t.state == TaskState::Running).await?;
            let from = t.node.to_string();
            n1.set_draining(&from, true, true).await.context("drain")?;
            let moved = wait_task(&n1, &long, "moved and running", |t| {
                t.state == TaskState::Running && t.node.as_str() != from
            })
            .await?;
            ensure!(moved.attempt == 2, "runs again as attempt 2: {moved:?}");
            n1.set_draining(&from, false, false)
                .await
                .context("undrain")?;
            n1.kill(&long).await?;

            // Bad input: a clear status and message, nothing created.
            let status = refused(n1.task(&"t-unknown".parse()?).await)?;
            ensure!(status == StatusCode::NOT_FOUND, "unknown id: {status}");
            let impossible = n1
                .submit(&SubmitRequest {
                    cores: Some(3),
                    ..busybox("true")
                })
                .await;
            let status = refused(impossible)?;
            ensure!(
                status == StatusCode::UNPROCESSABLE_ENTITY,
                "impossible ask: {status}"
            );
            let status = refused(n1.submit_body("{\"image\": 5}").await)?;
            ensure!(
                status == StatusCode::BAD_REQUEST,
                "malformed spec: {status}"
            );

            // The accepting node dies right after "accepted": the task still runs.
            let orphan = submit(&net.client("n2")?, &["sleep", "2"]).await?.id;
            net.kill("n2").await?;
            let done = wait_task(&n1, &orphan, "ran although n2 died", |t| {
                t.state == TaskState::Succeeded
            })
            .await?;
            ensure!(done.node.as_str() != "n2", "{done:?}");
            Ok(())
        },
    )
    .await
}
