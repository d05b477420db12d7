//! Tasks across in-process agents on the in-memory runtime: placement by
//! offer, the queue moving to a node that frees up, and the mesh-wide view.
//! (The same on real Docker hosts: `testnet/tests/tasks.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::TaskState;
use tokio_util::sync::CancellationToken;

struct Node {
    agent: RunningAgent,
    runtime: Arc<MemoryRuntime>,
    api: Api,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

async fn node(seeds: Vec<String>, topology: &str) -> Node {
    node_with(seeds, topology, |c| c).await
}

async fn node_with(seeds: Vec<String>, topology: &str, tweak: fn(Config) -> Config) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let config = tweak(
        Config::builder(unique_node("mt"), dir.path())
            .topology(topology)
            .seeds(seeds),
    );
    let runtime = Arc::new(MemoryRuntime::new());
    let stop = CancellationToken::new();
    let agent = mesh_agent::start_with_runtime(config, runtime.clone(), stop.clone())
        .await
        .unwrap();
    let api = Api::new(&format!("http://{}", agent.api_addr));
    Node {
        agent,
        runtime,
        api,
        _stop: stop.drop_guard(),
        _dir: dir,
    }
}

/// Two agents of `topology` that see each other with published values.
async fn pair(topology: &str) -> (Node, Node) {
    let a = node(vec![], topology).await;
    let b = node(
        vec![a.agent.mesh.local_addr().unwrap().to_string()],
        topology,
    )
    .await;
    wait_mesh_formed(&[&a.agent.mesh, &b.agent.mesh], Duration::from_secs(10)).await;
    (a, b)
}

async fn mesh_of_two() -> (Node, Node) {
    pair("numa:1 core:1 pu:1").await
}

#[tokio::test]
async fn tasks_spread_then_the_queue_moves_to_the_node_that_frees_up() {
    let (a, b) = mesh_of_two().await;
    // Two 1-core nodes: the first two tasks land one on each, the third
    // waits at A (nobody has room).
    let t1 = a.api.submit(&sleep_task(1, "60")).await;
    let t2 = a.api.submit(&sleep_task(1, "60")).await;
    let r1 = a
        .api
        .wait_state(t1.id.as_str(), TaskState::Running, 10)
        .await;
    let r2 = a
        .api
        .wait_state(t2.id.as_str(), TaskState::Running, 10)
        .await;
    assert_ne!(r1.node, r2.node, "one on each node");
    let t3 = a.api.submit(&sleep_task(1, "60")).await;
    assert_eq!(
        t3.node.as_ref(),
        Some(&a.agent.mesh.node()),
        "queued where it was accepted"
    );
    assert_eq!(a.api.task(t3.id.as_str()).await.state, TaskState::Queued);

    // Free B's core: A's queue moves there.
    let on_b = if r1.node == b.agent.mesh.node() {
        &r1
    } else {
        &r2
    };
    b.runtime.finish(on_b.container.as_ref().unwrap(), 0);
    let moved = b
        .api
        .wait_state(t3.id.as_str(), TaskState::Running, 10)
        .await;
    assert_eq!(moved.node, b.agent.mesh.node());
    assert_eq!(moved.attempt, 1);
    // Exactly one record of it in the mesh, and A forgot its copy.
    let all = a.api.tasks().await;
    assert_eq!(all.iter().filter(|t| t.id == t3.id).count(), 1);
    let local = a.api.local_tasks().await;
    assert!(local.iter().all(|t| t.id != t3.id));
    assert_eq!(
        a.runtime.started() + b.runtime.started(),
        3,
        "every task started once"
    );
}

#[tokio::test]
async fn a_task_no_node_can_ever_fit_is_refused_with_the_reason() {
    let (a, _b) = mesh_of_two().await;
    let (status, body) = a.api.submit_raw(r#"{"image":"x","cores":2}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("largest node in the mesh has only 1"),
        "{body}"
    );
}

#[tokio::test]
async fn a_drained_node_takes_nothing_until_undrained() {
    let (a, b) = mesh_of_two().await;
    let post = |path: String| {
        let http = a.api.http.clone();
        let url = format!("{}{path}", a.api.url);
        async move { http.post(url).send().await.unwrap() }
    };
    // Drained from the other node, over the mesh.
    let r = post(format!("/v1/nodes/{}/drain", b.agent.mesh.node())).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = post("/v1/nodes/nosuchnode/drain".into()).await;
    assert_eq!(r.status(), 404);
    wait_until("A sees B draining", Duration::from_secs(5), || async {
        a.agent
            .mesh
            .peers()
            .await
            .iter()
            .any(|p| p.node == b.agent.mesh.node() && p.info.as_ref().is_some_and(|i| i.draining))
    })
    .await;

    let t1 = a.api.submit(&sleep_task(1, "60")).await;
    let t2 = a.api.submit(&sleep_task(1, "60")).await;
    let r1 = a
        .api
        .wait_state(t1.id.as_str(), TaskState::Running, 10)
        .await;
    assert_eq!(r1.node, a.agent.mesh.node());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a.api.task(t2.id.as_str()).await.state,
        TaskState::Queued,
        "B is draining"
    );
    assert_eq!(b.runtime.started(), 0);

    let r = post(format!("/v1/nodes/{}/undrain", b.agent.mesh.node())).await;
    assert_eq!(r.status(), 200);
    let moved = a
        .api
        .wait_state(t2.id.as_str(), TaskState::Running, 10)
        .await;
    assert_eq!(moved.node, b.agent.mesh.node());
}

#[tokio::test]
async fn an_array_fills_the_mesh_and_dies_with_its_parent() {
    let a = node(vec![], "numa:1 core:2 pu:1").await;
    let b = node(
        vec![a.agent.mesh.local_addr().unwrap().to_string()],
        "numa:1 core:2 pu:1",
    )
    .await;
    wait_until("both see both", Duration::from_secs(10), || async {
        a.agent.mesh.live_peers().await.len() == 1 && b.agent.mesh.live_peers().await.len() == 1
    })
    .await;
    let mut req = sleep_task(1, "60");
    req.array = Some(4);
    let arr = a.api.submit(&req).await;
    assert_eq!(arr.members.len(), 4);
    let mut indices = Vec::new();
    let mut nodes = std::collections::BTreeMap::new();
    for (i, m) in arr.members.iter().enumerate() {
        assert_eq!(m.id.as_str(), format!("{}-{i}", arr.id));
        let t = a
            .api
            .wait_state(m.id.as_str(), TaskState::Running, 10)
            .await;
        assert_eq!(t.spec.parent.as_ref(), Some(&arr.id));
        let env: std::collections::BTreeMap<_, _> = t.spec.env.iter().cloned().collect();
        assert_eq!(env["MESH_TASK_COUNT"], "4");
        indices.push(env["MESH_TASK_INDEX"].clone());
        *nodes.entry(t.node.to_string()).or_insert(0) += 1;
    }
    assert_eq!(indices, ["0", "1", "2", "3"]);
    assert_eq!(
        nodes.values().copied().collect::<Vec<_>>(),
        [2, 2],
        "the array fills both nodes: {nodes:?}"
    );

    let (status, body) = b.api.kill(arr.id.as_str()).await;
    assert_eq!(status, 200, "{body}");
    for m in &arr.members {
        b.api.wait_state(m.id.as_str(), TaskState::Killed, 10).await;
    }
    let (status, body) = a.api.submit_raw(r#"{"image":"x","array":0}"#).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_task_after_others_starts_when_they_succeed_and_fails_when_one_does_not() {
    let (a, b) = pair("numa:1 core:2 pu:1").await;
    let first = a.api.submit(&sleep_task(1, "60")).await;
    let running = a
        .api
        .wait_state(first.id.as_str(), TaskState::Running, 10)
        .await;
    let mut waits = task(1, &["exit", "0"]);
    waits.after = vec![first.id.clone()];
    let waiting = a.api.submit(&waits).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a.api.task(waiting.id.as_str()).await.state,
        TaskState::Queued,
        "waits for {}",
        first.id
    );

    // The task it waits for succeeds (on whichever node runs it): it runs.
    let runtime = if running.node == a.agent.mesh.node() {
        &a.runtime
    } else {
        &b.runtime
    };
    runtime.finish(running.container.as_ref().unwrap(), 0);
    a.api
        .wait_state(waiting.id.as_str(), TaskState::Succeeded, 10)
        .await;

    // One that waits for a failure fails, saying why.
    let failing = a.api.submit(&task(1, &["exit", "3"])).await;
    a.api
        .wait_state(failing.id.as_str(), TaskState::Failed, 10)
        .await;
    let mut doomed = task(1, &["exit", "0"]);
    doomed.after = vec![failing.id.clone()];
    let doomed = a.api.submit(&doomed).await;
    let failed = a
        .api
        .wait_state(doomed.id.as_str(), TaskState::Failed, 10)
        .await;
    assert!(failed.message.unwrap().contains(failing.id.as_str()));

    let (status, body) = a
        .api
        .submit_raw(r#"{"image":"x","after":["tnosuchtask"]}"#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no such task"), "{body}");
}

#[tokio::test]
async fn drain_with_migrate_moves_running_tasks_now() {
    let (a, b) = pair("numa:1 core:1 pu:1").await;
    let t = a.api.submit(&sleep_task(1, "60")).await;
    let first = a
        .api
        .wait_state(t.id.as_str(), TaskState::Running, 10)
        .await;
    let (from, to) = if first.node == a.agent.mesh.node() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let url = format!(
        "{}/v1/nodes/{}/drain?migrate=true",
        to.api.url,
        from.agent.mesh.node()
    );
    let r = to.api.http.post(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut moved = None;
    for _ in 0..100 {
        let now = to.api.task(t.id.as_str()).await;
        if now.state == TaskState::Running && now.node == to.agent.mesh.node() {
            moved = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = moved.expect("the task never moved off the drained node");
    assert_eq!(moved.attempt, 2);
    assert!(
        !from.runtime.containers().iter().any(|c| c.running),
        "nothing runs on the drained node"
    );
}

#[tokio::test]
async fn a_peers_failure_keeps_its_kind_through_another_node() {
    let (a, b) = mesh_of_two().await;
    // Asked of B through A: B's "not found" arrives as "not found".
    let on_b = a.agent.tasks.node(&b.agent.mesh.node()).await.unwrap();
    let unknown = mesh_protocol::TaskId::new("t-nowhere").unwrap();
    let err = on_b.get(&unknown).await.unwrap_err();
    assert!(
        matches!(&err, mesh_agent::tasks::TaskError::There { error, .. }
            if error.kind == mesh_protocol::rpc::ErrorKind::NotFound),
        "{err:?}"
    );
    assert_eq!(mesh_agent::api::ApiError::from(err).status().as_u16(), 404);

    // A task that ended on one node, killed through the other: that node's
    // "conflict" (already ended) is answered as 409, not as a failure of
    // the node asked.
    let t = a.api.submit(&task(1, &["exit", "0"])).await;
    let done = a
        .api
        .wait_state(t.id.as_str(), TaskState::Succeeded, 10)
        .await;
    let other = if done.node == a.agent.mesh.node() {
        &b
    } else {
        &a
    };
    let (status, body) = other.api.kill(t.id.as_str()).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = other.api.kill("t-nowhere").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn agents_of_different_rpc_versions_refuse_each_other() {
    let a = node(vec![], "numa:1 core:1 pu:1").await;
    let seed = a.agent.mesh.local_addr().unwrap().to_string();
    // B stands for a build of an older RPC version.
    let b = node_with(vec![seed], "numa:1 core:1 pu:1", |mut c| {
        c.mesh.rpc_version = mesh_protocol::rpc::VERSION - 1;
        c
    })
    .await;
    let (ma, mb) = (a.agent.mesh.clone(), b.agent.mesh.clone());
    wait_until(
        "the version mismatch refused",
        Duration::from_secs(10),
        || {
            let (ma, mb) = (ma.clone(), mb.clone());
            async move { ma.version_refusals() > 0 && mb.version_refusals() > 0 }
        },
    )
    .await;
    // No handshake ever succeeds, so no gossip passes: each sees itself only.
    assert_eq!(ma.peers().await.len(), 1);
    assert_eq!(mb.peers().await.len(), 1);
}
