//! Errors of the testnet library: one for driving the testnet
//! ([`TestnetError`]) and one for scenario steps ([`StepError`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::docker::DockerError;
use crate::name::TestnetName;

/// Why a testnet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(
        "Docker does not answer ({0}); start it (for example `systemctl start docker`, or `scripts/test`, which starts it) and try again"
    )]
    DockerUnavailable(#[source] DockerError),
    #[error("the agent image {image} does not exist; build it with `scripts/images`")]
    NoImage { image: String },
    #[error(
        "testnet {name} already exists (state in {dir}, or its Docker network); remove it with `scripts/testnet down --name {name}` first"
    )]
    AlreadyUp { name: TestnetName, dir: PathBuf },
    #[error(
        "there is no testnet {name} ({dir}/state.json is missing); start one with `scripts/testnet up -n 3 --name {name}`"
    )]
    NotUp { name: TestnetName, dir: PathBuf },
    #[error("testnet {testnet} has no node {node:?}; its nodes are {}", known.join(", "))]
    UnknownNode {
        node: String,
        testnet: TestnetName,
        known: Vec<String>,
    },
    #[error("testnet {testnet} already has a node {node}; pick another name")]
    NodeExists { node: String, testnet: TestnetName },
    #[error(
        "{node} has no Docker socket proxy: only a testnet started with docker_proxy, by this process, has them"
    )]
    NoDockerProxy { node: String },
    #[error("invalid node name: {0}")]
    NodeId(#[from] mesh_protocol::ids::IdError),
    #[error("a testnet holds 1 to {max} agents; asked for {asked}")]
    NodeCount { asked: usize, max: usize },
    #[error(
        "no free subnet for the testnet network among 10.200.0.0/24 to 10.255.255.0/24 (last: {last}); remove unused Docker networks (`docker network prune`)"
    )]
    NoSubnet { last: String },
    #[error(
        "the Docker network {name} exists but is not testnet {name}'s (it lacks the label mesh.testnet={name}); remove it or pick another --name"
    )]
    ForeignNetwork { name: TestnetName },
    #[error(
        "DOCKER_HOST is {0:?}: testnet agents need the engine's Unix socket to mount; use a unix:// DOCKER_HOST"
    )]
    DockerSocket(String),
    #[error("could not split the testnet: {0}")]
    Split(String),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid testnet state ({source}); remove the testnet with `scripts/testnet down`", path.display())]
    StateJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot make certificates: {0}")]
    Pki(#[from] mesh_protocol::pki::PkiError),
    #[error("cannot make the testnet's API token: {0}")]
    Token(#[from] mesh_protocol::token::TokenError),
    #[error(
        "agent {node} did not become ready: {source}\nlast lines of `docker logs {container}`:\n{logs}"
    )]
    NotReady {
        node: String,
        container: String,
        #[source]
        source: Box<StepError>,
        logs: String,
    },
    /// A call to a node's API failed. If the answer could not be read and
    /// the meshd:testnet image is older than this code, rebuild it with
    /// `scripts/images`.
    #[error("agent {node}: {source}")]
    Api {
        node: String,
        #[source]
        source: meshctl::client::ClientError,
    },
    #[error(
        "the Docker network {name} still has running containers the teardown did not start: {}; remove them (`docker rm -f {}`) and run `scripts/testnet down --name {name}` again", containers.join(", "), containers.join(" ")
    )]
    NetworkInUse {
        name: TestnetName,
        containers: Vec<String>,
    },
    #[error(
        "Docker still keeps the network {name} of an earlier testnet of this name although nothing is attached to it (moby/moby#42119); restart dockerd (which frees it) or pick another --name"
    )]
    NetworkLeftBehind { name: TestnetName },
    #[error("{0:?} is not a Docker network id")]
    NetworkId(String),
    #[error("a node's own Docker engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("a background task of the harness failed: {0}")]
    Task(String),
    #[error("teardown of testnet {name} did not finish: {message}")]
    Teardown { name: TestnetName, message: String },
}

impl TestnetError {
    /// Wraps a failed call to `node`'s API.
    pub(crate) fn api(node: &str) -> impl FnOnce(meshctl::client::ClientError) -> Self + '_ {
        move |source| TestnetError::Api {
            node: node.to_owned(),
            source,
        }
    }
}

/// Why a scenario step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("timed out after {timeout:?} waiting until {what}; last seen: {last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },
    #[error("expected {what} for {duration:?}, but after {after:?}: {why}")]
    Violated {
        what: String,
        duration: Duration,
        after: Duration,
        why: String,
    },
    #[error(
        "{what} did not finish within {limit:?} and was stopped (its testnet is torn down); the Docker daemon: {docker}"
    )]
    Overran {
        what: String,
        limit: Duration,
        docker: String,
    },
}
