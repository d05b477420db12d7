//! Shared helpers for the agent's integration tests against real Docker:
//! unique node ids, temporary data dirs, an HTTP client, polling helpers,
//! and cleanup of every container a test's node created.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_agent::runtime::ContainerRuntime;
use mesh_agent::runtime::docker::DockerRuntime;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::api::{NodeView, SubmitRequest, SubmitResponse};
use mesh_protocol::{NodeId, TaskRecord, TaskState};
use tokio_util::sync::CancellationToken;

pub mod services;

pub const IMAGE: &str = "mesh-testsvc:latest";

/// A node id no other test (or test run) uses.
pub fn unique_node(tag: &str) -> NodeId {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    NodeId::new(format!("it-{tag}-{}-{n}", std::process::id())).unwrap()
}

pub fn docker() -> DockerRuntime {
    DockerRuntime::from_env().expect("Docker client")
}

/// Fails loudly when Docker is not there: these tests must not skip.
pub async fn require_docker() {
    docker()
        .ping()
        .await
        .expect("these tests need a running Docker engine (scripts/test starts one)");
}

/// An in-process agent on real Docker that cleans up after itself.
pub struct TestAgent {
    pub node: NodeId,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    agent: Option<RunningAgent>,
}

impl TestAgent {
    pub async fn start(tag: &str, topology: &str, max_queue: usize) -> TestAgent {
        require_docker().await;
        let node = unique_node(tag);
        let dir = tempfile::tempdir().unwrap();
        let config = Config::builder(node.clone(), dir.path())
            .topology(topology)
            .max_queue(max_queue)
            .ping_interval(Duration::from_millis(300));
        let shutdown = CancellationToken::new();
        let agent = mesh_agent::start(config, shutdown.clone()).await.unwrap();
        let url = format!("http://{}", agent.api_addr);
        let t = TestAgent {
            node,
            url,
            http: reqwest::Client::new(),
            dir,
            shutdown,
            agent: Some(agent),
        };
        t.wait_healthy().await;
        t
    }

    pub async fn wait_healthy(&self) {
        wait_until("agent healthy", Duration::from_secs(20), || async {
            self.http
                .get(format!("{}/v1/health", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(a) = self.agent.take() {
            a.wait().await.unwrap();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        remove_node_containers(&self.node);
    }
}

/// Removes every container labelled with `node`, synchronously (for Drop).
pub fn remove_node_containers(node: &NodeId) {
    let node = node.clone();
    // A fresh runtime on its own thread: Drop may run inside another runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Node ids are unique per test: every container with it goes,
            // whatever cluster the agent was in.
            let d = docker();
            if let Ok(found) = d.list(&[("mesh.node", node.as_str())]).await {
                for c in found {
                    let _ = d.remove(&c.id).await;
                }
            }
        });
    })
    .join()
    .unwrap();
}

/// HTTP helpers against any agent URL.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str) -> Api {
        Api {
            url: url.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn submit(&self, req: &SubmitRequest) -> SubmitResponse {
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.url))
            .json(req)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "submit refused: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    pub async fn submit_raw(&self, body: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn task(&self, id: &str) -> TaskRecord {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    pub async fn tasks(&self) -> Vec<TaskRecord> {
        self.get("/v1/tasks").await
    }

    pub async fn local_tasks(&self) -> Vec<TaskRecord> {
        self.get("/v1/tasks?scope=local").await
    }

    pub async fn node(&self) -> NodeView {
        self.get("/v1/node").await
    }

    pub async fn kill(&self, id: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/v1/tasks/{id}/kill", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn logs(&self, id: &str, follow: bool) -> String {
        self.http
            .get(format!("{}/v1/tasks/{id}/logs?follow={follow}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls until the task is in `state` (or fails the test after `secs`).
    pub async fn wait_state(&self, id: &str, state: TaskState, secs: u64) -> TaskRecord {
        let mut last = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            let t = self.task(id).await;
            if t.state == state {
                return t;
            }
            last = Some(t);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {id} never reached {state}; last: {last:#?}");
    }
}

impl TestAgent {
    pub fn api(&self) -> Api {
        Api {
            url: self.url.clone(),
            http: self.http.clone(),
        }
    }
}

pub fn sleep_task(cores: u32, secs: &str) -> SubmitRequest {
    task(cores, &["sleep", secs])
}

pub fn task(cores: u32, cmd: &[&str]) -> SubmitRequest {
    SubmitRequest {
        image: IMAGE.into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        cores: Some(cores),
        ..Default::default()
    }
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits until every one of `meshes` lists all of them alive with their
/// published values.
pub async fn wait_mesh_formed(meshes: &[&mesh_agent::mesh::Mesh], limit: Duration) {
    let n = meshes.len();
    wait_until(&format!("{n} agents see each other"), limit, || async {
        for m in meshes {
            let alive = m
                .peers()
                .await
                .iter()
                .filter(|p| p.state == mesh_protocol::gossip::PeerState::Alive && p.info.is_some())
                .count();
            if alive < n {
                return false;
            }
        }
        true
    })
    .await;
}

/// A free TCP port on 127.0.0.1 (for agents run as separate processes).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
