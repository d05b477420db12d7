//! Failover between in-process agents on the in-memory runtime: a runner
//! dies, its keeper re-places the task once as a new attempt; the runner
//! comes back and stops its stale attempt instead of resuming it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::{NodeId, TaskState};
use tokio_util::sync::CancellationToken;

struct Node {
    id: NodeId,
    dir: tempfile::TempDir,
    runtime: Arc<MemoryRuntime>,
    agent: Option<RunningAgent>,
    stop: CancellationToken,
}

impl Node {
    async fn start(
        id: NodeId,
        dir: tempfile::TempDir,
        runtime: Arc<MemoryRuntime>,
        seeds: Vec<String>,
        phi: f64,
    ) -> Node {
        let mut config = Config::builder(id.clone(), dir.path())
            .topology("numa:1 core:1 pu:1")
            .seeds(seeds);
        config.mesh.phi_threshold = phi;
        let stop = CancellationToken::new();
        let agent = mesh_agent::start_with_runtime(config, runtime.clone(), stop.clone())
            .await
            .unwrap();
        Node {
            id,
            dir,
            runtime,
            agent: Some(agent),
            stop,
        }
    }

    fn agent(&self) -> &RunningAgent {
        self.agent.as_ref().unwrap()
    }

    fn api(&self) -> Api {
        Api::new(&format!("http://{}", self.agent().api_addr))
    }

    fn gossip(&self) -> String {
        self.agent().mesh.local_addr().unwrap().to_string()
    }

    async fn crash(&mut self) {
        self.stop.cancel();
        if let Some(a) = self.agent.take() {
            a.wait().await.unwrap();
        }
    }
}

/// The failure detector's threshold (the agents' default): a silent node is
/// dead after about 2.8 s at the tests' 200 ms gossip interval.
const PHI: f64 = 6.0;
/// For the quick-restart test: about 5.5 s, so that a restart slowed by a
/// loaded machine is still quicker than detection (the property tested).
const SLOW_PHI: f64 = 12.0;

/// Three agents of one core each that see each other.
async fn three_nodes(tag: &str, phi: f64) -> Vec<Node> {
    let a = Node::start(
        unique_node(&format!("{tag}a")),
        tempfile::tempdir().unwrap(),
        Arc::default(),
        vec![],
        phi,
    )
    .await;
    let seed = vec![a.gossip()];
    let b = Node::start(
        unique_node(&format!("{tag}b")),
        tempfile::tempdir().unwrap(),
        Arc::default(),
        seed.clone(),
        phi,
    )
    .await;
    let c = Node::start(
        unique_node(&format!("{tag}c")),
        tempfile::tempdir().unwrap(),
        Arc::default(),
        seed,
        phi,
    )
    .await;
    let nodes = vec![a, b, c];
    let meshes: Vec<_> = nodes.iter().map(|n| &n.agent().mesh).collect();
    wait_mesh_formed(&meshes, Duration::from_secs(10)).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runners_task_runs_again_once_and_the_runner_stops_its_stale_attempt() {
    // The agents' logs, shown if the test fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("mesh_agent=debug")
        .try_init();
    let mut nodes = three_nodes("f", PHI).await;

    let task = nodes[0].api().submit(&sleep_task(1, "600")).await;
    let first = nodes[0]
        .api()
        .wait_state(task.id.as_str(), TaskState::Running, 10)
        .await;
    assert_eq!(first.attempt, 1);
    assert!(first.keeper.is_some(), "a second agent keeps a copy");
    // Let the runner's push reach the keeper and the view settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let runner = nodes.iter().position(|n| n.id == first.node).unwrap();
    nodes[runner].crash().await;
    let survivor = nodes.iter().position(|n| n.agent.is_some()).unwrap();
    let api = nodes[survivor].api();
    let mut again = None;
    // Generous: detection takes a few gossip rounds, but a loaded CI host
    // can stretch them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while tokio::time::Instant::now() < deadline {
        let list = api.tasks().await;
        if let Some(t) = list
            .iter()
            .find(|t| t.id == task.id && t.attempt == 2 && t.state == TaskState::Running)
        {
            again = Some(t.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(again) = again else {
        let mut seen = Vec::new();
        for n in nodes.iter().filter(|n| n.agent.is_some()) {
            seen.push((
                n.id.clone(),
                n.agent().mesh.peers().await,
                n.api().local_tasks().await,
            ));
        }
        panic!(
            "the task never ran again after {} died; survivors saw: {seen:#?}",
            first.node
        );
    };
    assert_ne!(again.node, first.node);
    let restarts: u64 = nodes
        .iter()
        .filter(|n| n.agent.is_some())
        .map(|n| n.runtime.started())
        .sum();
    assert_eq!(restarts, 1, "re-placed exactly once");

    // The dead runner comes back with its container still running.
    let old = nodes.remove(runner);
    let Node {
        id, dir, runtime, ..
    } = old;
    assert!(
        runtime.containers().iter().any(|c| c.running),
        "its old container survived the crash"
    );
    let back = Node::start(id, dir, runtime.clone(), vec![nodes[0].gossip()], PHI).await;
    wait_until(
        "the stale attempt is stopped",
        Duration::from_secs(20),
        || async { !runtime.containers().iter().any(|c| c.running) },
    )
    .await;
    let local = back.api().local_tasks().await;
    let stale = local.iter().find(|t| t.id == task.id).unwrap();
    assert_eq!(stale.state, TaskState::Lost);
    assert!(
        stale.message.as_deref().unwrap_or("").contains("re-placed"),
        "{stale:?}"
    );
    // The mesh reports the current attempt, from any node (the returning
    // node's own view of its peers may take a few rounds to fill in).
    wait_until(
        "the returning node lists the current attempt",
        Duration::from_secs(10),
        || async {
            back.api().tasks().await.iter().any(|t| {
                t.id == task.id
                    && (t.attempt, t.state) == (2, TaskState::Running)
                    && t.node == again.node
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_the_death_of_the_node_that_accepted_it() {
    let mut nodes = three_nodes("a", PHI).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Accepted, then the accepting node dies at once.
    let task = nodes[0].api().submit(&sleep_task(1, "600")).await;
    nodes[0].crash().await;
    let api = nodes[1].api();
    let mut seen = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while tokio::time::Instant::now() < deadline {
        if let Some(t) = api
            .tasks()
            .await
            .into_iter()
            .find(|t| t.id == task.id && t.state == TaskState::Running)
        {
            if t.node != nodes[0].id {
                seen = Some(t);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = seen.expect("the task does not run after its accepting node died");
    // It keeps a keeper among the living.
    wait_until("a live keeper", Duration::from_secs(20), || async {
        let t = api.task(task.id.as_str()).await;
        t.keeper.is_some_and(|k| k != nodes[0].id)
    })
    .await;
    // Started once among the survivors: where it was placed, or (if the
    // accepting node ran it itself) where its keeper re-placed it.
    let runs: u64 = nodes[1..].iter().map(|n| n.runtime.started()).sum();
    assert_eq!(runs, 1, "started once among the survivors: {running:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_restart_of_the_runner_is_not_a_death() {
    let mut nodes = three_nodes("q", SLOW_PHI).await;
    let task = nodes[0].api().submit(&sleep_task(1, "600")).await;
    let first = nodes[0]
        .api()
        .wait_state(task.id.as_str(), TaskState::Running, 10)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The runner stops and starts again at once (an upgrade, say).
    let runner = nodes.iter().position(|n| n.id == first.node).unwrap();
    nodes[runner].crash().await;
    let old = nodes.remove(runner);
    let seed = vec![nodes[0].gossip()];
    let Node {
        id, dir, runtime, ..
    } = old;
    let back = Node::start(id, dir, runtime, seed, SLOW_PHI).await;
    // Well past failure detection (about 5.5 s at SLOW_PHI): still the first
    // attempt, on the runner.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = back.api().task(task.id.as_str()).await;
    assert_eq!(
        (now.attempt, now.state, &now.node),
        (1, TaskState::Running, &first.node),
        "{now:?}"
    );
    let elsewhere: u64 = nodes.iter().map(|n| n.runtime.started()).sum();
    assert_eq!(elsewhere, 0, "not started on any other node");
}
