//! Batch tasks on one agent, against the real Docker engine.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::{TaskId, TaskState};

/// One agent on Docker; its supervisor checks containers every 300 ms.
async fn start(tag: &str, topology: &str, max_queue: usize) -> TestAgent {
    Setup::docker(tag)
        .topology(topology)
        .max_queue(max_queue)
        .ping_interval(Duration::from_millis(300))
        .start(&[])
        .await
}

#[tokio::test]
async fn task_runs_pinned_to_one_numa_node() {
    let agent = start("pin", "numa:2 core:4 pu:2", 100).await;
    let api = &agent.api;
    // Hold two cores of NUMA 0 first, so the next ask has to be placed well.
    let first = api.submit(&sleep_task(3, "30")).await;
    let second = api.submit(&sleep_task(2, "2")).await;
    let t1 = api.wait_state(&first.id, TaskState::Running, 20).await;
    let t2 = api.wait_state(&second.id, TaskState::Running, 20).await;
    let a1 = t1.allocation.clone().unwrap();
    let a2 = t2.allocation.clone().unwrap();
    assert!(a1.single_numa() && a2.single_numa());
    // Three cores on NUMA 0 leave one: two cores must go to NUMA 1.
    assert_ne!(a1.mems, a2.mems);
    assert!(a1.cpus.is_disjoint(&a2.cpus));
    assert_eq!(a2.cpus.len(), 4, "2 cores x 2 PUs");

    // The node view reports the same holdings.
    let node = api.node().await;
    for hold in &node.cores {
        let expect = if a1.cores.contains(&hold.core) {
            Some(&t1.id)
        } else if a2.cores.contains(&hold.core) {
            Some(&t2.id)
        } else {
            None
        };
        assert_eq!(hold.task.as_ref(), expect, "core {}", hold.core);
    }

    // The container got the mapped cpusets and memory binding.
    let info = docker()
        .inspect(t2.container.as_ref().unwrap())
        .await
        .unwrap();
    let (cpus, mems) = node.mapping.map(&a2.cpus, &a2.mems);
    assert_eq!(info.cpuset_cpus.as_deref(), Some(cpus.to_string().as_str()));
    assert_eq!(info.cpuset_mems.as_deref(), Some(mems.to_string().as_str()));
    assert_eq!(info.labels["mesh.node"], agent.id.as_str());
    assert_eq!(info.labels["mesh.task"], t2.id.as_str());
    assert_eq!(info.labels["mesh.kind"], "task");

    let done = api.wait_state(&second.id, TaskState::Succeeded, 20).await;
    assert_eq!(done.exit_code, Some(0));
    // Its cores came back and its container is gone.
    let node = api.node().await;
    assert!(node.cores.iter().all(|h| h.task.as_ref() != Some(&t2.id)));
    assert!(
        docker()
            .inspect(t2.container.as_ref().unwrap())
            .await
            .is_err()
    );
    api.kill(&first.id).await;
    api.wait_state(&first.id, TaskState::Killed, 20).await;
}

#[tokio::test]
async fn exit_codes_and_retries() {
    let agent = start("exit", "numa:1 core:4 pu:1", 100).await;
    let api = &agent.api;
    let ok = api.submit(&task(1, &["exit", "0"])).await;
    let bad = api.submit(&task(1, &["exit", "3"])).await;
    let crash = api.submit(&task(1, &["crash"])).await;
    let mut retried = task(1, &["exit", "7"]);
    retried.retries = Some(1);
    let retried = api.submit(&retried).await;

    assert_eq!(
        api.wait_state(&ok.id, TaskState::Succeeded, 20)
            .await
            .exit_code,
        Some(0)
    );
    let b = api.wait_state(&bad.id, TaskState::Failed, 20).await;
    assert_eq!(b.exit_code, Some(3));
    assert_eq!(b.attempt, 1);
    let c = api.wait_state(&crash.id, TaskState::Failed, 20).await;
    assert_eq!(c.exit_code, Some(3));
    assert!(
        api.logs(&crash.id, false)
            .await
            .contains("crashing on start")
    );
    let r = api.wait_state(&retried.id, TaskState::Failed, 30).await;
    assert_eq!(r.attempt, 2, "one retry after the first failure");
    assert_eq!(r.exit_code, Some(7));
}

#[tokio::test]
async fn queue_then_run_as_cores_free() {
    let agent = start("queue", "numa:1 core:2 pu:1", 100).await;
    let api = &agent.api;
    let ids: Vec<TaskId> = futures_util::future::join_all((0..5).map(|_| {
        let api = api.clone();
        async move { api.submit(&sleep_task(1, "1")).await.id }
    }))
    .await;
    // Never more than two at once, never the same core twice at once:
    // checked on every look until all have succeeded.
    let saw_queued = std::cell::Cell::new(false);
    wait_until("all five tasks succeed", Duration::from_secs(60), || {
        let (saw_queued, ids) = (&saw_queued, &ids);
        async move {
            let tasks = api.tasks().await;
            let mine: Vec<_> = tasks.into_iter().filter(|t| ids.contains(&t.id)).collect();
            let running: Vec<_> = mine
                .iter()
                .filter(|t| matches!(t.state, TaskState::Running | TaskState::Starting))
                .collect();
            assert!(running.len() <= 2, "{} running on 2 cores", running.len());
            let mut cores = BTreeSet::new();
            for t in &running {
                for c in &t.allocation.as_ref().unwrap().cores {
                    assert!(cores.insert(*c), "core {c} held twice");
                }
            }
            saw_queued.set(saw_queued.get() || mine.iter().any(|t| t.state == TaskState::Queued));
            if mine.iter().all(|t| t.state == TaskState::Succeeded) {
                Ok(())
            } else {
                Err(mine)
            }
        }
    })
    .await;
    assert!(
        saw_queued.get(),
        "with 5 tasks on 2 cores some must have waited"
    );
}

#[tokio::test]
async fn kill_running_and_queued() {
    let agent = start("kill", "numa:1 core:1 pu:1", 100).await;
    let api = &agent.api;
    let running = api.submit(&sleep_task(1, "60")).await;
    let queued = api.submit(&sleep_task(1, "60")).await;
    let r = api.wait_state(&running.id, TaskState::Running, 20).await;
    assert_eq!(api.task(&queued.id).await.state, TaskState::Queued);

    api.kill(&queued.id).await;
    assert_eq!(api.task(&queued.id).await.state, TaskState::Killed);

    api.kill(&running.id).await;
    let k = api.wait_state(&running.id, TaskState::Killed, 20).await;
    assert_eq!(k.exit_code, Some(137));
    assert!(
        docker()
            .inspect(r.container.as_ref().unwrap())
            .await
            .is_err()
    );
    // Killing a finished task is a conflict, not a crash.
    let finished = refusal(api.client().kill(&running.id).await);
    assert_eq!(finished.status, 409, "{finished:?}");
    // The core is free again.
    let next = api.submit(&task(1, &["exit", "0"])).await;
    api.wait_state(&next.id, TaskState::Succeeded, 20).await;
}

#[tokio::test]
async fn logs_of_running_and_finished_tasks() {
    let agent = start("logs", "numa:1 core:2 pu:1", 100).await;
    let api = &agent.api;
    let printed = api.submit(&task(1, &["print", "6"])).await;
    // Following from submission waits for the start and ends with the task.
    let followed = api.logs(&printed.id, true).await;
    for i in 1..=6 {
        let line = if i % 2 == 1 {
            format!("out {i}")
        } else {
            format!("err {i}")
        };
        assert!(followed.contains(&line), "missing {line:?} in {followed:?}");
    }
    api.wait_state(&printed.id, TaskState::Succeeded, 20).await;
    // After the container is gone the kept copy answers.
    let kept = api.logs(&printed.id, false).await;
    assert!(kept.contains("out 1") && kept.contains("err 6"), "{kept:?}");
    let running = api.submit(&sleep_task(1, "30")).await;
    api.wait_state(&running.id, TaskState::Running, 20).await;
    let live = api.logs(&running.id, false).await;
    assert!(live.contains("sleeping 30"), "{live:?}");
    api.kill(&running.id).await;
    api.wait_state(&running.id, TaskState::Killed, 20).await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_creates_nothing() {
    let agent = start("bad", "numa:1 core:1 pu:1", 2).await;
    let api = &agent.api;
    let cases = [
        ("{not json", 400, "malformed"),
        (r#"{"image":"x","corez":1}"#, 400, "corez"),
        (r#"{"image":""}"#, 400, "image is empty"),
        (r#"{"image":"x","cores":0}"#, 400, "cores"),
        (r#"{"image":"x","cores":64}"#, 422, "only 1"),
        (r#"{"image":"x","env":["NOEQUALS"]}"#, 400, "KEY=VALUE"),
        (r#"{"image":"x","memory":"1k"}"#, 400, "minimum"),
        (
            r#"{"image":"x","labels":{"mesh.node":"evil"}}"#,
            400,
            "reserved",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, text) = api.post_raw("/v1/tasks", body).await;
        assert_eq!(got, status, "{body} -> {text}");
        assert!(
            text.contains(needle),
            "{body} -> {text} (wanted {needle:?})"
        );
        assert!(text.starts_with("{\"error\":"), "{text}");
    }
    assert!(api.tasks().await.is_empty(), "nothing half-created");

    let nope = TaskId::new("nope").unwrap();
    assert_eq!(refusal(api.client().task(&nope).await).status, 404);
    let unknown = TaskId::new("t-unknown").unwrap();
    assert_eq!(refusal(api.client().kill(&unknown).await).status, 404);
    // Not a task id at all (the client would not send it).
    let (status, _) = api.post_raw("/v1/tasks/bad%20id/kill", "").await;
    assert_eq!(status, 404);

    // An image that does not exist fails the task with Docker's reason.
    let missing = api
        .submit(&SubmitRequest {
            image: "mesh-no-such-image:never".into(),
            ..Default::default()
        })
        .await;
    let m = api.wait_state(&missing.id, TaskState::Failed, 20).await;
    assert!(
        m.message.as_deref().unwrap_or("").contains("image"),
        "{m:?}"
    );

    // A full queue refuses with a reason; what was accepted stays.
    let hold = api.submit(&sleep_task(1, "30")).await;
    api.wait_state(&hold.id, TaskState::Running, 20).await;
    api.submit(&sleep_task(1, "1")).await;
    api.submit(&sleep_task(1, "1")).await;
    let full = api.submit_refused(&task(1, &[])).await;
    assert_eq!(full.status, 503, "{full:?}");
    assert!(full.message.contains("queue is full"), "{full:?}");
    assert_eq!(api.tasks().await.len(), 4);
    api.kill(&hold.id).await;
}

#[tokio::test]
async fn container_removed_behind_the_agents_back_is_lost() {
    let agent = start("vanish", "numa:1 core:1 pu:1", 100).await;
    let api = &agent.api;
    let t = api.submit(&sleep_task(1, "60")).await;
    let r = api.wait_state(&t.id, TaskState::Running, 20).await;
    docker()
        .remove(r.container.as_ref().unwrap())
        .await
        .unwrap();
    let lost = api.wait_state(&t.id, TaskState::Lost, 20).await;
    assert!(lost.message.unwrap().contains("removed outside the agent"));
    // Its core is free again.
    let next = api.submit(&task(1, &["exit", "0"])).await;
    api.wait_state(&next.id, TaskState::Succeeded, 20).await;
}
