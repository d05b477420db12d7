//! Services on real Docker, through in-process agents that form a mesh:
//! per-connection containers (fresh and warm), forwarding to a peer,
//! half-close, the queue and refusal, containers that crash or start
//! slowly, and bad definitions. (Pool mode, node loss and large transfers
//! on agents in containers: `testnet/tests/services.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::services::*;
use common::services_docker::*;
use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_protocol::labels;
use mesh_protocol::service::ServiceRequest;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn each_connection_gets_its_own_container_through_any_node_then_only_warm_ones_remain() {
    let (a, b) = pair().await;
    let listen = port(1);
    let mut web = svc("web", listen, &["http", "--port", "7000"]);
    web.warm = Some(1);
    a.api.create_service(&web).await;
    wait_listening(&b.api, "web", 2).await;
    let mut hosts = BTreeSet::new();
    for n in [&a, &b, &a, &b] {
        let reply = exchange(SocketAddr::new(n.ip, listen), b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&reply).to_string();
        let host = text
            .lines()
            .find_map(|l| l.strip_prefix("hello from "))
            .unwrap_or_else(|| panic!("not the service's answer: {text:?}"))
            .to_owned();
        hosts.insert(host);
    }
    assert_eq!(
        hosts.len(),
        4,
        "every connection had its own container: {hosts:?}"
    );
    for n in [&a, &b] {
        wait_until(
            "only the warm container remains",
            Duration::from_secs(20),
            || async {
                let c = containers(&n.id, "web").await;
                c.len() == 1 && c[0].running
            },
        )
        .await;
    }
}

#[tokio::test]
async fn bytes_flow_both_ways_with_half_close_through_a_peer() {
    let (a, b) = pair().await;
    let listen = port(2);
    let mut echo = svc("echo", listen, &["echo", "--port", "7000"]);
    // One container per node: the second connection through a must go to b.
    echo.max_per_node = Some(1);
    echo.queue_timeout_ms = Some(30_000);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "echo", 2).await;
    let at = SocketAddr::new(a.ip, listen);
    // The first connection holds a's container open.
    let mut held = TcpStream::connect(at).await.unwrap();
    held.write_all(b"first").await.unwrap();
    let mut got = [0u8; 5];
    held.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"first");
    // The second goes through a to b's container, over the mesh.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut second = TcpStream::connect(at).await.unwrap();
    second.write_all(&data[..1000]).await.unwrap();
    let mut first_bytes = [0u8; 1000];
    second.read_exact(&mut first_bytes).await.unwrap();
    let conns = a.api.connections().await;
    assert!(
        conns.iter().any(|c| c.node == b.id && c.entry == a.id),
        "one connection enters at a and is served by b: {conns:?}"
    );
    let (mut r, mut w) = second.into_split();
    let rest = data[1000..].to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&rest).await.unwrap();
        // Half-close: the rest of the reply must still arrive.
        w.shutdown().await.unwrap();
    });
    let mut reply = first_bytes.to_vec();
    r.read_to_end(&mut reply).await.unwrap();
    writer.await.unwrap();
    assert!(
        reply == data,
        "{} bytes came back of {}",
        reply.len(),
        data.len()
    );
    drop(held);
    wait_until(
        "containers removed after the connections",
        Duration::from_secs(20),
        || async {
            containers(&a.id, "echo").await.is_empty() && containers(&b.id, "echo").await.is_empty()
        },
    )
    .await;
    // Both nodes count the forwarded bytes, each from its side, once the
    // connection closed there. Which of the two connections a served
    // itself is up to its routing: a counts one as local, the other as
    // sent through the mesh, and b what it served for a.
    let n = data.len() as u64;
    let bytes = |text: &str, family: &str, direction: &str| {
        let name = format!("meshd_service_{family}_bytes_total{{direction=\"{direction}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    let (at_a, at_b) = (a.api.clone(), b.api.clone());
    wait_until(
        "the forwarded bytes counted on both nodes",
        Duration::from_secs(10),
        || async {
            let (_, _, ta) = at_a.get_raw("/metrics").await;
            let (_, _, tb) = at_b.get_raw("/metrics").await;
            let local = bytes(&ta, "local", "to_container");
            let seen = (
                local,
                bytes(&ta, "local", "to_client"),
                bytes(&ta, "mesh", "sent"),
                bytes(&ta, "mesh", "received"),
                bytes(&tb, "mesh", "received"),
                bytes(&tb, "mesh", "sent"),
            );
            let remote = if local == n { 5 } else { n };
            if seen == (local, local, remote, remote, remote, remote) && local + remote == n + 5 {
                Ok(ta)
            } else {
                Err(seen)
            }
        },
    )
    .await;
    let (_, _, text) = a.api.get_raw("/metrics").await;
    for want in [
        r#"meshd_service_connection_setup_seconds_count{route="mesh"} 1"#,
        r#"meshd_service_connection_setup_seconds_count{route="local"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == want), "no {want} in\n{text}");
    }
}

#[tokio::test]
async fn a_full_mesh_queues_then_refuses_cleanly_and_serves_the_queued_when_room_appears() {
    let (a, b) = pair().await;
    let listen = port(3);
    let mut echo = svc("busy", listen, &["echo", "--port", "7000"]);
    echo.max_per_node = Some(1);
    echo.queue = Some(1);
    echo.queue_timeout_ms = Some(30_000);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "busy", 2).await;
    let at = SocketAddr::new(a.ip, listen);
    let mut open = Vec::new();
    for i in 0..2u8 {
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(&[i]).await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        open.push(s);
    }
    // Both nodes hold their one container: the next connection waits...
    let queued = tokio::spawn(exchange(at, b"queued"));
    wait_until(
        "one connection waits at a",
        Duration::from_secs(10),
        || async {
            a.api
                .services()
                .await
                .iter()
                .any(|v| v.nodes.iter().any(|n| n.node == a.id && n.load.queued == 1))
        },
    )
    .await;
    // ...and one more finds the queue full: closed, without a reset.
    let refused = exchange(at, b"refused").await;
    assert_eq!(refused.unwrap(), b"", "a refused connection just ends");
    drop(open.remove(0));
    let served = queued.await.unwrap().unwrap();
    assert_eq!(served, b"queued");
    let view = a.api.services().await;
    let at_a = view[0].nodes.iter().find(|n| n.node == a.id).unwrap();
    assert_eq!((at_a.counters.queued, at_a.counters.refused), (1, 1));
    drop(b);
}

#[tokio::test]
async fn containers_that_crash_on_start_are_retried_then_the_client_is_let_go() {
    let a = node().await;
    let listen = port(4);
    let mut crashy = svc("crashy", listen, &["crash"]);
    crashy.ready_retries = Some(2);
    a.api.create_service(&crashy).await;
    wait_listening(&a.api, "crashy", 1).await;
    let reply = exchange(SocketAddr::new(a.ip, listen), b"hello")
        .await
        .unwrap();
    assert_eq!(reply, b"", "the connection is closed, not left hanging");
    let view = a.api.services().await;
    assert_eq!(
        view[0].nodes[0].counters.failed_starts, 3,
        "1 start + 2 retries"
    );
    assert_eq!(view[0].nodes[0].counters.refused, 1);
    wait_until(
        "the failed containers are removed",
        Duration::from_secs(20),
        || async { containers(&a.id, "crashy").await.is_empty() },
    )
    .await;
}

#[tokio::test]
async fn a_slow_starting_container_gets_what_the_client_sent_meanwhile() {
    let a = node().await;
    let listen = port(5);
    let slow = svc(
        "slow",
        listen,
        &["slow-start", "1.5", "echo", "--port", "7000"],
    );
    a.api.create_service(&slow).await;
    wait_listening(&a.api, "slow", 1).await;
    let started = std::time::Instant::now();
    let reply = exchange(SocketAddr::new(a.ip, listen), b"sent before it was ready")
        .await
        .unwrap();
    assert_eq!(reply, b"sent before it was ready");
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn bad_definitions_and_unknown_names_get_clear_errors() {
    let a = node().await;
    let listen = port(6);
    let post = |body: String| {
        let api = a.api.clone();
        async move { api.post_raw("/v1/services", &body).await }
    };
    let (status, body) = post("{not json".into()).await;
    assert_eq!(status, 400, "{body}");
    let no_listen = refusal(a.api.client().create_service(&svc("x", 0, &[])).await);
    assert_eq!(no_listen.status, 400);
    assert!(no_listen.message.contains("--listen"), "{no_listen:?}");
    let (status, body) =
        post(json!({"name": "bad name", "image": IMAGE, "port": 1, "listen": 2}).to_string()).await;
    assert_eq!(status, 400);
    assert!(body.contains("character"), "{body}");
    // Limits: one call cannot make every node start billions of
    // containers.
    let mut huge = svc("huge", listen, &[]);
    huge.warm = Some(4_000_000_000);
    huge.max_per_node = Some(4_000_000_000);
    let huge = refusal(a.api.client().create_service(&huge).await);
    assert_eq!(huge.status, 400);
    assert!(
        huge.message
            .contains("--max-per-node 4000000000 is above the limit of 4096"),
        "{huge:?}"
    );
    let mut warm = svc("warm", listen, &[]);
    warm.warm = Some(1000);
    warm.max_per_node = Some(4096);
    let warm = refusal(a.api.client().create_service(&warm).await);
    assert_eq!(warm.status, 400);
    assert!(
        warm.message
            .contains("--warm 1000 is above the limit of 256"),
        "{warm:?}"
    );
    a.api
        .create_service(&svc("one", listen, &["echo", "--port", "7000"]))
        .await;
    let create = |req: ServiceRequest| {
        let api = a.api.clone();
        async move { refusal(api.client().create_service(&req).await) }
    };
    let taken = create(svc("one", listen + 100, &[])).await;
    assert_eq!(taken.status, 409);
    assert!(taken.message.contains("exists"), "{taken:?}");
    let port_taken = create(svc("two", listen, &[])).await;
    assert_eq!(port_taken.status, 409);
    assert!(port_taken.message.contains("one"), "{port_taken:?}");
    let client = a.api.client();
    assert_eq!(
        refusal(client.remove_service("nope").await).status,
        404,
        "DELETE"
    );
    let unknown = client
        .service::<mesh_protocol::api::ServiceView>("nope")
        .await;
    assert_eq!(refusal(unknown).status, 404, "GET");
    // Removal stops the listener; the name is free again.
    client.remove_service("one").await.unwrap();
    assert!(a.api.services().await.is_empty());
    wait_until("the listener closed", Duration::from_secs(5), || async {
        TcpStream::connect(SocketAddr::new(a.ip, listen))
            .await
            .is_err()
    })
    .await;
    a.api
        .create_service(&svc("one", listen, &["echo", "--port", "7000"]))
        .await;
}

#[tokio::test]
async fn a_node_that_joins_later_learns_the_services_and_serves_them() {
    let mesh = setup("svc");
    let a = mesh.start(&[]).await;
    let listen = port(7);
    a.api
        .create_service(&svc("late", listen, &["echo", "--port", "7000"]))
        .await;
    let b = mesh.start(&[a.gossip()]).await;
    wait_listening(&b.api, "late", 2).await;
    let reply = exchange(SocketAddr::new(b.ip, listen), b"hi")
        .await
        .unwrap();
    assert_eq!(reply, b"hi");
}

#[tokio::test]
async fn a_pool_instance_that_dies_is_replaced() {
    let a = node().await;
    let listen = port(8);
    let mut pool = svc("pool", listen, &["echo", "--port", "7000"]);
    pool.mode = Some("pool".into());
    pool.instances = Some("2".into());
    a.api.create_service(&pool).await;
    let running = || async {
        containers(&a.id, "pool")
            .await
            .into_iter()
            .filter(|c| c.running)
            .map(|c| c.id)
            .collect::<BTreeSet<_>>()
    };
    wait_until("2 instances", Duration::from_secs(20), || async {
        running().await.len() == 2
    })
    .await;
    let before = running().await;
    let victim = before.iter().next().unwrap().clone();
    docker().kill(&victim).await.unwrap();
    wait_until(
        "a new instance replaces the killed one",
        Duration::from_secs(20),
        || async {
            let now = running().await;
            now.len() == 2 && !now.contains(&victim)
        },
    )
    .await;
    let reply = exchange(SocketAddr::new(a.ip, listen), b"pooled")
        .await
        .unwrap();
    assert_eq!(reply, b"pooled");
}

#[tokio::test]
async fn definitions_survive_a_restart_and_stale_containers_are_removed() {
    let mut agent = setup("svcr")
        .topology("numa:1 core:2 pu:1")
        .start(&[])
        .await;
    let id = agent.id.clone();
    let listen = port(9);
    let mut warm = svc("kept", listen, &["echo", "--port", "7000"]);
    warm.warm = Some(1);
    agent.api.create_service(&warm).await;
    wait_until("a warm container", Duration::from_secs(20), || async {
        let c = containers(&id, "kept").await;
        if c.len() == 1 { Ok(()) } else { Err(c) }
    })
    .await;
    agent.stop().await;
    assert!(
        containers(&id, "kept").await.is_empty(),
        "a clean stop removes them"
    );
    // What a crash would leave: a service container of this node.
    let stale = run_sleeper(
        format!("mesh-{id}-kept-stale"),
        &[
            (labels::NODE, id.as_str()),
            (labels::CLUSTER, agent.cluster()),
            (labels::KIND, labels::KIND_SERVICE),
            (labels::SERVICE, "kept"),
        ],
    )
    .await;
    agent.restart(&[]).await;
    wait_listening(&agent.api, "kept", 1).await;
    wait_until(
        "the stale container replaced by a new warm one",
        Duration::from_secs(20),
        || async {
            let c = containers(&id, "kept").await;
            if c.len() == 1 && c[0].id != stale {
                Ok(())
            } else {
                Err(c)
            }
        },
    )
    .await;
    let reply = exchange(SocketAddr::new(agent.ip, listen), b"again")
        .await
        .unwrap();
    assert_eq!(reply, b"again");
    agent.stop().await;
    assert!(
        containers(&id, "kept").await.is_empty(),
        "a clean stop removes them"
    );
}
