//! The supervisor's logic on the in-memory runtime: fast checks of paths
//! that are slow or awkward to provoke on real Docker (a container removed
//! behind the agent's back, Docker going away and coming back).
//! The same paths on real Docker are in `restart.rs` and `docker_tasks.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_protocol::TaskState;

fn setup() -> Setup {
    Setup::memory("mem")
        .topology("numa:1 core:2 pu:1")
        .ping_interval(Duration::from_millis(50))
}

#[tokio::test]
async fn vanished_container_is_lost_or_retried() {
    let agent = setup().start(&[]).await;
    let api = &agent.api;
    let once = api.submit(&sleep_task(1, "9")).await.id;
    let mut again = sleep_task(1, "9");
    again.retries = Some(1);
    let again = api.submit(&again).await.id;
    let a = api.wait_state(&once, TaskState::Running, 5).await;
    let b = api.wait_state(&again, TaskState::Running, 5).await;
    agent.memory().vanish(a.container.as_ref().unwrap());
    agent.memory().vanish(b.container.as_ref().unwrap());
    let lost = api.wait_state(&once, TaskState::Lost, 5).await;
    assert!(lost.message.unwrap().contains("removed outside the agent"));
    // The retried one comes back as attempt 2 after its backoff (until
    // the agent notices the vanishing, it still reads running attempt 1).
    wait_until(
        "the retried task runs again as attempt 2",
        Duration::from_secs(5),
        || async {
            let t = api.task(&again).await;
            if (t.state, t.attempt) == (TaskState::Running, 2) {
                Ok(())
            } else {
                Err((t.state, t.attempt))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn runtime_outage_keeps_tasks_queued_then_runs_them() {
    let rt = Arc::new(MemoryRuntime::new());
    rt.set_available(false);
    let agent = setup().start_on(rt.clone(), &[]).await;
    let api = &agent.api;
    let t = api.submit(&task(1, &["exit", "0"])).await.id;
    // Many supervisor pings (every 50 ms) find the runtime away.
    hold_for(
        "the task waits, not started, while the runtime is away",
        Duration::from_millis(300),
        || async {
            let waiting = api.task(&t).await;
            if (waiting.state, waiting.attempt, rt.started()) == (TaskState::Queued, 0, 0) {
                Ok(())
            } else {
                Err((waiting, rt.started()))
            }
        },
    )
    .await;
    rt.set_available(true);
    let done = api.wait_state(&t, TaskState::Succeeded, 5).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(rt.started(), 1, "ran exactly once");
}

/// No core is in two running containers' cpusets at once.
fn cores_held_twice(rt: &MemoryRuntime) -> Vec<String> {
    let running: Vec<_> = rt.containers().into_iter().filter(|c| c.running).collect();
    let mut seen = std::collections::BTreeMap::new();
    let mut twice = Vec::new();
    for c in &running {
        let set: mesh_protocol::CpuSet = c.cpuset_cpus.as_deref().unwrap().parse().unwrap();
        for core in set.iter() {
            if let Some(other) = seen.insert(core, c.name.clone()) {
                twice.push(format!("core {core}: {other} and {}", c.name));
            }
        }
    }
    twice
}

/// A task superseded while its container is being started keeps its cores
/// until that container is gone: the container, once started, is removed,
/// and only then does the next task get the cores.
#[tokio::test]
async fn attempt_superseded_while_starting_keeps_its_cores_until_its_container_is_gone() {
    let rt = Arc::new(MemoryRuntime::new());
    let agent = setup().start_on(rt.clone(), &[]).await;
    let api = &agent.api;
    rt.hold_starts(true);
    let old = api.submit(&sleep_task(2, "99")).await.id;
    api.wait_state(&old, TaskState::Starting, 5).await;
    agent
        .running()
        .supervisor
        .supersede(old.clone(), "re-placed elsewhere (test)".into())
        .await
        .unwrap();
    let next = api.submit(&sleep_task(2, "99")).await.id;
    rt.hold_starts(false);
    api.wait_state(&next, TaskState::Running, 5).await;
    assert_eq!(cores_held_twice(&rt), Vec::<String>::new());
    let names: Vec<String> = rt.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names.len(),
        1,
        "the superseded attempt's container is removed: {names:?}"
    );
    assert_eq!(api.task(&old).await.state, TaskState::Lost);
    assert_audit_clean(&agent, 3);
}

/// The agent's core audit log has at least `least` records and no core
/// held twice.
fn assert_audit_clean(agent: &TestAgent, least: usize) {
    let log = std::fs::read_to_string(agent.data_dir().join(AUDIT_LOG)).unwrap();
    let report = mesh_protocol::audit::check(&log);
    assert!(report.records >= least, "{report:?}\n{log}");
    assert_eq!(report.held_twice, Vec::new(), "{log}");
    assert_eq!(report.unreadable, Vec::new(), "{log}");
}

/// A running task superseded keeps its cores until its container is
/// removed; the next task starts only then.
#[tokio::test]
async fn running_attempt_superseded_keeps_its_cores_until_its_container_is_gone() {
    let rt = Arc::new(MemoryRuntime::new());
    let agent = setup().start_on(rt.clone(), &[]).await;
    let api = &agent.api;
    let old = api.submit(&sleep_task(2, "99")).await.id;
    api.wait_state(&old, TaskState::Running, 5).await;
    rt.hold_starts(true);
    agent
        .running()
        .supervisor
        .supersede(old.clone(), "re-placed elsewhere (test)".into())
        .await
        .unwrap();
    let next = api.submit(&sleep_task(2, "99")).await.id;
    rt.hold_starts(false);
    api.wait_state(&next, TaskState::Running, 5).await;
    assert_eq!(cores_held_twice(&rt), Vec::<String>::new());
    assert_eq!(rt.containers().len(), 1);
}
