//! The `meshd` process: crash (`kill -9`) and restart, clean stop and
//! restart, and a Docker engine that is not there. Nothing accepted is lost
//! and nothing runs twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_protocol::{NodeId, TaskState, labels};

/// A `meshd` child process; killed (SIGKILL) on drop.
struct Meshd {
    child: Child,
    api: Api,
}

impl Meshd {
    async fn start(
        node: &NodeId,
        dir: &Path,
        addr: SocketAddr,
        docker_host: Option<&str>,
    ) -> Meshd {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshd"));
        cmd.args([
            "--node-id",
            node.as_str(),
            "--topology",
            "numa:1 core:2 pu:1",
            "--insecure-dev",
            "--bind",
            "127.0.0.1:0",
        ])
        .arg("--api")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir)
        .env("MESH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("meshd.stderr")).unwrap());
        if let Some(host) = docker_host {
            cmd.env("DOCKER_HOST", host);
        }
        let child = cmd.spawn().unwrap();
        let m = Meshd {
            child,
            api: Api::new(addr),
        };
        // Up once it answers, whether it reaches Docker or not.
        wait_until("meshd API up", Duration::from_secs(20), || async {
            m.api.client().health().await.map(|_| ())
        })
        .await;
        m
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn sigterm(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap();
        assert!(code.success(), "meshd exited with {code} on SIGTERM");
    }
}

impl Drop for Meshd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One node's lasting state across its `meshd` processes: its id, data
/// directory and API address. Its containers are removed when it is
/// dropped (after its data directory, as fields drop in order).
struct Host {
    node: NodeId,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    _cleanup: NodeContainers,
}

impl Host {
    async fn new(name: &str) -> Host {
        require_docker().await;
        let node = unique_node(name);
        Host {
            _cleanup: NodeContainers(node.clone()),
            node,
            dir: tempfile::tempdir().unwrap(),
            addr: free_addr(),
        }
    }

    /// Starts `meshd` as this node, with the Docker engine.
    async fn meshd(&self) -> Meshd {
        Meshd::start(&self.node, self.dir.path(), self.addr, None).await
    }
}

/// Waits until the agent reaches Docker.
async fn wait_docker(m: &Meshd) {
    wait_until("docker reachable", Duration::from_secs(20), || async {
        let h = m.api.health().await;
        if h.ok { Ok(()) } else { Err(h) }
    })
    .await;
}

#[tokio::test]
async fn kill_9_then_restart_adopts_records_and_resumes() {
    let host = Host::new("crash").await;
    let mut m = host.meshd().await;
    wait_docker(&m).await;

    let a = m.api.submit(&sleep_task(1, "1")).await.id;
    let b = m.api.submit(&sleep_task(1, "8")).await.id;
    let c = m.api.submit(&sleep_task(1, "1")).await.id;
    let ra = m.api.wait_state(&a, TaskState::Running, 20).await;
    let rb = m.api.wait_state(&b, TaskState::Running, 20).await;
    assert_eq!(m.api.task(&c).await.state, TaskState::Queued);
    m.kill9();

    // While the agent is dead: A's container ends, B's keeps running, and
    // a stray container claiming to be ours appears.
    let d = docker();
    let a_container = ra.container.clone().unwrap();
    wait_until("A's container exits", Duration::from_secs(20), || {
        let d = &d;
        let id = a_container.clone();
        async move { d.inspect(&id).await.is_ok_and(|i| !i.running) }
    })
    .await;
    let stray = run_sleeper(
        format!("mesh-{}-stray", host.node),
        &[
            ("mesh.node", host.node.as_str()),
            ("mesh.kind", "task"),
            ("mesh.cluster", "ganger"),
            ("mesh.task", "tstray"),
            ("mesh.attempt", "1"),
        ],
    )
    .await;

    let m = host.meshd().await;
    let fa = m.api.wait_state(&a, TaskState::Succeeded, 20).await;
    assert_eq!(
        (fa.attempt, fa.exit_code),
        (1, Some(0)),
        "exit recorded while down"
    );
    assert!(
        m.api.logs(&a, false).await.contains("sleeping 1"),
        "its output was kept"
    );
    let rb2 = m.api.wait_state(&b, TaskState::Running, 20).await;
    assert_eq!(rb2.container, rb.container, "B adopted, not restarted");
    let fc = m.api.wait_state(&c, TaskState::Succeeded, 30).await;
    assert_eq!(fc.attempt, 1);
    let fb = m.api.wait_state(&b, TaskState::Succeeded, 30).await;
    assert_eq!(fb.attempt, 1, "B ran once");
    wait_until("stray container removed", Duration::from_secs(20), || {
        let d = &d;
        let id = stray.clone();
        async move { d.inspect(&id).await.is_err() }
    })
    .await;
    // Every container of the node is gone once all tasks ended.
    wait_until("no containers left", Duration::from_secs(20), || {
        let d = &d;
        let n = host.node.to_string();
        async move {
            d.list(&[(labels::NODE, n.as_str())])
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
}

#[tokio::test]
async fn clean_stop_leaves_tasks_running_for_the_next_start() {
    let host = Host::new("term").await;
    let mut m = host.meshd().await;
    wait_docker(&m).await;
    let t = m.api.submit(&sleep_task(1, "4")).await.id;
    let r = m.api.wait_state(&t, TaskState::Running, 20).await;
    m.sigterm();
    let info = docker()
        .inspect(r.container.as_ref().unwrap())
        .await
        .unwrap();
    assert!(info.running, "a clean stop leaves batch tasks running");
    let m = host.meshd().await;
    let done = m.api.wait_state(&t, TaskState::Succeeded, 30).await;
    assert_eq!(done.attempt, 1);
}

#[tokio::test]
async fn docker_unreachable_keeps_tasks_queued_until_it_is_back() {
    let host = Host::new("nodocker").await;
    let socket = host.dir.path().join("no-docker.sock");
    let docker_host = format!("unix://{}", socket.display());
    let mut m = Meshd::start(&host.node, host.dir.path(), host.addr, Some(&docker_host)).await;

    let health = m.api.health().await;
    assert!(!health.ok, "{health:?}");
    let body = serde_json::to_string(&health).unwrap();
    assert!(
        body.contains("no-docker.sock"),
        "health names the socket: {body}"
    );
    assert!(
        body.contains("Is dockerd running"),
        "and says what to do: {body}"
    );

    let t = m.api.submit(&task(1, &["exit", "0"])).await.id;
    hold_for(
        "the task waits while Docker is away",
        Duration::from_millis(500),
        || async {
            let now = m.api.task(&t).await;
            if now.state == TaskState::Queued {
                Ok(())
            } else {
                Err(now)
            }
        },
    )
    .await;
    m.kill9();

    let m = host.meshd().await;
    let done = m.api.wait_state(&t, TaskState::Succeeded, 30).await;
    assert_eq!(done.attempt, 1);
}
