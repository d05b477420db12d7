//! How an agent's container is started and attached: the `docker` arguments,
//! decided from the testnet's state alone (no Docker here), so they can be
//! checked in unit tests.

use mesh_protocol::NodeId;

use crate::certs::{CA_FILE, CERT_FILE, KEY_FILE, TOKENS_FILE};
use crate::state::{Layout, NodeRecord, State};

/// Label on everything a testnet creates (agents and network): its name.
pub const LABEL_TESTNET: &str = "mesh.testnet";
/// Label on an agent container: its node id.
pub const LABEL_NODE: &str = "mesh.testnet.node";
/// The network alias every agent carries: Docker's DNS answers it with every
/// agent, round-robin, which is how clients inside the network find the mesh.
pub const MESH_ALIAS: &str = "mesh";
pub const API_PORT: u16 = 7700;
pub const GOSSIP_PORT: u16 = 7946;
/// How many nodes each agent is given as seeds.
const SEEDS: usize = 3;

/// Where the agent container sees its files.
const TLS_MOUNT: &str = "/tls";
pub const DATA_MOUNT: &str = "/data";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The seeds of `node`: the first [`SEEDS`] cluster members other than
/// itself. A foreign node gets the same seeds, so it does try to join.
pub fn seeds(state: &State, node: &NodeId) -> Vec<NodeId> {
    state
        .members()
        .map(|n| &n.node)
        .filter(|&n| n != node)
        .take(SEEDS)
        .cloned()
        .collect()
}

/// `docker run` arguments that create and start `node`'s agent container,
/// detached.
pub fn run_args(state: &State, layout: &Layout, node: &NodeRecord) -> Vec<String> {
    let name = state.name.as_str();
    let id = node.node.as_str();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        node.container.clone(),
        "--hostname".into(),
        id.into(),
        "--network".into(),
        name.into(),
        "--ip".into(),
        node.ip.to_string(),
        "--network-alias".into(),
        MESH_ALIAS.into(),
        // So that other agents reach it by node id, as in `--seed n1:7946`.
        "--network-alias".into(),
        id.into(),
        "--label".into(),
        format!("{LABEL_TESTNET}={name}"),
        "--label".into(),
        format!("{LABEL_NODE}={id}"),
    ];
    // The proxy, if any, forwards to the node's engine.
    let socket = if state.docker_proxy {
        layout.docker_proxy(&node.node)
    } else if let Some(engine) = state.engine(&node.node) {
        engine.socket()
    } else {
        state.docker_socket.clone()
    };
    args.extend([
        "--volume".into(),
        format!("{}:{DOCKER_SOCKET}", socket.display()),
        "--volume".into(),
        format!("{}:{TLS_MOUNT}:ro", layout.tls_dir(&node.node).display()),
    ]);
    match state.small_data.get(id) {
        Some(size) => args.extend(["--tmpfs".into(), format!("{DATA_MOUNT}:size={size}")]),
        None => args.extend([
            "--volume".into(),
            format!("{}:{DATA_MOUNT}", layout.data_dir(&node.node).display()),
        ]),
    }
    args.push(state.image.clone());
    args.extend(meshd_args(state, node));
    args
}

/// The agent's command line.
fn meshd_args(state: &State, node: &NodeRecord) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--node-id".into(),
        node.node.to_string(),
        "--api".into(),
        format!("0.0.0.0:{API_PORT}"),
        "--bind".into(),
        format!("0.0.0.0:{GOSSIP_PORT}"),
        // Its fixed address; stated rather than guessed by meshd.
        "--advertise".into(),
        format!("{}:{GOSSIP_PORT}", node.ip),
    ];
    for seed in seeds(state, &node.node) {
        args.push("--seed".into());
        args.push(format!("{seed}:{GOSSIP_PORT}"));
    }
    args.extend([
        "--cluster-id".into(),
        state.name.to_string(),
        "--tls-ca".into(),
        format!("{TLS_MOUNT}/{CA_FILE}"),
        "--tls-cert".into(),
        format!("{TLS_MOUNT}/{CERT_FILE}"),
        "--tls-key".into(),
        format!("{TLS_MOUNT}/{KEY_FILE}"),
        // The API listens on the container's every address: it asks for
        // the testnet's token.
        "--api-tokens".into(),
        format!("{TLS_MOUNT}/{TOKENS_FILE}"),
        "--data-dir".into(),
        DATA_MOUNT.into(),
        "--topology".into(),
        node.topology.clone(),
    ]);
    // Its containers join the testnet network, which only the host's engine
    // has; on an engine of its own they take that engine's default bridge.
    if state.engine(&node.node).is_none() {
        args.extend(["--network".into(), state.name.to_string()]);
    }
    args.extend([
        "--gossip-interval-ms".into(),
        state.gossip_interval_ms.to_string(),
    ]);
    args.extend(state.extra_args.iter().cloned());
    args
}

/// `docker network connect` arguments that put `node` back on the testnet
/// network with its address and aliases.
pub fn connect_args(state: &State, node: &NodeRecord) -> Vec<String> {
    vec![
        "network".into(),
        "connect".into(),
        "--ip".into(),
        node.ip.to_string(),
        "--alias".into(),
        MESH_ALIAS.into(),
        "--alias".into(),
        node.node.to_string(),
        state.name.to_string(),
        node.container.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::TestnetName;
    use std::net::Ipv4Addr;
    use std::path::Path;

    fn state(members: usize) -> State {
        let mut nodes: Vec<NodeRecord> = (1..=members)
            .map(|i| record(&format!("n{i}"), i, false))
            .collect();
        nodes.push(record("evil", members + 1, true));
        State {
            name: TestnetName::new("tn").unwrap(),
            image: "meshd:testnet".into(),
            subnet: "10.200.0.0/24".to_owned().try_into().unwrap(),
            docker_socket: "/var/run/docker.sock".into(),
            gossip_interval_ms: 500,
            extra_args: vec!["--phi-threshold".into(), "8".into()],
            docker_proxy: false,
            small_data: Default::default(),
            engines: Default::default(),
            nodes,
        }
    }

    fn record(name: &str, slot: usize, foreign: bool) -> NodeRecord {
        NodeRecord {
            node: NodeId::new(name).unwrap(),
            container: format!("tn-{name}"),
            ip: Ipv4Addr::new(10, 200, 0, 1 + slot as u8),
            topology: "numa:2 core:2 pu:1".into(),
            foreign,
        }
    }

    fn names(ids: Vec<NodeId>) -> Vec<String> {
        ids.into_iter().map(String::from).collect()
    }

    #[test]
    fn seeds_are_the_first_three_members_but_never_itself() {
        let s = state(5);
        assert_eq!(names(seeds(&s, &s.nodes[0].node)), ["n2", "n3", "n4"]);
        assert_eq!(names(seeds(&s, &s.nodes[1].node)), ["n1", "n3", "n4"]);
        assert_eq!(names(seeds(&s, &s.nodes[4].node)), ["n1", "n2", "n3"]);
        assert_eq!(
            names(seeds(&s, &NodeId::new("evil").unwrap())),
            ["n1", "n2", "n3"]
        );
        let one = state(1);
        assert!(seeds(&one, &one.nodes[0].node).is_empty());
    }

    #[test]
    fn run_args_place_the_agent_on_the_network_with_its_files() {
        let s = state(3);
        let layout = Layout::new("/st".into());
        let args = run_args(&s, &layout, &s.nodes[1]).join(" ");
        for part in [
            "--name tn-n2 --hostname n2 --network tn --ip 10.200.0.3",
            "--network-alias mesh --network-alias n2",
            "--label mesh.testnet=tn --label mesh.testnet.node=n2",
            "--volume /var/run/docker.sock:/var/run/docker.sock",
            "--volume /st/nodes/n2/tls:/tls:ro --volume /st/nodes/n2/data:/data",
            "meshd:testnet --node-id n2 --api 0.0.0.0:7700 --bind 0.0.0.0:7946",
            "--advertise 10.200.0.3:7946 --seed n1:7946 --seed n3:7946 --cluster-id tn",
            "--tls-ca /tls/ca.pem --tls-cert /tls/cert.pem --tls-key /tls/key.pem",
            "--api-tokens /tls/tokens",
            "--data-dir /data --topology numa:2 core:2 pu:1 --network tn",
            "--gossip-interval-ms 500 --phi-threshold 8",
        ] {
            assert!(args.contains(part), "missing {part:?} in {args}");
        }
        assert!(args.ends_with("--phi-threshold 8"), "{args}");
    }

    #[test]
    fn an_agent_with_an_engine_of_its_own_mounts_its_socket_and_uses_its_bridge() {
        let mut s = state(3);
        let layout = Layout::new("/st".into());
        let engine = crate::engine::EngineRecord::new(
            &s.name,
            "n2",
            1,
            Path::new("/st"),
            &layout.node_dir(&s.nodes[1].node),
            "10.252.7.0/24".to_owned().try_into().unwrap(),
        );
        let socket = engine.socket();
        s.engines.insert("n2".into(), engine);
        let args = run_args(&s, &layout, &s.nodes[1]).join(" ");
        assert!(
            args.contains(&format!(
                "--volume {}:/var/run/docker.sock",
                socket.display()
            )),
            "{args}"
        );
        assert!(
            args.contains("--topology numa:2 core:2 pu:1 --gossip"),
            "{args}"
        );
        // The agent itself stays on the testnet network.
        assert!(args.contains("--network tn --ip"), "{args}");
        // Others keep the host's engine.
        let args = run_args(&s, &layout, &s.nodes[0]).join(" ");
        assert!(
            args.contains("--topology numa:2 core:2 pu:1 --network tn --gossip"),
            "{args}"
        );
    }

    #[test]
    fn a_proxied_agent_mounts_its_proxy_and_a_small_disk_is_a_tmpfs() {
        let mut s = state(3);
        s.docker_proxy = true;
        s.small_data.insert("n2".into(), "64m".into());
        let layout = Layout::new("/st".into());
        let args = run_args(&s, &layout, &s.nodes[1]).join(" ");
        assert!(
            args.contains("--volume /st/nodes/n2/docker.sock:/var/run/docker.sock"),
            "{args}"
        );
        assert!(
            args.contains("--tmpfs /data:size=64m meshd:testnet"),
            "{args}"
        );
        assert!(!args.contains(":/data"), "{args}");
        let args = run_args(&s, &layout, &s.nodes[0]).join(" ");
        assert!(
            args.contains("--volume /st/nodes/n1/data:/data meshd:testnet"),
            "{args}"
        );
    }

    #[test]
    fn connect_restores_address_and_aliases() {
        let s = state(2);
        assert_eq!(
            connect_args(&s, &s.nodes[1]).join(" "),
            "network connect --ip 10.200.0.3 --alias mesh --alias n2 tn tn-n2"
        );
    }
}
