//! `meshctl events -f` on a testnet of real agents on real Docker: when a
//! node is killed, the follower (the real meshctl binary, asking another
//! node) shows the failure detector's verdict and each of the dead node's
//! tasks re-placed, with the reason and the keeper that did it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mesh_protocol::TaskState;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::events::{Event, EventKind};
use mesh_testnet::{SCENARIO_LIMIT, scenario};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod common;

/// The meshctl binary built beside this test (`cargo test --workspace`
/// builds it).
fn meshctl() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary has no target directory")?;
    let path = dir.join("meshctl");
    ensure!(
        path.exists(),
        "{} is missing: build it first (cargo build -p meshctl, or cargo test --workspace)",
        path.display()
    );
    Ok(path)
}

#[tokio::test]
async fn meshctl_events_follows_a_killed_nodes_tasks_being_replaced() -> Result<()> {
    scenario(
        "meshctl_events_follows_a_killed_nodes_tasks_being_replaced",
        SCENARIO_LIMIT,
        async {
            let net = common::three_agents("events", "numa:1 core:2 pu:1").await?;
            let n1 = net.client("n1")?;
            let mut ids = Vec::new();
            for _ in 0..6 {
                let req = SubmitRequest {
                    image: "mesh-testsvc:latest".into(),
                    command: vec!["sleep".into(), "60".into()],
                    cores: Some(1),
                    ..Default::default()
                };
                ids.push(n1.submit(&req).await?.id.to_string());
            }
            let lost = common::wait_until("all six run", Duration::from_secs(30), || async {
                let list = n1.tasks().await.map_err(|e| e.to_string())?;
                let mine: Vec<_> = list
                    .iter()
                    .filter(|t| ids.contains(&t.id.to_string()))
                    .collect();
                if mine.len() == 6 && mine.iter().all(|t| t.state == TaskState::Running) {
                    Ok(mine
                        .iter()
                        .filter(|t| t.node.as_str() == "n3")
                        .map(|t| t.id.to_string())
                        .collect::<Vec<_>>())
                } else {
                    Err(format!(
                        "{:?}",
                        mine.iter().map(|t| (&t.id, t.state)).collect::<Vec<_>>()
                    ))
                }
            })
            .await;
            ensure!(!lost.is_empty(), "n3 runs some of the tasks");

            // Follow from n2, as a user would, in JSON to read it here.
            let mut follower = Command::new(meshctl()?)
                .args(["--node", &net.api_url("n2")?, "events", "-f", "--json"])
                .env("MESH_TOKEN", net.api_token()?.unwrap_or_default())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting meshctl events -f")?;
            let mut lines = BufReader::new(follower.stdout.take().context("stdout")?).lines();

            net.kill("n3").await?;
            let mut seen: Vec<Event> = Vec::new();
            let replaced = |seen: &[Event]| {
                lost.iter().all(|id| {
                    seen.iter()
                        .any(|e| e.kind == EventKind::TaskReplaced && e.subject == *id)
                })
            };
            let dead_seen = |seen: &[Event]| {
                seen.iter()
                    .any(|e| e.kind == EventKind::PeerDead && e.subject == "n3")
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while !(replaced(&seen) && dead_seen(&seen)) {
                match tokio::time::timeout_at(deadline, lines.next_line()).await {
                    Ok(Ok(Some(line))) => seen.push(
                        serde_json::from_str(&line)
                            .with_context(|| format!("not an event: {line}"))?,
                    ),
                    Ok(Ok(None)) => {
                        let out = follower.wait_with_output().await?;
                        bail!(
                            "meshctl events -f ended ({}): {}; seen: {seen:#?}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    Ok(Err(e)) => bail!("reading meshctl's output: {e}"),
                    Err(_) => bail!("not all of {lost:?} re-placed within 90 s; seen: {seen:#?}"),
                }
            }
            for id in &lost {
                let e = seen
                    .iter()
                    .find(|e| e.kind == EventKind::TaskReplaced && e.subject == *id)
                    .context("re-placed")?;
                ensure!(
                    e.reason
                        .contains("its node n3 was declared dead by the failure detector")
                        && e.reason.contains(&format!("keeper {}", e.node)),
                    "the reason names the verdict and the keeper: {e:?}"
                );
                ensure!(e.node.as_str() != "n3", "told by a live keeper: {e:?}");
            }
            let dead = seen
                .iter()
                .find(|e| e.kind == EventKind::PeerDead)
                .context("dead")?;
            ensure!(dead.reason.contains("failure detector"), "{dead:?}");

            // The text form shows the same, one line each.
            let text = Command::new(meshctl()?)
                .args([
                    "--node",
                    &net.api_url("n1")?,
                    "events",
                    "--kind",
                    "task-replaced",
                ])
                .env("MESH_TOKEN", net.api_token()?.unwrap_or_default())
                .output()
                .await?;
            ensure!(
                text.status.success(),
                "{}",
                String::from_utf8_lossy(&text.stderr)
            );
            let text = String::from_utf8_lossy(&text.stdout);
            for id in &lost {
                ensure!(
                    text.lines()
                        .any(|l| l.contains("task-replaced") && l.contains(id.as_str())),
                    "{id} missing from:\n{text}"
                );
            }
            follower.start_kill()?;
            Ok(())
        },
    )
    .await
}
