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
use crate::mesh::rpc::CallError;
use crate::runtime::memory::MemoryRuntime;
use crate::supervisor::{Reservation, SupervisorError};

/// A mesh of one node: the definitions "gossiped" are what the test sets;
/// what is published is kept.
#[derive(Clone, Default)]
struct FakeMesh {
    defs: Arc<Mutex<Vec<ServiceDef>>>,
    published: Arc<Mutex<BTreeMap<String, ServiceLoad>>>,
}

impl MeshPort for FakeMesh {
    fn node(&self) -> NodeId {
        NodeId::new("n1").unwrap()
    }

    async fn peers(&self) -> Vec<PeerView> {
        Vec::new()
    }

    async fn service_defs(&self) -> Vec<ServiceDef> {
        self.defs.lock().unwrap().clone()
    }

    async fn publish_services(&self, _: &[ServiceDef], loads: &BTreeMap<String, ServiceLoad>) {
        *self.published.lock().unwrap() = loads.clone();
    }

    async fn open_tunnel(
        &self,
        _: &NodeId,
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
