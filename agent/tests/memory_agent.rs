//! The supervisor's logic on the in-memory runtime: fast checks of paths
//! that are slow or awkward to provoke on real Docker (a container removed
//! behind the agent's back, Docker going away and coming back).
//! The same paths on real Docker are in `restart.rs` and `docker_tasks.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_agent::Config;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_protocol::TaskState;
use tokio_util::sync::CancellationToken;

async fn agent(rt: Arc<MemoryRuntime>) -> (Api, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder(unique_node("mem"), dir.path())
        .topology("numa:1 core:2 pu:1")
        .ping_interval(Duration::from_millis(50));
    let shutdown = CancellationToken::new();
    let a = mesh_agent::start_with_runtime(config, rt, shutdown.clone())
        .await
        .unwrap();
    (Api::new(&format!("http://{}", a.api_addr)), shutdown, dir)
}

#[tokio::test]
async fn vanished_container_is_lost_or_retried() {
    let rt = Arc::new(MemoryRuntime::new());
    let (api, stop, _dir) = agent(rt.clone()).await;
    let once = api.submit(&sleep_task(1, "9")).await.id.to_string();
    let mut again = sleep_task(1, "9");
    again.retries = Some(1);
    let again = api.submit(&again).await.id.to_string();
    let a = api.wait_state(&once, TaskState::Running, 5).await;
    let b = api.wait_state(&again, TaskState::Running, 5).await;
    rt.vanish(a.container.as_ref().unwrap());
    rt.vanish(b.container.as_ref().unwrap());
    let lost = api.wait_state(&once, TaskState::Lost, 5).await;
    assert!(lost.message.unwrap().contains("removed outside the agent"));
    // The retried one comes back as attempt 2 after its backoff.
    let back = api.wait_state(&again, TaskState::Running, 5).await;
    assert_eq!(back.attempt, 2);
    stop.cancel();
}

#[tokio::test]
async fn runtime_outage_keeps_tasks_queued_then_runs_them() {
    let rt = Arc::new(MemoryRuntime::new());
    rt.set_available(false);
    let (api, stop, _dir) = agent(rt.clone()).await;
    let t = api.submit(&task(1, &["exit", "0"])).await.id.to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = api.task(&t).await;
    assert_eq!((waiting.state, waiting.attempt), (TaskState::Queued, 0));
    assert_eq!(rt.started(), 0);
    rt.set_available(true);
    let done = api.wait_state(&t, TaskState::Succeeded, 5).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(rt.started(), 1, "ran exactly once");
    stop.cancel();
}
