//! Tasks across in-process agents on the in-memory runtime: placement by
//! offer, the queue moving to a node that frees up, and the mesh-wide view.
//! (The same on real Docker hosts: `testnet/tests/tasks.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::{TaskId, TaskState};

/// Two agents of `topology` that see each other with published values.
async fn pair(topology: &str) -> (TestAgent, TestAgent) {
    let [a, b]: [TestAgent; 2] = Setup::memory("mt")
        .topology(topology)
        .cluster(2)
        .await
        .try_into()
        .ok()
        .unwrap();
    (a, b)
}

async fn mesh_of_two() -> (TestAgent, TestAgent) {
    pair("numa:1 core:1 pu:1").await
}

/// Checks for a while that `id` waits in `at`'s queue (the agents offer
/// and re-offer every few hundred ms).
async fn stays_queued(at: &TestAgent, id: &TaskId, why: &str) {
    hold_for(why, Duration::from_millis(600), || async {
        let t = at.api.task(id).await;
        if t.state == TaskState::Queued {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
}

#[tokio::test]
async fn tasks_spread_then_the_queue_moves_to_the_node_that_frees_up() {
    let (a, b) = mesh_of_two().await;
    // Two 1-core nodes: the first two tasks land one on each, the third
    // waits at A (nobody has room).
    let t1 = a.api.submit(&sleep_task(1, "60")).await;
    let t2 = a.api.submit(&sleep_task(1, "60")).await;
    let r1 = a.api.wait_state(&t1.id, TaskState::Running, 10).await;
    let r2 = a.api.wait_state(&t2.id, TaskState::Running, 10).await;
    assert_ne!(r1.node, r2.node, "one on each node");
    let t3 = a.api.submit(&sleep_task(1, "60")).await;
    assert_eq!(
        t3.node.as_ref(),
        Some(&a.id),
        "queued where it was accepted"
    );
    assert_eq!(a.api.task(&t3.id).await.state, TaskState::Queued);

    // Free B's core: A's queue moves there.
    let on_b = if r1.node == b.id { &r1 } else { &r2 };
    b.memory().finish(on_b.container.as_ref().unwrap(), 0);
    let moved = b.api.wait_state(&t3.id, TaskState::Running, 10).await;
    assert_eq!(moved.node, b.id);
    assert_eq!(moved.attempt, 1);
    // Exactly one record of it in the mesh, and A forgot its copy.
    let all = a.api.tasks().await;
    assert_eq!(all.iter().filter(|t| t.id == t3.id).count(), 1);
    let local = a.api.local_tasks().await;
    assert!(local.iter().all(|t| t.id != t3.id));
    assert_eq!(
        a.memory().started() + b.memory().started(),
        3,
        "every task started once"
    );
}

#[tokio::test]
async fn a_task_no_node_can_ever_fit_is_refused_with_the_reason() {
    let (a, _b) = mesh_of_two().await;
    let req = SubmitRequest {
        image: "x".into(),
        cores: Some(2),
        ..Default::default()
    };
    let r = a.api.submit_refused(&req).await;
    assert_eq!(r.status, 422, "{r:?}");
    assert!(
        r.message.contains("largest node in the mesh has only 1"),
        "{r:?}"
    );
}

/// A task larger than the node that accepts it, while the one node that
/// fits it is busy, waits there instead of being refused (it fits the mesh
/// once that node frees up), keeps the small node from no task that fits
/// it, and moves to the larger node when it frees up.
#[tokio::test]
async fn a_task_larger_than_its_accepting_node_waits_there_for_a_busy_larger_node() {
    let setup = Setup::memory("lg").topology("numa:1 core:4 pu:1");
    let big = setup.start(&[]).await;
    let small = setup
        .topology("numa:1 core:1 pu:1")
        .start(&[big.gossip()])
        .await;
    wait_formed(&[&big, &small]).await;
    let first = small.api.submit(&sleep_task(4, "60")).await;
    let first = big.api.wait_state(&first.id, TaskState::Running, 10).await;
    assert_eq!(first.node, big.id);

    // The big node is busy: the second waits at the small one (it used to
    // be refused, 503, as the small node could never run it).
    let second = small.api.submit(&sleep_task(4, "60")).await;
    assert_eq!(second.node.as_ref(), Some(&small.id), "{second:?}");
    stays_queued(&small, &second.id, "the only node that fits it is busy").await;
    // Waiting there, it keeps the small node from no task that fits it: the
    // big node offers it a one-core task, and it takes it.
    let third = big.api.submit(&sleep_task(1, "60")).await;
    let third = big.api.wait_state(&third.id, TaskState::Running, 10).await;
    assert_eq!(third.node, small.id);

    // The big node frees up: the second moves there and starts.
    big.memory().finish(first.container.as_ref().unwrap(), 0);
    let moved = big.api.wait_state(&second.id, TaskState::Running, 10).await;
    assert_eq!(moved.node, big.id);
    assert_eq!(moved.attempt, 1);
}

#[tokio::test]
async fn a_drained_node_takes_nothing_until_undrained() {
    let (a, b) = mesh_of_two().await;
    // Drained from the other node, over the mesh.
    a.api.set_draining(b.id.as_str(), true, false).await;
    let unknown = refusal(a.api.client().set_draining("nosuchnode", true, false).await);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    wait_until("A sees B draining", Duration::from_secs(5), || async {
        let peers = a.api.peers().await;
        let draining = peers
            .iter()
            .any(|p| p.node == b.id && p.info.as_ref().is_some_and(|i| i.draining));
        if draining { Ok(()) } else { Err(peers) }
    })
    .await;

    let t1 = a.api.submit(&sleep_task(1, "60")).await;
    let t2 = a.api.submit(&sleep_task(1, "60")).await;
    let r1 = a.api.wait_state(&t1.id, TaskState::Running, 10).await;
    assert_eq!(r1.node, a.id);
    stays_queued(&a, &t2.id, "B is draining: the task waits at A").await;
    assert_eq!(b.memory().started(), 0);

    a.api.set_draining(b.id.as_str(), false, false).await;
    let moved = a.api.wait_state(&t2.id, TaskState::Running, 10).await;
    assert_eq!(moved.node, b.id);
}

#[tokio::test]
async fn an_array_fills_the_mesh_and_dies_with_its_parent() {
    let (a, b) = pair("numa:1 core:2 pu:1").await;
    let mut req = sleep_task(1, "60");
    req.array = Some(4);
    let arr = a.api.submit(&req).await;
    assert_eq!(arr.members.len(), 4);
    let mut indices = Vec::new();
    let mut nodes = std::collections::BTreeMap::new();
    for (i, m) in arr.members.iter().enumerate() {
        assert_eq!(m.id.as_str(), format!("{}-{i}", arr.id));
        let t = a.api.wait_state(&m.id, TaskState::Running, 10).await;
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

    b.api.kill(&arr.id).await;
    for m in &arr.members {
        b.api.wait_state(&m.id, TaskState::Killed, 10).await;
    }
    let empty = SubmitRequest {
        image: "x".into(),
        array: Some(0),
        ..Default::default()
    };
    let r = a.api.submit_refused(&empty).await;
    assert_eq!(r.status, 400, "{r:?}");
}

#[tokio::test]
async fn a_task_after_others_starts_when_they_succeed_and_fails_when_one_does_not() {
    let (a, b) = pair("numa:1 core:2 pu:1").await;
    let first = a.api.submit(&sleep_task(1, "60")).await;
    let running = a.api.wait_state(&first.id, TaskState::Running, 10).await;
    let mut waits = task(1, &["exit", "0"]);
    waits.after = vec![first.id.clone()];
    let waiting = a.api.submit(&waits).await;
    stays_queued(&a, &waiting.id, &format!("it waits for {}", first.id)).await;

    // The task it waits for succeeds (on whichever node runs it): it runs.
    let runner = if running.node == a.id { &a } else { &b };
    runner
        .memory()
        .finish(running.container.as_ref().unwrap(), 0);
    a.api
        .wait_state(&waiting.id, TaskState::Succeeded, 10)
        .await;

    // One that waits for a failure fails, saying why.
    let failing = a.api.submit(&task(1, &["exit", "3"])).await;
    a.api.wait_state(&failing.id, TaskState::Failed, 10).await;
    let mut doomed = task(1, &["exit", "0"]);
    doomed.after = vec![failing.id.clone()];
    let doomed = a.api.submit(&doomed).await;
    let failed = a.api.wait_state(&doomed.id, TaskState::Failed, 10).await;
    assert!(failed.message.unwrap().contains(failing.id.as_str()));

    let orphan = SubmitRequest {
        image: "x".into(),
        after: vec![TaskId::new("tnosuchtask").unwrap()],
        ..Default::default()
    };
    let r = a.api.submit_refused(&orphan).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message.contains("no such task"), "{r:?}");
}

#[tokio::test]
async fn drain_with_migrate_moves_running_tasks_now() {
    let (a, b) = pair("numa:1 core:1 pu:1").await;
    let t = a.api.submit(&sleep_task(1, "60")).await;
    let first = a.api.wait_state(&t.id, TaskState::Running, 10).await;
    let (from, to) = if first.node == a.id {
        (&a, &b)
    } else {
        (&b, &a)
    };
    to.api.set_draining(from.id.as_str(), true, true).await;
    let moved = wait_until(
        "the task moves off the drained node",
        Duration::from_secs(10),
        || async {
            let now = to.api.task(&t.id).await;
            if now.state == TaskState::Running && now.node == to.id {
                Ok(now)
            } else {
                Err(now)
            }
        },
    )
    .await;
    assert_eq!(moved.attempt, 2);
    assert!(
        !from.memory().containers().iter().any(|c| c.running),
        "nothing runs on the drained node"
    );
}

#[tokio::test]
async fn a_peers_failure_keeps_its_kind_through_another_node() {
    let (a, b) = mesh_of_two().await;
    // Asked of B through A: B's "not found" arrives as "not found".
    let tasks = &a.running().tasks;
    let on_b = tasks.node(&b.id).await.unwrap();
    let unknown = TaskId::new("t-nowhere").unwrap();
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
    let done = a.api.wait_state(&t.id, TaskState::Succeeded, 10).await;
    let other = if done.node == a.id { &b } else { &a };
    let refused = refusal(other.api.client().kill(&t.id).await);
    assert_eq!(refused.status, 409, "{refused:?}");
    let refused = refusal(other.api.client().kill(&unknown).await);
    assert_eq!(refused.status, 404, "{refused:?}");
}

#[tokio::test]
async fn agents_of_different_rpc_versions_refuse_each_other() {
    let setup = Setup::memory("rv").topology("numa:1 core:1 pu:1");
    let a = setup.start(&[]).await;
    // B stands for a build of the previous RPC version.
    let b = setup
        .clone()
        .rpc_version(mesh_protocol::rpc::VERSION - 1)
        .start(&[a.gossip()])
        .await;
    let refused = wait_until(
        "the version mismatch refused",
        Duration::from_secs(10),
        || async {
            let counts = (a.mesh().version_refusals(), b.mesh().version_refusals());
            if counts.0 > 0 && counts.1 > 0 {
                Ok(counts)
            } else {
                Err(counts)
            }
        },
    )
    .await;
    assert!(refused.0 > 0);
    // No handshake ever succeeds, so no gossip passes: each sees itself only.
    assert_eq!(a.alive().await, vec![a.id.to_string()]);
    assert_eq!(b.alive().await, vec![b.id.to_string()]);
}
