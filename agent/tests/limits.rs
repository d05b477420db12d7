//! Bounds on what the agent keeps and sends: the task list in pages (no
//! node's answer outgrows a frame, however many tasks it holds), bounded
//! task specs, retention of finished tasks (records, keeper copies, kept
//! output) and the cap on kept output. The retention of finished tasks'
//! containers and logs on real Docker is at the end.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::retention::Retention;
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use meshctl::client::Scope;

fn setup(tag: &str) -> Setup {
    Setup::memory(tag)
        .topology("numa:1 core:2 pu:1")
        .ping_interval(Duration::from_millis(50))
}

/// A task that ends at once, carrying `pad` bytes of environment.
fn padded(pad: usize) -> SubmitRequest {
    let mut t = task(1, &["exit", "0"]);
    t.env = vec![format!("PAD={}", "x".repeat(pad))];
    t
}

fn ids(records: &[TaskRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.to_string()).collect()
}

#[tokio::test]
async fn a_node_holding_more_than_a_frame_of_tasks_still_shows_in_the_mesh_list() {
    let agents = setup("bigl").cluster(2).await;
    let (a, b) = (&agents[0], &agents[1]);
    // Tasks of 60 KiB each until both nodes hold 18 or more: over 1 MiB of
    // records each, more than one answer of the old, unpaged list could
    // carry. (Placement spreads them; where each goes is its choice.)
    let mut submitted = BTreeSet::new();
    for i in 0..200 {
        let via = if i % 2 == 0 { a } else { b };
        submitted.insert(via.api.submit(&padded(60_000)).await.id.to_string());
        if submitted.len() % 10 == 0 {
            let (here_a, here_b) = (a.api.local_tasks().await, b.api.local_tasks().await);
            if here_a.len() >= 18 && here_b.len() >= 18 {
                break;
            }
        }
    }
    let (here_a, here_b) = (a.api.local_tasks().await, b.api.local_tasks().await);
    assert!(here_a.len() >= 18 && here_b.len() >= 18);
    assert_eq!(
        here_a.len() + here_b.len(),
        submitted.len(),
        "each task on one node"
    );
    for agent in [a, b] {
        wait_until(
            "every task is listed, wherever it ran",
            Duration::from_secs(20),
            || async {
                let listed: BTreeSet<String> = ids(&agent.api.tasks().await).into_iter().collect();
                if listed == submitted {
                    Ok(())
                } else {
                    Err(submitted.difference(&listed).count())
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn the_list_comes_in_pages_in_id_order_that_together_hold_every_task_once() {
    let agents = setup("pages").cluster(2).await;
    let (a, b) = (&agents[0], &agents[1]);
    for i in 0..13 {
        let via = if i % 3 == 0 { a } else { b };
        via.api.submit(&task(1, &["exit", "0"])).await;
    }
    let all = wait_until("13 tasks listed", Duration::from_secs(10), || async {
        let all = a.api.tasks().await;
        if all.len() == 13 {
            Ok(all)
        } else {
            Err(all.len())
        }
    })
    .await;
    let mut sorted = ids(&all);
    sorted.sort();
    assert_eq!(ids(&all), sorted, "in id order");
    // Pages of 4 through either node: 4, 4, 4, 1, then no next page.
    for via in [a, b] {
        let client = via.api.client();
        let mut after: Option<TaskId> = None;
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let (page, next) = client
                .tasks_page(Scope::Mesh, Some(4), after.as_ref())
                .await
                .unwrap();
            sizes.push(page.len());
            seen.extend(ids(&page));
            match next {
                Some(n) => {
                    assert_eq!(Some(&n), page.last().map(|r| &r.id));
                    after = Some(n);
                }
                None => break,
            }
        }
        assert_eq!(seen, sorted);
        assert_eq!(sizes, [4, 4, 4, 1]);
    }
    // Bad paging parameters are refused with the reason.
    let (status, _, body) = a.api.get_raw("/v1/tasks?limit=0").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = a.api.get_raw("/v1/tasks?limit=10001").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("10000"), "{body}");
    let (status, _, body) = a.api.get_raw("/v1/tasks?after=bad%20id").await;
    assert_eq!(status, 400, "{body}");
    // The first page by hand: the header names its last id.
    let (status, next, body) = a.api.get_raw("/v1/tasks?limit=5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next.as_deref(), Some(sorted[4].as_str()));
}

#[tokio::test]
async fn oversized_task_specs_are_refused_with_the_limit() {
    let a = setup("specs").start(&[]).await;
    let too_big = |r: SubmitRequest| {
        let api = a.api.clone();
        async move { api.submit_refused(&r).await }
    };
    let refused = too_big(padded(70_000)).await;
    assert_eq!(refused.status, 400);
    assert!(refused.message.contains("env is too large"), "{refused:?}");
    let mut many_args = task(1, &["exit", "0"]);
    many_args.command = vec!["a".into(); 2000];
    let refused = too_big(many_args).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.message.contains("command is too large"),
        "{refused:?}"
    );
    let mut labels = task(1, &["exit", "0"]);
    labels.labels = (0..200).map(|i| (format!("l{i}"), "v".into())).collect();
    let refused = too_big(labels).await;
    assert!(
        refused.message.contains("labels is too large"),
        "{refused:?}"
    );
    let mut named = task(1, &["exit", "0"]);
    named.name = Some("n".repeat(129));
    assert_eq!(too_big(named).await.status, 400);
    assert!(a.api.tasks().await.is_empty(), "nothing was accepted");
    // At the limits: accepted.
    a.api.submit(&padded(60_000)).await;
}

/// The kept output files in an agent's data dir, by name.
fn log_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("logs"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps two finished tasks, looked at every 100 ms, once a task finished
/// 2 s ago: the grace that lets a runner's last push reach the keeper
/// before it forgets the task (without it, a keeper could be left holding
/// a copy that still says running, which retention never forgets).
fn keep_two() -> Retention {
    Retention {
        max_age_ms: 3_600_000,
        max_records: 2,
        grace_ms: 2_000,
    }
}

#[tokio::test]
async fn finished_tasks_past_the_count_are_forgotten_with_their_copies_and_output_but_never_unfinished_ones()
 {
    let mesh = setup("keep").retention(keep_two(), Duration::from_millis(100));
    let agents = mesh.cluster(2).await;
    let (a, b) = (&agents[0], &agents[1]);
    // A task that runs until killed: never forgotten.
    let runs = a.api.submit(&task(1, &["run"])).await.id;
    a.api.wait_state(&runs, TaskState::Running, 10).await;
    // Retention is per node: each keeps its two newest finished tasks.
    let mut finished: Vec<(TaskId, String)> = Vec::new();
    for i in 0..6 {
        let t = a
            .api
            .submit(&task(1, &["print", &format!("out {i}")]))
            .await;
        a.api.wait_state(&t.id, TaskState::Succeeded, 10).await;
        finished.push((t.id, t.node.unwrap().to_string()));
    }
    let kept: BTreeSet<TaskId> = finished
        .iter()
        .enumerate()
        .filter(|(i, (_, node))| finished[i + 1..].iter().filter(|(_, n)| n == node).count() < 2)
        .map(|(_, (id, _))| id.clone())
        .collect();
    let forgotten: Vec<TaskId> = finished
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| !kept.contains(id))
        .collect();
    assert!(!forgotten.is_empty());
    wait_until(
        "only each node's two newest finished tasks and the running one are left",
        Duration::from_secs(20),
        || async {
            let left: BTreeSet<TaskId> = a.api.tasks().await.into_iter().map(|r| r.id).collect();
            let want: BTreeSet<TaskId> = kept.iter().cloned().chain([runs.clone()]).collect();
            if left == want { Ok(()) } else { Err(left) }
        },
    )
    .await;
    // The forgotten ones' output is gone from whichever node ran them, and
    // the keepers hold no copy of them.
    wait_until(
        "output and copies of forgotten tasks are gone",
        Duration::from_secs(20),
        || async {
            let mut stale = Vec::new();
            for agent in [a, b] {
                for f in log_files(agent.data_dir()) {
                    if forgotten.iter().any(|id| f.starts_with(&format!("{id}."))) {
                        stale.push(f);
                    }
                }
                let copies = agent.running().supervisor.copies().await.unwrap();
                stale.extend(
                    copies
                        .into_iter()
                        .filter(|c| forgotten.contains(&c.id))
                        .map(|c| format!("copy of {}", c.id)),
                );
            }
            if stale.is_empty() { Ok(()) } else { Err(stale) }
        },
    )
    .await;
    for id in &kept {
        assert!(
            a.api.logs(id, false).await.starts_with("out"),
            "kept output is readable"
        );
    }
    a.api.kill(&runs).await;
}

#[tokio::test]
async fn forgotten_tasks_stay_forgotten_after_a_restart() {
    let mut a = setup("keepr")
        .retention(keep_two(), Duration::from_millis(100))
        .start(&[])
        .await;
    let mut done = Vec::new();
    for _ in 0..4 {
        let t = a.api.submit(&task(1, &["exit", "0"])).await.id;
        a.api.wait_state(&t, TaskState::Succeeded, 10).await;
        done.push(t);
    }
    wait_until("two are left", Duration::from_secs(10), || async {
        let n = a.api.tasks().await.len();
        if n == 2 { Ok(()) } else { Err(n) }
    })
    .await;
    a.stop().await;
    a.restart(&[]).await;
    let left: Vec<TaskId> = a.api.tasks().await.into_iter().map(|r| r.id).collect();
    assert_eq!(left, done[2..]);
}

#[tokio::test]
async fn finished_task_containers_and_logs_go_past_retention_and_output_keeps_its_tail_on_docker() {
    let a = Setup::docker("keepd")
        .topology("numa:1 core:2 pu:1")
        .retention(
            Retention {
                max_age_ms: 3_600_000,
                max_records: 1,
                grace_ms: 0,
            },
            Duration::from_millis(200),
        )
        .max_log_bytes(1024)
        .start(&[])
        .await;
    let sleeper = a.api.submit(&sleep_task(1, "120")).await.id;
    a.api.wait_state(&sleeper, TaskState::Running, 60).await;
    let mut done = Vec::new();
    for lines in ["3", "400"] {
        let t = a.api.submit(&task(1, &["print", lines])).await.id;
        a.api.wait_state(&t, TaskState::Succeeded, 60).await;
        done.push(t);
    }
    // 400 lines are about 2.9 KB: the kept output is the last 1 KiB, after
    // a line that says how much was dropped.
    let out = a.api.logs(&done[1], false).await;
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("[meshd: "), "{first}");
    assert!(first.contains("bytes of output dropped"), "{first}");
    assert!(
        out.ends_with("err 400\n"),
        "{}",
        &out[out.len().saturating_sub(80)..]
    );
    assert!(out.len() < 1024 + 200, "{} bytes", out.len());
    // The first finished task is forgotten: record, output, container.
    wait_until(
        "only the newest finished task is kept",
        Duration::from_secs(30),
        || async {
            let left: BTreeSet<TaskId> = a.api.tasks().await.into_iter().map(|r| r.id).collect();
            let want: BTreeSet<TaskId> = [done[1].clone(), sleeper.clone()].into();
            if left == want { Ok(()) } else { Err(left) }
        },
    )
    .await;
    wait_until(
        "its output file is gone",
        Duration::from_secs(30),
        || async {
            let files = log_files(a.data_dir());
            let gone = !files
                .iter()
                .any(|f| f.starts_with(&format!("{}.", done[0])));
            let kept = files.contains(&format!("{}.1.log", done[1]));
            if gone && kept { Ok(()) } else { Err(files) }
        },
    )
    .await;
    let theirs = docker()
        .list(&[(mesh_protocol::labels::TASK, done[0].as_str())])
        .await
        .unwrap();
    assert!(theirs.is_empty(), "{theirs:?}");
    // The running task is kept however many finished ones there are.
    assert_eq!(a.api.task(&sleeper).await.state, TaskState::Running);
    a.api.kill(&sleeper).await;
}
