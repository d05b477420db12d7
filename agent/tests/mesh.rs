//! Membership over QUIC with mutual TLS, agents in-process on 127.0.0.1
//! (the in-memory runtime: no containers are involved here; the same
//! scenarios on real Docker hosts are in `testnet/tests`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_agent::config::TlsSource;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::NodeId;
use mesh_protocol::gossip::{PeerState, PeerView};
use mesh_protocol::pki::{self, Ca};
use tokio_util::sync::CancellationToken;

struct Node {
    id: NodeId,
    agent: RunningAgent,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Node {
    fn gossip(&self) -> String {
        self.agent.mesh.local_addr().unwrap().to_string()
    }

    async fn peers(&self) -> Vec<PeerView> {
        self.agent.mesh.peers().await
    }

    async fn alive(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .peers()
            .await
            .into_iter()
            .filter(|p| p.state == PeerState::Alive)
            .map(|p| p.node.to_string())
            .collect();
        v.sort();
        v
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - time::Duration::hours(1)
}

fn write_identity(dir: &Path, ca: &Ca, node: &NodeId) -> TlsSource {
    let cert = pki::create_node_cert(ca, node, now(), 2).unwrap();
    let p = |name: &str| -> PathBuf { dir.join(name) };
    std::fs::write(p("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(p("node.pem"), &cert.cert_pem).unwrap();
    std::fs::write(p("node-key.pem"), &cert.key_pem).unwrap();
    TlsSource::Files {
        ca: p("ca.pem"),
        cert: p("node.pem"),
        key: p("node-key.pem"),
    }
}

async fn start(tag: &str, ca: Option<&Ca>, seeds: Vec<String>, cluster: &str) -> Node {
    let id = unique_node(tag);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::builder(id.clone(), dir.path())
        .topology("numa:2 core:2 pu:1")
        .seeds(seeds);
    config.mesh.cluster_id = cluster.into();
    if let Some(ca) = ca {
        config = config.tls(write_identity(dir.path(), ca, &id));
    }
    let stop = CancellationToken::new();
    let agent =
        mesh_agent::start_with_runtime(config, Arc::new(MemoryRuntime::new()), stop.clone())
            .await
            .unwrap();
    Node {
        id,
        agent,
        stop,
        _dir: dir,
    }
}

async fn cluster(n: usize, ca: Option<&Ca>) -> Vec<Node> {
    let first = start("m", ca, vec![], "c1").await;
    let seed = vec![first.gossip()];
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(start("m", ca, seed.clone(), "c1").await);
    }
    nodes
}

async fn wait_all_alive(nodes: &[Node], expect: &[String], limit: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    wait_until("every node sees the expected live peers", limit, || async {
        for n in nodes {
            if n.alive().await != expect {
                return false;
            }
        }
        true
    })
    .await;
    started.elapsed()
}

fn ids(nodes: &[&Node]) -> Vec<String> {
    let mut v: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn agents_with_cluster_certificates_form_one_view() {
    let ca = pki::create_ca("c1", now(), 2).unwrap();
    let nodes = cluster(3, Some(&ca)).await;
    let all = ids(&nodes.iter().collect::<Vec<_>>());
    let took = wait_all_alive(&nodes, &all, Duration::from_secs(10)).await;
    println!("3 agents converged in {took:?}");
    for n in &nodes {
        for p in n.peers().await {
            assert!(p.verified, "{} not verified by {}", p.node, n.id);
            let info = p.info.expect("published values");
            assert_eq!(info.topology.cores_per_numa, vec![2, 2]);
            assert_eq!(info.load.free_per_numa, vec![2, 2]);
            assert!(p.last_heard_ms.is_some());
        }
    }
}

#[tokio::test]
async fn foreign_certificates_and_other_clusters_never_join() {
    let ca = pki::create_ca("c1", now(), 2).unwrap();
    let nodes = cluster(2, Some(&ca)).await;
    let members = ids(&nodes.iter().collect::<Vec<_>>());
    wait_all_alive(&nodes, &members, Duration::from_secs(10)).await;

    let foreign_ca = pki::create_ca("c1", now(), 2).unwrap();
    let foreign = start("foreign", Some(&foreign_ca), vec![nodes[0].gossip()], "c1").await;
    let other_cluster = start("othercluster", Some(&ca), vec![nodes[0].gossip()], "c2").await;
    // Give them many gossip rounds to try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &nodes {
        assert_eq!(n.alive().await, members, "{} let an outsider in", n.id);
        let all: Vec<String> = n.peers().await.iter().map(|p| p.node.to_string()).collect();
        assert!(!all.contains(&foreign.id.to_string()));
        assert!(!all.contains(&other_cluster.id.to_string()));
    }
    assert_eq!(
        foreign.alive().await,
        vec![foreign.id.to_string()],
        "it sees no one either"
    );
    let (refused_handshakes, _) = nodes[0].agent.mesh.refusals();
    assert!(
        refused_handshakes > 0,
        "the foreign handshakes were refused and counted"
    );
}

#[tokio::test]
async fn a_stopped_agent_is_marked_dead() {
    let nodes = cluster(3, None).await;
    let all = ids(&nodes.iter().collect::<Vec<_>>());
    wait_all_alive(&nodes, &all, Duration::from_secs(10)).await;
    let [a, b, c]: [Node; 3] = nodes.try_into().ok().unwrap();
    c.stop.cancel();
    let survivors = [a, b];
    let took = tokio::time::Instant::now();
    wait_until(
        "the stopped agent is dead everywhere",
        Duration::from_secs(10),
        || async {
            for n in &survivors {
                let dead = n
                    .peers()
                    .await
                    .iter()
                    .any(|p| p.node == c.id && p.state == PeerState::Dead);
                if !dead {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!(
        "marked dead after {:?} (gossip interval 200 ms)",
        took.elapsed()
    );
    assert!(survivors[0].alive().await.len() == 2);
}

#[tokio::test]
async fn garbage_and_oversized_messages_are_refused_and_the_agent_keeps_serving() {
    let nodes = cluster(2, None).await;
    let all = ids(&nodes.iter().collect::<Vec<_>>());
    wait_all_alive(&nodes, &all, Duration::from_secs(10)).await;
    let target: SocketAddr = nodes[0].gossip().parse().unwrap();

    // Raw garbage datagrams on the QUIC port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500u32 {
        let junk: Vec<u8> = (0..1200u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        udp.send_to(&junk, target).unwrap();
    }

    // A peer that completes the handshake, then sends nonsense.
    let tester = NodeId::new("tester").unwrap();
    let alpn = mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION);
    let tls = mesh_agent::mesh::tls::build(&TlsSource::InsecureDev, &tester, &alpn).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls.client);
    let conn = endpoint.connect(target, "x").unwrap().await.unwrap();
    let bad: [&[u8]; 3] = [b"", &[9, 9, 9], &[1, 0xff, 0xff, 0xff, 0xff]];
    for payload in bad {
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(payload).await.unwrap();
        s.finish().unwrap();
    }
    let mut big = conn.open_uni().await.unwrap();
    let _ = big.write_all(&vec![1u8; 200_000]).await;
    let _ = big.finish();
    let mesh = nodes[0].agent.mesh.clone();
    wait_until("bad streams counted", Duration::from_secs(10), || {
        let mesh = mesh.clone();
        async move { mesh.refusals().1 >= 4 }
    })
    .await;
    // Still one healthy view.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(nodes[0].alive().await, all);
    assert_eq!(nodes[1].alive().await, all);
}
