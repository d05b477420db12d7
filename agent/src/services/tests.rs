//! The services task, the front and the backend together, over a fake
//! mesh and fake cores, on the in-memory runtime: what a definition that
//! arrives by gossip does here, and that a tombstone gives everything back.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use mesh_protocol::auth::Caller;
use mesh_protocol::gossip::PeerView;
use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::{ServiceDef, ServiceFields, ServiceRequest, ServiceSpec};
use mesh_protocol::{Allocation, CoreCount, CpuSet, NodeId, TaskId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::mesh::GossipValue;
use crate::mesh::rpc::CallError;
use crate::runtime::memory::MemoryRuntime;
use crate::supervisor::{Reservation, SupervisorError};

mod fakes;
use fakes::{FakeCores, FakeMesh};

/// `d` with its spec's fields changed by `change`, validated again.
fn changed(mut d: ServiceDef, change: impl FnOnce(&mut ServiceFields)) -> ServiceDef {
    let mut fields = d.spec.fields().clone();
    change(&mut fields);
    d.spec = ServiceSpec::try_from(fields).unwrap();
    d
}

fn def(listen: u16, revision: u64, removed: bool) -> ServiceDef {
    let spec = ServiceSpec::try_from(ServiceRequest {
        name: "echo".into(),
        image: "img".into(),
        port: 7000,
        listen,
        warm: Some(1),
        command: vec!["echo".into(), "--port".into(), "7000".into()],
        ..Default::default()
    })
    .unwrap();
    ServiceDef {
        spec,
        revision,
        removed,
        owner: mesh_protocol::auth::unknown_owner(),
    }
}

/// A loopback address of this test's own and a port, so tests of this
/// file (and runs at once) do not clash.
fn endpoint(test: u8) -> (IpAddr, u16) {
    let ip = IpAddr::V4(Ipv4Addr::new(
        127,
        219,
        test,
        (std::process::id() % 250) as u8 + 1,
    ));
    (ip, 31_000 + (std::process::id() % 1000) as u16)
}

fn config(mesh: &FakeMesh, bind: IpAddr) -> ServicesConfig {
    ServicesConfig {
        backend: BackendConfig {
            node: mesh.node(),
            cluster: "c".into(),
            network: None,
            events: crate::events::EventLog::new(mesh.node(), crate::clock::Clock::tokio()),
        },
        bind,
        ports: port_range::ServicePorts::default(),
        limits: admission::ConnLimits::default(),
        every: Duration::from_millis(20),
        clock: crate::clock::Clock::tokio(),
        disk: crate::disk::Disk::real(),
        events: crate::events::EventLog::new(mesh.node(), crate::clock::Clock::tokio()),
    }
}

/// Polls `check` (the services run on their own tasks) for up to 10 s.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn a_gossiped_definition_is_served_here_and_its_tombstone_gives_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(0);
    *mesh.defs.lock().unwrap() = vec![def(listen, 1, false)];
    let cfg = config(&mesh, bind);
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        cfg,
        dir.path(),
        pulls_on(&rt),
        cores.clone(),
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();

    until(
        "the service is listened for, with a warm container",
        || async {
            let report = control.report().await;
            report
                .stats
                .iter()
                .any(|s| s.listening && s.load.ready == 1)
        },
    )
    .await;
    let mut client = TcpStream::connect((bind, listen)).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"hi");
    until("this node's figures are published", || async {
        mesh.published.lock().unwrap().contains_key("echo")
    })
    .await;

    // Defined here again with the same port: refused as a conflict.
    let again = ServiceRequest {
        name: "other".into(),
        image: "img".into(),
        port: 7000,
        listen,
        ..Default::default()
    };
    assert!(matches!(
        control.create(again, Caller::local()).await,
        Err(ServiceApiError::Conflict(Conflict::PortTaken { .. }))
    ));

    *mesh.defs.lock().unwrap() = vec![def(listen, 2, true)];
    until(
        "the tombstone removes every container and frees every core",
        || async {
            control.defs().is_empty()
                && rt.containers().is_empty()
                && cores.held.lock().unwrap().is_empty()
                && mesh.published.lock().unwrap().is_empty()
        },
    )
    .await;
    assert!(
        TcpStream::connect((bind, listen)).await.is_err(),
        "not listening"
    );

    stop.cancel();
    join.await.unwrap();
}

/// This node's view of service `name` (listening, why not).
async fn listening(control: &ServicesHandle, name: &str) -> (bool, Option<String>) {
    control
        .report()
        .await
        .stats
        .into_iter()
        .find(|s| s.service.as_str() == name)
        .map(|s| (s.listening, s.listen_error))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_port_that_cannot_be_bound_is_tried_again_with_a_back_off_not_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(1);
    // Someone else holds the port (as sshd would hold 22).
    let holder = std::net::TcpListener::bind((bind, listen)).unwrap();
    *mesh.defs.lock().unwrap() = vec![def(listen, 1, false)];
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        config(&mesh, bind),
        dir.path(),
        pulls_on(&rt),
        cores,
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    until("the failed bind is reported", || async {
        listening(&control, "echo").await.1.is_some()
    })
    .await;
    // A round every 20 ms for 2.5 s: 125 rounds; the back-off (1 s, then
    // 2 s) allows 2 or 3 tries.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (on, why) = listening(&control, "echo").await;
    let why = why.unwrap();
    assert!(!on);
    assert!(why.contains("cannot listen on"), "{why}");
    let tries: u32 = why
        .split("tried ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of tries in {why:?}"));
    assert!((2..=3).contains(&tries), "tried {tries} times: {why}");
    // Once the port is free, the next try takes it.
    drop(holder);
    until("the port is taken once free", || async {
        listening(&control, "echo").await.0
    })
    .await;
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn a_port_outside_service_ports_is_refused_by_the_api_and_not_listened_on_from_gossip() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(2);
    let mut cfg = config(&mesh, bind);
    cfg.ports = format!("{}-{}", listen + 1, listen + 10).parse().unwrap();
    *mesh.defs.lock().unwrap() = vec![def(listen, 1, false)];
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        cfg,
        dir.path(),
        pulls_on(&rt),
        cores,
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    until("the gossiped definition is known", || async {
        listening(&control, "echo").await.1.is_some()
    })
    .await;
    let (on, why) = listening(&control, "echo").await;
    assert!(!on);
    let why = why.unwrap();
    assert!(why.contains("--service-ports"), "{why}");
    assert!(
        TcpStream::connect((bind, listen)).await.is_err(),
        "not listening"
    );

    let request = |listen: u16| ServiceRequest {
        name: "other".into(),
        image: "img".into(),
        port: 7000,
        listen,
        ..Default::default()
    };
    let refused = control
        .create(request(22), Caller::local())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ServiceApiError::PortNotAllowed { port: 22, .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("--service-ports"), "{refused}");
    control
        .create(request(listen + 1), Caller::local())
        .await
        .unwrap();
    stop.cancel();
    join.await.unwrap();
}

/// A live peer whose gossip shows room for `service`.
fn roomy_peer(service: &str) -> PeerView {
    use mesh_protocol::gossip::{NodeInfo, PeerState};
    use mesh_protocol::load::{Load, TopologySummary};
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    PeerView {
        node: NodeId::new("n2").unwrap(),
        state: PeerState::Alive,
        is_self: false,
        generation: 1,
        gossip_addr: addr,
        info: Some(NodeInfo {
            quic: addr,
            api: addr,
            version: "test".into(),
            topology: TopologySummary {
                packages: 1,
                cores_per_numa: vec![4],
                pus_per_core: 1,
            },
            load: Load {
                free_per_numa: vec![4],
                running: 0,
                queued: 0,
                cpu_percent: 0,
            },
            draining: false,
            services: BTreeMap::from([(service.to_owned(), ServiceLoad::default())]),
            service_images: Default::default(),
            images: Default::default(),
        }),
        error: None,
        last_heard_ms: Some(0),
        verified: true,
    }
}

#[tokio::test]
async fn a_waiting_connection_does_not_ask_every_peer_every_100_ms() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(3);
    let one = changed(def(listen, 1, false), |f| {
        f.warm = 0;
        f.max_per_node = 1;
        f.queue_timeout_ms = 2_000;
    });
    *mesh.defs.lock().unwrap() = vec![one];
    // A peer that gossip says has room, but never takes a connection.
    *mesh.peers.lock().unwrap() = vec![roomy_peer("echo")];
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        config(&mesh, bind),
        dir.path(),
        pulls_on(&rt),
        cores,
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    until("listening", || async {
        listening(&control, "echo").await.0
    })
    .await;
    // The one local container is taken...
    let mut held = TcpStream::connect((bind, listen)).await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut x = [0u8; 1];
    held.read_exact(&mut x).await.unwrap();
    let before = mesh.tunnels.load(std::sync::atomic::Ordering::SeqCst);
    // ...so the next waits its 2 s out, then is let go.
    let mut waiting = TcpStream::connect((bind, listen)).await.unwrap();
    let mut rest = Vec::new();
    waiting.read_to_end(&mut rest).await.unwrap();
    let asked = mesh.tunnels.load(std::sync::atomic::Ordering::SeqCst) - before;
    // Routing every 100 ms would have asked the peer about 20 times; with
    // the back-off (0.2, 0.4, 0.8 s, ...) it asks at most 5 times.
    assert!((1..=5).contains(&asked), "asked the peer {asked} times");
    let report = control.report().await;
    assert_eq!(report.stats[0].counters.refused, 1);
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_caps_are_refused_cleanly_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(4);
    let mut cfg = config(&mesh, bind);
    cfg.limits = admission::ConnLimits {
        total: 3,
        per_source: 2,
    };
    let echo = changed(def(listen, 1, false), |f| f.warm = 0);
    *mesh.defs.lock().unwrap() = vec![echo];
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        cfg,
        dir.path(),
        pulls_on(&rt),
        cores,
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    until("listening", || async {
        listening(&control, "echo").await.0
    })
    .await;
    // A client from a source address of its choosing, served (echo).
    let open = |source: Ipv4Addr| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
        let mut s = socket.connect(SocketAddr::new(bind, listen)).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        let n = s.read(&mut one).await.unwrap();
        (s, n)
    };
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let (a1, n) = open(a).await;
    assert_eq!(n, 1, "served");
    let (a2, n) = open(a).await;
    assert_eq!(n, 1, "served");
    let (_a3, n) = open(a).await;
    assert_eq!(n, 0, "a third from one source is closed at once");
    let (b1, n) = open(b).await;
    assert_eq!(n, 1, "another source is served");
    let (_b2, n) = open(b).await;
    assert_eq!(n, 0, "beyond 3 in all: closed");
    drop(a1);
    until("a place is free again", || async {
        let (_s, n) = open(b).await;
        n == 1
    })
    .await;
    let c = control.report().await.stats[0].counters.clone();
    assert!(c.refused >= 2, "{c:?}");
    assert_eq!(c.accepted, c.served + c.refused + 3, "{c:?}");
    drop((a2, b1));
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn an_idle_client_is_closed_after_the_services_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(5);
    let echo = changed(def(listen, 1, false), |f| f.idle_timeout_ms = 300);
    *mesh.defs.lock().unwrap() = vec![echo];
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        config(&mesh, bind),
        dir.path(),
        pulls_on(&rt),
        cores.clone(),
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    until("listening", || async {
        listening(&control, "echo").await.0
    })
    .await;
    let mut client = TcpStream::connect((bind, listen)).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut reply = [0u8; 2];
    client.read_exact(&mut reply).await.unwrap();
    // Then silence: the agent ends the connection (without it, this read
    // would wait forever).
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut rest))
        .await
        .expect("closed within the idle timeout")
        .unwrap();
    assert_eq!(n, 0);
    until("counted served, container given back", || async {
        let report = control.report().await;
        report.connections.is_empty() && report.stats[0].counters.served == 1
    })
    .await;
    stop.cancel();
    join.await.unwrap();
}

/// A peer's definition that the API would refuse (a ready timeout of
/// u64::MAX ms: the backend panicked on it after starting a container and
/// reserving its cores, and both leaked) is ignored; a valid one beside it
/// is served.
#[tokio::test]
async fn an_invalid_gossiped_definition_is_ignored_and_a_valid_one_served() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let (bind, listen) = endpoint(9);
    let mut bad = serde_json::to_value(def(listen + 1, 1, false)).unwrap();
    bad["spec"]["name"] = "bad".into();
    bad["spec"]["ready_timeout_ms"] = u64::MAX.into();
    *mesh.raw.lock().unwrap() = vec![GossipValue {
        node: "n2".into(),
        key: "svcdef.bad".into(),
        value: bad.to_string(),
    }];
    *mesh.defs.lock().unwrap() = vec![def(listen, 1, false)];
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        config(&mesh, bind),
        dir.path(),
        pulls_on(&rt),
        cores.clone(),
        mesh.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    until("the valid service has its warm container", || async {
        let report = control.report().await;
        report
            .stats
            .iter()
            .any(|s| s.service.as_str() == "echo" && s.listening && s.load.ready == 1)
    })
    .await;
    let names: Vec<String> = control
        .defs()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    assert_eq!(names, ["echo"]);
    let services: Vec<String> = rt
        .containers()
        .iter()
        .filter_map(|c| c.labels.get(mesh_protocol::labels::SERVICE).cloned())
        .collect();
    assert_eq!(services, ["echo"], "no container of the invalid one");
    assert_eq!(cores.held.lock().unwrap().len(), 1);
    assert!(
        TcpStream::connect((bind, listen + 1)).await.is_err(),
        "not listening for the invalid one"
    );
    stop.cancel();
    join.await.unwrap();
}

/// The image pulls of a test's runtime, without credentials.
fn pulls_on(rt: &Arc<MemoryRuntime>) -> crate::images::Pulls<MemoryRuntime> {
    crate::images::Pulls::new(rt.clone(), crate::images::RegistryAuth::default())
}
