//! What a testnet is made of, persisted as `state.json` in its state
//! directory so that separate `mesh-testnet` invocations (and a test's
//! teardown) see the same testnet, and where its files live.
//!
//! Only what Docker cannot tell us is stored: the address plan, the nodes and
//! how their agents were started. Whether a node runs or is partitioned is
//! read from Docker each time (see `status.rs`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mesh_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::engine::EngineRecord;
use crate::error::TestnetError;
use crate::name::TestnetName;
use crate::subnet::Subnet;

pub const STATE_FILE: &str = "state.json";

/// A testnet as created by `up` and extended by `add_foreign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub name: TestnetName,
    /// The meshd image the agents run.
    pub image: String,
    pub subnet: Subnet,
    /// The host's Docker socket, mounted into every agent.
    pub docker_socket: PathBuf,
    pub gossip_interval_ms: u64,
    /// Passed to every agent's meshd after the harness's own flags.
    pub extra_args: Vec<String>,
    /// Whether each agent mounts its own Docker socket proxy
    /// ([`Layout::docker_proxy`]) instead of the host's socket.
    #[serde(default)]
    pub docker_proxy: bool,
    /// Agents whose data directory is a tmpfs of this size (e.g. `64m`)
    /// instead of the state directory's: a small disk to fill. Its data
    /// does not outlive the agent's container.
    #[serde(default)]
    pub small_data: std::collections::BTreeMap<String, String>,
    /// Each node's own Docker engine, by node, when the testnet was started
    /// with `own_docker`: its agent drives that engine instead of the
    /// host's (see `engine.rs`).
    #[serde(default)]
    pub engines: std::collections::BTreeMap<String, EngineRecord>,
    /// In the order they were added; a node's index is its address slot.
    pub nodes: Vec<NodeRecord>,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: NodeId,
    pub container: String,
    pub ip: Ipv4Addr,
    /// Synthetic hwloc topology given to `--topology`.
    pub topology: String,
    /// Whether its certificate comes from a CA other than the cluster's.
    pub foreign: bool,
}

impl State {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeRecord, TestnetError> {
        self.nodes
            .iter()
            .find(|n| n.node.as_str() == name)
            .ok_or_else(|| TestnetError::UnknownNode {
                node: name.to_owned(),
                testnet: self.name.clone(),
                known: self.nodes.iter().map(|n| n.node.to_string()).collect(),
            })
    }

    /// `node`'s own engine, if it has one.
    pub fn engine(&self, node: &NodeId) -> Option<&EngineRecord> {
        self.engines.get(node.as_str())
    }

    /// The cluster's members: every node whose certificate the cluster CA
    /// signed.
    pub fn members(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.iter().filter(|n| !n.foreign)
    }

    /// Reads `state.json` from `dir`; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, TestnetError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TestnetError::Io {
                    what: "read the testnet state",
                    path,
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| TestnetError::StateJson { path, source })
    }

    /// Writes `state.json` into `dir`, atomically (write, then rename), so a
    /// crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let io = |source| TestnetError::Io {
            what: "write the testnet state",
            path: path.clone(),
            source,
        };
        // Serialising plain data with string keys cannot fail.
        let text =
            serde_json::to_string_pretty(self).map_err(|source| TestnetError::StateJson {
                path: path.clone(),
                source,
            })?;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

/// Where a testnet's files live under its state directory:
///
/// ```text
/// state.json
/// ca/ca.pem, ca/ca-key.pem           the cluster CA
/// api-token, api-tokens              the agents' admin API token, and the
///                                    tokens-file line that accepts it
/// nodes/<node>/tls/                  mounted read-only at /tls in the agent:
///     ca.pem, cert.pem, key.pem      the CA it trusts, its certificate and key
///     tokens                         its --api-tokens file
/// nodes/<node>/data/                 mounted at /data: meshd's --data-dir
/// nodes/<node>/foreign-ca/           a foreign node's own CA
/// nodes/<node>/engine/               its own engine's data root (own_docker)
/// nodes/<node>/dockerd.log           its own engine's output (own_docker)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// `root` should be absolute: its paths are handed to `docker run -v`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The admin bearer token of every agent's API (meshctl --token-file).
    pub fn api_token_file(&self) -> PathBuf {
        self.root.join("api-token")
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    pub fn node_dir(&self, node: &NodeId) -> PathBuf {
        self.root.join("nodes").join(node.as_str())
    }

    pub fn tls_dir(&self, node: &NodeId) -> PathBuf {
        self.node_dir(node).join("tls")
    }

    pub fn data_dir(&self, node: &NodeId) -> PathBuf {
        self.node_dir(node).join("data")
    }

    /// The socket of `node`'s Docker proxy, when the testnet has them.
    pub fn docker_proxy(&self, node: &NodeId) -> PathBuf {
        self.node_dir(node).join("docker.sock")
    }

    pub fn foreign_ca_dir(&self, node: &NodeId) -> PathBuf {
        self.node_dir(node).join("foreign-ca")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let node = |name: &str, slot: u8, foreign: bool| NodeRecord {
            node: NodeId::new(name).unwrap(),
            container: format!("t-{name}"),
            ip: Ipv4Addr::new(10, 200, 0, 2 + slot),
            topology: "numa:2 core:2 pu:1".into(),
            foreign,
        };
        State {
            name: TestnetName::new("t").unwrap(),
            image: "meshd:testnet".into(),
            subnet: "10.200.0.0/24".to_owned().try_into().unwrap(),
            docker_socket: "/var/run/docker.sock".into(),
            gossip_interval_ms: 500,
            extra_args: vec!["--phi-threshold".into(), "8".into()],
            docker_proxy: false,
            small_data: Default::default(),
            engines: Default::default(),
            nodes: vec![node("n1", 0, false), node("evil", 1, true)],
        }
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
        let s = state();
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn finds_nodes_and_members() {
        let s = state();
        assert_eq!(s.node("evil").unwrap().ip, Ipv4Addr::new(10, 200, 0, 3));
        let err = s.node("n9").unwrap_err().to_string();
        assert!(err.contains("n9") && err.contains("n1, evil"), "{err}");
        let members: Vec<_> = s.members().map(|n| n.node.as_str()).collect();
        assert_eq!(members, ["n1"]);
    }
}
