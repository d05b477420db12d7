//! The services task, the front and the backend together, over a fake
//! mesh and fake cores, on the in-memory runtime: what a definition that
//! arrives by gossip does here, and that a tombstone gives everything back.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use mesh_protocol::gossip::PeerView;
use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::{ServiceDef, ServiceRequest, ServiceSpec};
use mesh_protocol::{Allocation, CoreCount, CpuSet, NodeId, TaskId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::mesh::GossipValue;
use crate::mesh::rpc::CallError;
use crate::runtime::memory::MemoryRuntime;
use crate::supervisor::{Reservation, SupervisorError};

/// A mesh of one node: the definitions "gossiped" are what the test sets;
/// what is published is kept.
#[derive(Clone, Default)]
struct FakeMesh {
    defs: Arc<Mutex<Vec<ServiceDef>>>,
    /// Values published as they are (a faulty or hostile peer's).
    raw: Arc<Mutex<Vec<GossipValue>>>,
    published: Arc<Mutex<BTreeMap<String, ServiceLoad>>>,
}

impl MeshPort for FakeMesh {
    fn node(&self) -> NodeId {
        NodeId::new("n1").unwrap()
    }

    async fn peers(&self) -> Vec<PeerView> {
        Vec::new()
    }

    async fn service_defs(&self) -> Vec<GossipValue> {
        let defs = self.defs.lock().unwrap().clone();
        defs.iter()
            .map(|d| GossipValue {
                node: "n1".into(),
                key: d.key(),
                value: d.encode(),
            })
            .chain(self.raw.lock().unwrap().iter().cloned())
            .collect()
    }

    async fn publish_services(&self, _: &[ServiceDef], loads: &BTreeMap<String, ServiceLoad>) {
        *self.published.lock().unwrap() = loads.clone();
    }

    async fn open_tunnel(
        &self,
        _: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        // A mesh of one has no peers to forward to.
        Err(CallError::NoAnswer)
    }
}

/// Cores that are always free; keeps who holds some.
#[derive(Clone, Default)]
struct FakeCores {
    held: Arc<Mutex<BTreeSet<TaskId>>>,
}

impl Cores for FakeCores {
    fn reserve(
        &self,
        holder: TaskId,
        _: CoreCount,
    ) -> impl Future<Output = Result<Reservation, SupervisorError>> + Send {
        assert!(self.held.lock().unwrap().insert(holder), "held twice");
        let one = CpuSet::from_iter([0]);
        let held = Reservation {
            allocation: Allocation {
                cores: vec![0],
                cpus: one.clone(),
                mems: one.clone(),
            },
            host_cpus: one.clone(),
            host_mems: one,
        };
        std::future::ready(Ok(held))
    }

    async fn release(&self, holder: TaskId) {
        self.held.lock().unwrap().remove(&holder);
    }
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
    let bind = IpAddr::V4(Ipv4Addr::new(
        127,
        219,
        0,
        (std::process::id() % 250) as u8 + 1,
    ));
    let listen = 31_000 + (std::process::id() % 1000) as u16;
    *mesh.defs.lock().unwrap() = vec![def(listen, 1, false)];
    let cfg = ServicesConfig {
        backend: BackendConfig {
            node: mesh.node(),
            cluster: "c".into(),
            network: None,
        },
        bind,
        every: Duration::from_millis(20),
        clock: crate::clock::Clock::tokio(),
    };
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        cfg,
        dir.path(),
        rt.clone(),
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
        control.create(again).await,
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

/// A peer's definition that the API would refuse (a ready timeout of
/// u64::MAX ms: the backend panicked on it after starting a container and
/// reserving its cores, and both leaked) is ignored; a valid one beside it
/// is served.
#[tokio::test]
async fn an_invalid_gossiped_definition_is_ignored_and_a_valid_one_served() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(MemoryRuntime::new());
    let (mesh, cores) = (FakeMesh::default(), FakeCores::default());
    let bind = IpAddr::V4(Ipv4Addr::new(
        127,
        218,
        0,
        (std::process::id() % 250) as u8 + 1,
    ));
    let listen = 32_000 + (std::process::id() % 1000) as u16;
    let mut bad = serde_json::to_value(def(listen + 1, 1, false)).unwrap();
    bad["spec"]["name"] = "bad".into();
    bad["spec"]["ready_timeout_ms"] = u64::MAX.into();
    *mesh.raw.lock().unwrap() = vec![GossipValue {
        node: "n2".into(),
        key: "svcdef.bad".into(),
        value: bad.to_string(),
    }];
    *mesh.defs.lock().unwrap() = vec![def(listen, 1, false)];
    let cfg = ServicesConfig {
        backend: BackendConfig {
            node: mesh.node(),
            cluster: "c".into(),
            network: None,
        },
        bind,
        every: Duration::from_millis(20),
        clock: crate::clock::Clock::tokio(),
    };
    let stop = CancellationToken::new();
    let (control, _, join) = run(
        cfg,
        dir.path(),
        rt.clone(),
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
