//! Batch tasks across a testnet of real meshd agents on real Docker: any
//! node accepts, tasks spread to the least-utilised nodes pinned to distinct
//! cores, and every node shows, kills and streams the logs of every task.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mesh_protocol::api::{SubmitRequest, SubmitResponse};
use mesh_protocol::{TaskRecord, TaskState};
use mesh_testnet::{expect, wait_until};

mod common;

async fn submit(http: &reqwest::Client, url: &str, cmd: &[&str]) -> Result<SubmitResponse> {
    let req = SubmitRequest {
        image: "mesh-testsvc:latest".into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        cores: Some(1),
        ..Default::default()
    };
    let r = http
        .post(format!("{url}/v1/tasks"))
        .json(&req)
        .send()
        .await?;
    ensure!(r.status() == 202, "submit refused: {}", r.text().await?);
    Ok(r.json().await?)
}

async fn tasks(http: &reqwest::Client, url: &str) -> Result<Vec<TaskRecord>> {
    Ok(http
        .get(format!("{url}/v1/tasks"))
        .send()
        .await?
        .json()
        .await?)
}

#[tokio::test]
async fn twelve_tasks_fill_three_nodes_and_every_node_sees_them() -> Result<()> {
    let net = common::three_agents("tasks", "numa:1 core:4 pu:1").await?;
    let all = net.nodes();
    let http = reqwest::Client::new();
    let n1 = net.api_url("n1")?;

    // 12 one-core tasks through n1 fill 3 nodes of 4 cores: 4/4/4.
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(submit(&http, &n1, &["sleep", "8"]).await?.id.to_string());
    }
    // A 13th waits for a core.
    let extra = submit(&http, &n1, &["sleep", "1"]).await?.id.to_string();

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    wait_until("12 tasks running", Duration::from_secs(30), async || {
        let list = tasks(&http, &n1).await.map_err(|e| e.to_string())?;
        per_node.clear();
        let running = list
            .iter()
            .filter(|t| ids.contains(&t.id.to_string()) && t.state == TaskState::Running)
            .inspect(|t| *per_node.entry(t.node.to_string()).or_default() += 1)
            .count();
        if running == 12 {
            Ok(())
        } else {
            Err(format!("{running} running: {per_node:?}"))
        }
    })
    .await?;
    ensure!(
        per_node.values().all(|&n| n == 4) && per_node.len() == 3,
        "expected 4/4/4, got {per_node:?}"
    );

    // Each node's tasks hold distinct cores of that node.
    let list = tasks(&http, &net.api_url("n2")?).await?;
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
    let n3 = net.api_url("n3")?;
    let logs = http
        .get(format!("{n3}/v1/tasks/{}/logs?follow=false", victim.id))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        logs.contains("sleeping 8"),
        "logs across the mesh: {logs:?}"
    );
    let r = http
        .post(format!("{n3}/v1/tasks/{}/kill", victim.id))
        .send()
        .await?;
    ensure!(
        r.status().is_success(),
        "kill across the mesh: {}",
        r.text().await?
    );
    wait_until("killed", Duration::from_secs(20), async || {
        let r = http
            .get(format!("{n3}/v1/tasks/{}", victim.id))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let t = r.json::<TaskRecord>().await.map_err(|e| e.to_string())?;
        if t.state == TaskState::Killed {
            Ok(())
        } else {
            Err(format!("{:?}", t.state))
        }
    })
    .await?;

    // Everything ends: the 13th runs once cores free.
    wait_until("all done", Duration::from_secs(60), async || {
        let list = tasks(&http, &n1).await.map_err(|e| e.to_string())?;
        let open = list.iter().filter(|t| !t.state.is_terminal()).count();
        if open == 0 {
            Ok(())
        } else {
            Err(format!("{open} not ended"))
        }
    })
    .await?;
    let list = tasks(&http, &n1).await?;
    for t in &list {
        if t.id == victim.id {
            continue;
        }
        if t.state != TaskState::Succeeded || t.attempt != 1 {
            bail!("{} ended {:?} after {} attempts", t.id, t.state, t.attempt);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_killed_nodes_tasks_run_again_elsewhere_once() -> Result<()> {
    let net = common::three_agents("failover", "numa:1 core:2 pu:1").await?;
    let all = net.nodes();
    let http = reqwest::Client::new();
    let n1 = net.api_url("n1")?;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(&http, &n1, &["sleep", "8"]).await?.id.to_string());
    }
    wait_until("6 tasks running", Duration::from_secs(30), async || {
        let list = tasks(&http, &n1).await.map_err(|e| e.to_string())?;
        let running = list
            .iter()
            .filter(|t| ids.contains(&t.id.to_string()) && t.state == TaskState::Running)
            .count();
        if running == 6 {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    })
    .await?;
    let list = tasks(&http, &n1).await?;
    let lost: Vec<String> = list
        .iter()
        .filter(|t| t.node.as_str() == "n3" && ids.contains(&t.id.to_string()))
        .map(|t| t.id.to_string())
        .collect();
    ensure!(!lost.is_empty(), "n3 runs some of the tasks: {list:?}");

    net.kill("n3").await?;
    wait_until(
        "every task succeeded",
        Duration::from_secs(90),
        async || {
            let list = tasks(&http, &n1).await.map_err(|e| e.to_string())?;
            let done = list
                .iter()
                .filter(|t| ids.contains(&t.id.to_string()) && t.state == TaskState::Succeeded)
                .count();
            if done == 6 {
                Ok(())
            } else {
                Err(format!("{done} of 6 succeeded"))
            }
        },
    )
    .await?;
    let list = tasks(&http, &n1).await?;
    for t in list.iter().filter(|t| ids.contains(&t.id.to_string())) {
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
    let n3 = net.api_url("n3")?;
    wait_until(
        "n3's old attempts are not current",
        Duration::from_secs(20),
        async || {
            let local: Vec<TaskRecord> = http
                .get(format!("{n3}/v1/tasks?scope=local"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
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
    let list = tasks(&http, &n3).await?;
    for t in list.iter().filter(|t| lost.contains(&t.id.to_string())) {
        ensure!(
            t.attempt == 2 && t.state == TaskState::Succeeded,
            "the mesh reports the current attempt: {t:?}"
        );
    }
    Ok(())
}

/// Polls the mesh-wide record of `id` through `url` until `done` holds.
async fn wait_task(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    what: &str,
    done: impl Fn(&TaskRecord) -> bool,
) -> Result<TaskRecord> {
    let mut last = None;
    wait_until(what, Duration::from_secs(90), async || {
        let r = http
            .get(format!("{url}/v1/tasks/{id}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let t: TaskRecord = r.json().await.map_err(|e| e.to_string())?;
        let ok = done(&t);
        let state = format!("{:?} attempt {} on {}", t.state, t.attempt, t.node);
        last = Some(t);
        if ok { Ok(()) } else { Err(state) }
    })
    .await?;
    last.context("a record")
}

async fn submit_req(
    http: &reqwest::Client,
    url: &str,
    req: &SubmitRequest,
) -> Result<SubmitResponse> {
    let r = http
        .post(format!("{url}/v1/tasks"))
        .json(req)
        .send()
        .await?;
    ensure!(r.status() == 202, "submit refused: {}", r.text().await?);
    Ok(r.json().await?)
}

#[tokio::test]
async fn arrays_dependencies_retries_drain_and_bad_input_on_real_docker() -> Result<()> {
    let net = common::three_agents("batch", "numa:1 core:2 pu:1").await?;
    let http = reqwest::Client::new();
    let n1 = net.api_url("n1")?;
    let busybox = |cmd: &str| SubmitRequest {
        image: "mesh-busybox:latest".into(),
        command: vec!["sh".into(), "-c".into(), cmd.into()],
        cores: Some(1),
        ..Default::default()
    };

    // An array: one worker per core of the mesh, each told its index.
    let array = submit_req(
        &http,
        &n1,
        &SubmitRequest {
            array: Some(6),
            ..busybox("echo member $MESH_TASK_INDEX of $MESH_TASK_COUNT")
        },
    )
    .await?;
    ensure!(array.members.len() == 6, "6 members: {array:?}");
    let mut seen = BTreeMap::new();
    for m in &array.members {
        let t = wait_task(&http, &n1, m.id.as_str(), "member succeeded", |t| {
            t.state == TaskState::Succeeded
        })
        .await?;
        let logs = http
            .get(format!("{n1}/v1/tasks/{}/logs", m.id))
            .send()
            .await?
            .text()
            .await?;
        seen.insert(logs.trim().to_owned(), t.node.to_string());
    }
    let want: BTreeMap<String, ()> = (0..6).map(|i| (format!("member {i} of 6"), ())).collect();
    ensure!(seen.keys().eq(want.keys()), "every index once: {seen:?}");

    // Dependencies: one waits for a success, one fails with its dependency.
    let first = submit(&http, &n1, &["sleep", "1"]).await?.id.to_string();
    let then = submit_req(
        &http,
        &n1,
        &SubmitRequest {
            after: vec![first.parse()?],
            ..busybox("echo after")
        },
    )
    .await?;
    let bad = submit(&http, &n1, &["exit", "3"]).await?.id.to_string();
    let never = submit_req(
        &http,
        &n1,
        &SubmitRequest {
            after: vec![bad.parse()?],
            ..busybox("echo never")
        },
    )
    .await?;
    let a = wait_task(&http, &n1, &first, "first succeeded", |t| {
        t.state == TaskState::Succeeded
    })
    .await?;
    let b = wait_task(&http, &n1, then.id.as_str(), "dependent succeeded", |t| {
        t.state == TaskState::Succeeded
    })
    .await?;
    ensure!(
        b.started_ms >= a.finished_ms,
        "ran after its dependency: {a:?} {b:?}"
    );
    let n = wait_task(&http, &n1, never.id.as_str(), "dependent failed", |t| {
        t.state == TaskState::Failed
    })
    .await?;
    ensure!(
        n.message.as_deref().unwrap_or("").contains(&bad),
        "says which dependency failed: {n:?}"
    );
    ensure!(n.attempt == 0, "it never ran: {n:?}");

    // Retries: a failing task runs 1 + 2 times, then fails.
    let flaky = submit_req(
        &http,
        &n1,
        &SubmitRequest {
            retries: Some(2),
            ..busybox("exit 1")
        },
    )
    .await?;
    let f = wait_task(&http, &n1, flaky.id.as_str(), "failed after retries", |t| {
        t.state == TaskState::Failed
    })
    .await?;
    ensure!(f.attempt == 3 && f.exit_code == Some(1), "{f:?}");

    // Drain --migrate: a running task moves off the drained node now.
    let long = submit(&http, &n1, &["sleep", "30"]).await?.id.to_string();
    let t = wait_task(&http, &n1, &long, "running", |t| {
        t.state == TaskState::Running
    })
    .await?;
    let from = t.node.to_string();
    let r = http
        .post(format!("{n1}/v1/nodes/{from}/drain?migrate=true"))
        .send()
        .await?;
    ensure!(r.status().is_success(), "drain: {}", r.text().await?);
    let moved = wait_task(&http, &n1, &long, "moved and running", |t| {
        t.state == TaskState::Running && t.node.as_str() != from
    })
    .await?;
    ensure!(moved.attempt == 2, "runs again as attempt 2: {moved:?}");
    let r = http
        .post(format!("{n1}/v1/nodes/{from}/undrain"))
        .send()
        .await?;
    ensure!(r.status().is_success(), "undrain: {}", r.text().await?);
    http.post(format!("{n1}/v1/tasks/{long}/kill"))
        .send()
        .await?;

    // Bad input: a clear status and message, nothing created.
    let r = http.get(format!("{n1}/v1/tasks/t-unknown")).send().await?;
    ensure!(r.status() == 404, "unknown id: {}", r.status());
    let r = http
        .post(format!("{n1}/v1/tasks"))
        .json(&SubmitRequest {
            cores: Some(3),
            ..busybox("true")
        })
        .send()
        .await?;
    ensure!(
        r.status() == 422,
        "impossible ask: {} {}",
        r.status(),
        r.text().await?
    );
    let r = http
        .post(format!("{n1}/v1/tasks"))
        .body("{\"image\": 5}")
        .header("content-type", "application/json")
        .send()
        .await?;
    ensure!(r.status() == 400, "malformed spec: {}", r.status());

    // The accepting node dies right after "accepted": the task still runs.
    let n2 = net.api_url("n2")?;
    let orphan = submit(&http, &n2, &["sleep", "2"]).await?.id.to_string();
    net.kill("n2").await?;
    let done = wait_task(&http, &n1, &orphan, "ran although n2 died", |t| {
        t.state == TaskState::Succeeded
    })
    .await?;
    ensure!(done.node.as_str() != "n2", "{done:?}");
    Ok(())
}
