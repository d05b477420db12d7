//! In-process agents on real Docker for the services tests, each agent
//! listening for clients on a loopback address of its own.

use mesh_agent::runtime::{ContainerInfo, ContainerRuntime};
use mesh_protocol::{NodeId, labels};

use super::cluster::{Setup, TestAgent};
use super::docker::docker;

/// Agents on Docker, each listening for clients on a loopback address of
/// its own, so agents in one test (and tests running at once) can listen on
/// the same service port.
pub fn setup(tag: &str) -> Setup {
    Setup::docker(tag)
        .topology("numa:1 core:4 pu:1")
        .own_loopback()
}

/// One agent.
pub async fn node() -> TestAgent {
    setup("svc").start(&[]).await
}

/// Two agents that see each other with published values.
pub async fn pair() -> (TestAgent, TestAgent) {
    let [a, b]: [TestAgent; 2] = setup("svc").cluster(2).await.try_into().ok().unwrap();
    (a, b)
}

/// The containers of `service` that `node` created.
pub async fn containers(node: &NodeId, service: &str) -> Vec<ContainerInfo> {
    docker()
        .list(&[(labels::NODE, node.as_str()), (labels::SERVICE, service)])
        .await
        .unwrap()
}
