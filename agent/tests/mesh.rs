//! Membership over QUIC with mutual TLS, agents in-process on 127.0.0.1
//! (the in-memory runtime: no containers are involved here; the same
//! scenarios on real Docker hosts are in `testnet/tests`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_protocol::NodeId;
use mesh_protocol::gossip::PeerState;
use mesh_protocol::pki::{self, Ca};

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - time::Duration::hours(1)
}

fn setup() -> Setup {
    Setup::memory("m").topology("numa:2 core:2 pu:1")
}

/// `n` agents of `setup` joined through the first (not waited for).
async fn join(setup: &Setup, n: usize) -> Vec<TestAgent> {
    let first = setup.start(&[]).await;
    let seeds = [first.gossip()];
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(setup.start(&seeds).await);
    }
    nodes
}

/// Every node sees exactly `expect` alive; returns how long that took.
async fn wait_all_alive(nodes: &[TestAgent], expect: &[String]) -> Duration {
    let started = tokio::time::Instant::now();
    wait_until(
        "every node sees the expected live peers",
        Duration::from_secs(10),
        || all_see(nodes, expect),
    )
    .await;
    started.elapsed()
}

/// Whether every node sees exactly `expect` alive (else who saw what).
async fn all_see(nodes: &[TestAgent], expect: &[String]) -> Result<(), (NodeId, Vec<String>)> {
    for n in nodes {
        let alive = n.alive().await;
        if alive != expect {
            return Err((n.id.clone(), alive));
        }
    }
    Ok(())
}

fn ids(nodes: &[TestAgent]) -> Vec<String> {
    let mut v: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
    v.sort();
    v
}

fn new_ca() -> Ca {
    pki::create_ca("c1", now(), 2).unwrap()
}

#[tokio::test]
async fn agents_with_cluster_certificates_form_one_view() {
    let nodes = join(&setup().tls(&new_ca()), 3).await;
    let all = ids(&nodes);
    let took = wait_all_alive(&nodes, &all).await;
    println!("3 agents converged in {took:?}");
    for n in &nodes {
        for p in n.api.peers().await {
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
    let ca = new_ca();
    let members = setup().tls(&ca);
    let nodes = join(&members, 2).await;
    let member_ids = ids(&nodes);
    wait_all_alive(&nodes, &member_ids).await;

    let seed = [nodes[0].gossip()];
    // A CA of the same name as the members', but not theirs.
    let foreign_ca = new_ca();
    let foreign = members.clone().tls(&foreign_ca).start(&seed).await;
    let other_cluster = members.clone().other_cluster().start(&seed).await;
    // Many gossip rounds (200 ms) to try, and no one gets in. (Only the
    // outsiders are checked all along: a member that a loaded machine
    // starves for a round may look suspect for a moment.)
    hold_for(
        "no member ever lists an outsider",
        Duration::from_secs(3),
        || async {
            for n in &nodes {
                let all: Vec<String> = n
                    .api
                    .peers()
                    .await
                    .iter()
                    .map(|p| p.node.to_string())
                    .collect();
                if all.contains(&foreign.id.to_string())
                    || all.contains(&other_cluster.id.to_string())
                {
                    return Err((n.id.clone(), all));
                }
            }
            Ok(())
        },
    )
    .await;
    all_see(&nodes, &member_ids).await.unwrap();
    assert_eq!(
        foreign.alive().await,
        vec![foreign.id.to_string()],
        "it sees no one either"
    );
    let (refused_handshakes, _) = nodes[0].mesh().refusals();
    assert!(
        refused_handshakes > 0,
        "the foreign handshakes were refused and counted"
    );
}

#[tokio::test]
async fn a_stopped_agent_is_marked_dead() {
    let mut nodes = join(&setup(), 3).await;
    let all = ids(&nodes);
    wait_all_alive(&nodes, &all).await;
    let mut c = nodes.pop().unwrap();
    c.stop().await;
    let survivors = nodes;
    let took = tokio::time::Instant::now();
    wait_until(
        "the stopped agent is dead everywhere",
        Duration::from_secs(10),
        || async {
            for n in &survivors {
                let peers = n.api.peers().await;
                if !peers
                    .iter()
                    .any(|p| p.node == c.id && p.state == PeerState::Dead)
                {
                    return Err((n.id.clone(), peers));
                }
            }
            Ok(())
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
    let nodes = join(&setup(), 2).await;
    let all = ids(&nodes);
    wait_all_alive(&nodes, &all).await;
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
    let tls = mesh_agent::mesh::tls::build(
        &mesh_agent::mesh::tls::TlsSource::InsecureDev,
        &tester,
        &alpn,
    )
    .unwrap();
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
    let mesh = nodes[0].mesh();
    wait_until("bad streams counted", Duration::from_secs(10), || async {
        let (_, bad_streams) = mesh.refusals();
        if bad_streams >= 4 {
            Ok(())
        } else {
            Err(bad_streams)
        }
    })
    .await;
    // It keeps answering for a few gossip rounds, and the view is whole.
    hold_for(
        "the attacked node keeps answering",
        Duration::from_millis(600),
        || async { nodes[0].api.client().peers().await.map(|_| ()) },
    )
    .await;
    all_see(&nodes, &all).await.unwrap();
}
