//! Services on real Docker, through in-process agents that form a mesh:
//! per-connection containers (fresh and warm), forwarding to a peer,
//! half-close, the queue and refusal, containers that crash or start
//! slowly, and bad definitions. (Pool mode, node loss and large transfers
//! on agents in containers: `testnet/tests/services.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::services::*;
use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::{NodeId, labels};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Node {
    agent: RunningAgent,
    node: NodeId,
    api: Api,
    ip: IpAddr,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_node_containers(&self.node);
    }
}

async fn node(seeds: Vec<String>) -> Node {
    require_docker().await;
    let dir = tempfile::tempdir().unwrap();
    let ip = own_loopback();
    let id = unique_node("svc");
    let config = Config::builder(id.clone(), dir.path())
        .topology("numa:1 core:4 pu:1")
        .seeds(seeds)
        .service_bind(ip);
    let stop = CancellationToken::new();
    let agent = mesh_agent::start(config, stop.clone()).await.unwrap();
    let api = Api::new(&format!("http://{}", agent.api_addr));
    Node {
        agent,
        node: id,
        api,
        ip,
        _stop: stop.drop_guard(),
        _dir: dir,
    }
}

/// Two agents that see each other with published values.
async fn pair() -> (Node, Node) {
    let a = node(vec![]).await;
    let b = node(vec![a.agent.mesh.local_addr().unwrap().to_string()]).await;
    wait_mesh_formed(&[&a.agent.mesh, &b.agent.mesh], Duration::from_secs(15)).await;
    (a, b)
}

async fn containers(node: &NodeId, service: &str) -> Vec<mesh_agent::runtime::ContainerInfo> {
    docker()
        .list(&[(labels::NODE, node.as_str()), (labels::SERVICE, service)])
        .await
        .unwrap()
}

#[tokio::test]
async fn each_connection_gets_its_own_container_through_any_node_then_only_warm_ones_remain() {
    let (a, b) = pair().await;
    let listen = port(1);
    let mut web = svc("web", listen, &["http", "--port", "7000"]);
    web["warm"] = json!(1);
    assert_eq!(create(&a.api, web).await.0, 201);
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
                let c = containers(&n.node, "web").await;
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
    echo["max_per_node"] = json!(1);
    echo["queue_timeout_ms"] = json!(30_000);
    assert_eq!(create(&a.api, echo).await.0, 201);
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
    let conns: Vec<mesh_protocol::api::ConnectionView> = a
        .api
        .http
        .get(format!("{}/v1/connections", a.api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        conns.iter().any(|c| c.node == b.node && c.entry == a.node),
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
            containers(&a.node, "echo").await.is_empty()
                && containers(&b.node, "echo").await.is_empty()
        },
    )
    .await;
}

#[tokio::test]
async fn a_full_mesh_queues_then_refuses_cleanly_and_serves_the_queued_when_room_appears() {
    let (a, b) = pair().await;
    let listen = port(3);
    let mut echo = svc("busy", listen, &["echo", "--port", "7000"]);
    echo["max_per_node"] = json!(1);
    echo["queue"] = json!(1);
    echo["queue_timeout_ms"] = json!(30_000);
    assert_eq!(create(&a.api, echo).await.0, 201);
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
            services(&a.api).await.iter().any(|v| {
                v.nodes
                    .iter()
                    .any(|n| n.node == a.node && n.load.queued == 1)
            })
        },
    )
    .await;
    // ...and one more finds the queue full: closed, without a reset.
    let refused = exchange(at, b"refused").await;
    assert_eq!(refused.unwrap(), b"", "a refused connection just ends");
    drop(open.remove(0));
    let served = queued.await.unwrap().unwrap();
    assert_eq!(served, b"queued");
    let view = services(&a.api).await;
    let at_a = view[0].nodes.iter().find(|n| n.node == a.node).unwrap();
    assert_eq!((at_a.counters.queued, at_a.counters.refused), (1, 1));
    drop(b);
}

#[tokio::test]
async fn containers_that_crash_on_start_are_retried_then_the_client_is_let_go() {
    let a = node(vec![]).await;
    let listen = port(4);
    let mut crashy = svc("crashy", listen, &["crash"]);
    crashy["ready_retries"] = json!(2);
    assert_eq!(create(&a.api, crashy).await.0, 201);
    wait_listening(&a.api, "crashy", 1).await;
    let reply = exchange(SocketAddr::new(a.ip, listen), b"hello")
        .await
        .unwrap();
    assert_eq!(reply, b"", "the connection is closed, not left hanging");
    let view = services(&a.api).await;
    assert_eq!(
        view[0].nodes[0].counters.failed_starts, 3,
        "1 start + 2 retries"
    );
    assert_eq!(view[0].nodes[0].counters.refused, 1);
    wait_until(
        "the failed containers are removed",
        Duration::from_secs(20),
        || async { containers(&a.node, "crashy").await.is_empty() },
    )
    .await;
}

#[tokio::test]
async fn a_slow_starting_container_gets_what_the_client_sent_meanwhile() {
    let a = node(vec![]).await;
    let listen = port(5);
    let slow = svc(
        "slow",
        listen,
        &["slow-start", "1.5", "echo", "--port", "7000"],
    );
    assert_eq!(create(&a.api, slow).await.0, 201);
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
    let a = node(vec![]).await;
    let listen = port(6);
    let post = |body: String| {
        let api = a.api.clone();
        async move {
            let r = api
                .http
                .post(format!("{}/v1/services", api.url))
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = post("{not json".into()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(svc("x", 0, &[]).to_string()).await;
    assert_eq!(status, 400);
    assert!(body.contains("--listen"), "{body}");
    let (status, body) =
        post(json!({"name": "bad name", "image": IMAGE, "port": 1, "listen": 2}).to_string()).await;
    assert_eq!(status, 400);
    assert!(body.contains("character"), "{body}");
    assert_eq!(
        create(&a.api, svc("one", listen, &["echo", "--port", "7000"]))
            .await
            .0,
        201
    );
    let (status, body) = create(&a.api, svc("one", listen + 100, &[])).await;
    assert_eq!(status, 409);
    assert!(body.contains("exists"), "{body}");
    let (status, body) = create(&a.api, svc("two", listen, &[])).await;
    assert_eq!(status, 409);
    assert!(body.contains("one"), "{body}");
    for (method, path) in [
        ("DELETE", "/v1/services/nope"),
        ("GET", "/v1/services/nope"),
    ] {
        let r = a
            .api
            .http
            .request(method.parse().unwrap(), format!("{}{path}", a.api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{method} {path}");
    }
    // Removal stops the listener; the name is free again.
    let r = a
        .api
        .http
        .delete(format!("{}/v1/services/one", a.api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(services(&a.api).await.is_empty());
    wait_until("the listener closed", Duration::from_secs(5), || async {
        TcpStream::connect(SocketAddr::new(a.ip, listen))
            .await
            .is_err()
    })
    .await;
    assert_eq!(
        create(&a.api, svc("one", listen, &["echo", "--port", "7000"]))
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn a_node_that_joins_later_learns_the_services_and_serves_them() {
    let a = node(vec![]).await;
    let listen = port(7);
    assert_eq!(
        create(&a.api, svc("late", listen, &["echo", "--port", "7000"]))
            .await
            .0,
        201
    );
    let b = node(vec![a.agent.mesh.local_addr().unwrap().to_string()]).await;
    wait_listening(&b.api, "late", 2).await;
    let reply = exchange(SocketAddr::new(b.ip, listen), b"hi")
        .await
        .unwrap();
    assert_eq!(reply, b"hi");
}

#[tokio::test]
async fn a_pool_instance_that_dies_is_replaced() {
    let a = node(vec![]).await;
    let listen = port(8);
    let mut pool = svc("pool", listen, &["echo", "--port", "7000"]);
    pool["mode"] = json!("pool");
    pool["instances"] = json!("2");
    assert_eq!(create(&a.api, pool).await.0, 201);
    let running = || async {
        containers(&a.node, "pool")
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
    require_docker().await;
    let dir = tempfile::tempdir().unwrap();
    let ip = own_loopback();
    let id = unique_node("svcr");
    let listen = port(9);
    let start = || async {
        let config = Config::builder(id.clone(), dir.path())
            .topology("numa:1 core:2 pu:1")
            .service_bind(ip);
        let stop = CancellationToken::new();
        let agent = mesh_agent::start(config, stop.clone()).await.unwrap();
        (agent, stop)
    };
    let (agent, stop) = start().await;
    let api = Api::new(&format!("http://{}", agent.api_addr));
    let mut warm = svc("kept", listen, &["echo", "--port", "7000"]);
    warm["warm"] = json!(1);
    assert_eq!(create(&api, warm).await.0, 201);
    wait_until("a warm container", Duration::from_secs(20), || async {
        containers(&id, "kept").await.len() == 1
    })
    .await;
    stop.cancel();
    agent.wait().await.unwrap();
    assert!(
        containers(&id, "kept").await.is_empty(),
        "a clean stop removes them"
    );
    // What a crash would leave: a service container of this node.
    let stale = docker()
        .run(&mesh_agent::runtime::ContainerSpec {
            name: format!("mesh-{id}-kept-stale"),
            image: IMAGE.into(),
            command: vec!["sleep".into(), "60".into()],
            env: vec![],
            labels: [
                (labels::NODE, id.as_str()),
                (labels::CLUSTER, "ganger-test"),
                (labels::KIND, labels::KIND_SERVICE),
                (labels::SERVICE, "kept"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            cpuset_cpus: Default::default(),
            cpuset_mems: Default::default(),
            memory: None,
            network: None,
        })
        .await
        .unwrap();
    let (agent, stop) = start().await;
    let api = Api::new(&format!("http://{}", agent.api_addr));
    wait_listening(&api, "kept", 1).await;
    wait_until(
        "the stale container replaced by a new warm one",
        Duration::from_secs(20),
        || async {
            let c = containers(&id, "kept").await;
            c.len() == 1 && c[0].id != stale
        },
    )
    .await;
    let reply = exchange(SocketAddr::new(ip, listen), b"again")
        .await
        .unwrap();
    assert_eq!(reply, b"again");
    stop.cancel();
    agent.wait().await.unwrap();
    assert!(
        containers(&id, "kept").await.is_empty(),
        "a clean stop removes them"
    );
}
