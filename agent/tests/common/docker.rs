//! The real Docker engine in tests: a client, a loud failure when it is
//! missing, and removal of every container a test's node created.

use mesh_agent::runtime::docker::DockerRuntime;
use mesh_agent::runtime::{ContainerRuntime, ContainerSpec};
use mesh_protocol::NodeId;
use mesh_protocol::labels;

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

/// Starts a `sleep 60` container of the test image named `name` with
/// `labels`, as if an agent had made it (a stray or stale one for an agent
/// to find); returns its id. Label it with a test's node so it is removed.
pub async fn run_sleeper(name: String, labels: &[(&str, &str)]) -> String {
    docker()
        .run(&sleeper_spec(name, labels))
        .await
        .expect("start a sleeping container")
}

/// A `sleep 60` container of the test image named `name` with `labels`.
pub fn sleeper_spec(name: String, labels: &[(&str, &str)]) -> ContainerSpec {
    ContainerSpec {
        name,
        image: super::IMAGE.into(),
        command: vec!["sleep".into(), "60".into()],
        env: vec![],
        labels: mesh_agent::runtime::memory::labels(labels),
        cpuset_cpus: Default::default(),
        cpuset_mems: Default::default(),
        memory: None,
        network: None,
    }
}

/// Removes every container labelled with `node`, synchronously (for Drop).
pub fn remove_node_containers(node: &NodeId) {
    let node = node.clone();
    // A fresh runtime on its own thread: Drop may run inside another runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("a runtime for the cleanup");
        rt.block_on(async {
            // Node ids are unique per test: every container with it goes,
            // whatever cluster the agent was in.
            let d = docker();
            if let Ok(found) = d.list(&[(labels::NODE, node.as_str())]).await {
                for c in found {
                    let _ = d.remove(&c.id).await;
                }
            }
        });
    })
    .join()
    .expect("the cleanup thread");
}

/// Removes the node's containers when the test ends, pass or fail.
#[derive(Debug)]
pub struct NodeContainers(pub NodeId);

impl Drop for NodeContainers {
    fn drop(&mut self) {
        remove_node_containers(&self.0);
    }
}
