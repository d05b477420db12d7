//! What `ls` reports about each node, derived from the testnet's state and
//! one `docker ps` listing (parsing and rendering are pure).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use mesh_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::agent::{API_PORT, LABEL_NODE};
use crate::state::State;

/// A node's agent as Docker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Running and on the testnet network.
    Running,
    /// Its container exists but is not running (after `kill`).
    Stopped,
    /// Running but cut off the testnet network (after `partition`).
    Partitioned,
    /// Its container is gone (removed behind the testnet's back).
    Missing,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Partitioned => "partitioned",
            Self::Missing => "missing",
        })
    }
}

/// One line of `ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: NodeId,
    pub container: String,
    pub address: Ipv4Addr,
    pub state: NodeState,
    /// The agent's HTTP API, reachable from the host (Linux routes to Docker
    /// bridge networks), e.g. for `meshctl --node`.
    pub api_url: String,
    /// Whether its certificate comes from another CA than the cluster's.
    pub foreign: bool,
    /// The file holding its API's admin token, for `meshctl --token-file`.
    pub token_file: std::path::PathBuf,
}

/// The `docker ps --format` template [`parse_ps`] reads: node label, state,
/// networks, tab-separated.
pub fn ps_format() -> String {
    format!("{{{{.Label \"{LABEL_NODE}\"}}}}\t{{{{.State}}}}\t{{{{.Networks}}}}")
}

/// What one agent container looks like in `docker ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsLine {
    pub running: bool,
    pub networks: Vec<String>,
}

/// Reads `docker ps -a --format` [`ps_format`] output, by node.
pub fn parse_ps(output: &str) -> BTreeMap<String, PsLine> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let node = fields.next()?.trim();
            let state = fields.next()?.trim();
            let networks = fields.next().unwrap_or("").trim();
            (!node.is_empty()).then(|| {
                (
                    node.to_owned(),
                    PsLine {
                        running: state == "running",
                        networks: networks
                            .split(',')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    },
                )
            })
        })
        .collect()
}

/// The URL of the API of an agent at `ip`.
pub fn api_url(ip: Ipv4Addr) -> String {
    format!("http://{ip}:{API_PORT}")
}

/// Every node of `state` with its state as `ps` shows it.
pub fn statuses(
    state: &State,
    ps: &BTreeMap<String, PsLine>,
    token_file: &std::path::Path,
) -> Vec<NodeStatus> {
    state
        .nodes
        .iter()
        .map(|n| {
            let node_state = match ps.get(n.node.as_str()) {
                None => NodeState::Missing,
                Some(line) if !line.running => NodeState::Stopped,
                Some(line) if !line.networks.iter().any(|x| x == state.name.as_str()) => {
                    NodeState::Partitioned
                }
                Some(_) => NodeState::Running,
            };
            NodeStatus {
                name: n.node.clone(),
                container: n.container.clone(),
                address: n.ip,
                state: node_state,
                api_url: api_url(n.ip),
                foreign: n.foreign,
                token_file: token_file.to_owned(),
            }
        })
        .collect()
}

/// `ls` as a table.
pub fn table(nodes: &[NodeStatus]) -> String {
    let mut rows = vec![[
        "NODE".to_owned(),
        "STATE".to_owned(),
        "ADDRESS".to_owned(),
        "API".to_owned(),
        "CONTAINER".to_owned(),
    ]];
    for n in nodes {
        let name = if n.foreign {
            format!("{} (foreign CA)", n.name)
        } else {
            n.name.to_string()
        };
        rows.push([
            name,
            n.state.to_string(),
            n.address.to_string(),
            n.api_url.clone(),
            n.container.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::TestnetName;
    use crate::state::NodeRecord;

    #[test]
    fn format_names_the_node_label() {
        assert_eq!(
            ps_format(),
            "{{.Label \"mesh.testnet.node\"}}\t{{.State}}\t{{.Networks}}"
        );
    }

    #[test]
    fn states_come_from_docker() {
        let record = |name: &str, last: u8| NodeRecord {
            node: NodeId::new(name).unwrap(),
            container: format!("tn-{name}"),
            ip: Ipv4Addr::new(10, 200, 0, last),
            topology: "numa:1 core:1 pu:1".into(),
            foreign: name == "evil",
        };
        let state = State {
            name: TestnetName::new("tn").unwrap(),
            image: "meshd:testnet".into(),
            subnet: "10.200.0.0/24".to_owned().try_into().unwrap(),
            docker_socket: "/var/run/docker.sock".into(),
            gossip_interval_ms: 500,
            extra_args: Vec::new(),
            docker_proxy: false,
            small_data: Default::default(),
            engines: Default::default(),
            nodes: vec![
                record("n1", 2),
                record("n2", 3),
                record("n3", 4),
                record("n4", 5),
                record("evil", 6),
            ],
        };
        let ps = parse_ps(
            "n1\trunning\ttn\nn2\texited\ttn\nn3\trunning\t\nevil\trunning\tbridge,tn\n\n",
        );
        let got: Vec<(String, NodeState)> =
            statuses(&state, &ps, std::path::Path::new("/st/api-token"))
                .into_iter()
                .map(|s| (s.name.to_string(), s.state))
                .collect();
        assert_eq!(
            got,
            [
                ("n1".to_owned(), NodeState::Running),
                ("n2".to_owned(), NodeState::Stopped),
                ("n3".to_owned(), NodeState::Partitioned),
                ("n4".to_owned(), NodeState::Missing),
                ("evil".to_owned(), NodeState::Running),
            ]
        );
        let statuses = statuses(&state, &ps, std::path::Path::new("/st/api-token"));
        assert_eq!(statuses[0].api_url, "http://10.200.0.2:7700");
        let table = table(&statuses);
        assert!(table.starts_with("NODE"), "{table}");
        assert!(table.contains("evil (foreign CA)  running"), "{table}");
        let json = serde_json::to_string(&statuses[2]).unwrap();
        assert!(json.contains(r#""state":"partitioned""#), "{json}");
    }
}
