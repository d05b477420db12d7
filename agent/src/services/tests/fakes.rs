//! The services' tests' stand-ins for the mesh and the supervisor's cores.

use super::*;

/// A mesh of one node, or with the peers the test sets (whose tunnels
/// never open, and are counted): the definitions "gossiped" are what the
/// test sets; what is published is kept.
#[derive(Clone, Default)]
pub(super) struct FakeMesh {
    pub(super) defs: Arc<Mutex<Vec<ServiceDef>>>,
    /// Values published as they are (a faulty or hostile peer's).
    pub(super) raw: Arc<Mutex<Vec<GossipValue>>>,
    pub(super) published: Arc<Mutex<BTreeMap<String, ServiceLoad>>>,
    pub(super) peers: Arc<Mutex<Vec<PeerView>>>,
    pub(super) tunnels: Arc<std::sync::atomic::AtomicU32>,
}

impl MeshPort for FakeMesh {
    fn node(&self) -> NodeId {
        NodeId::new("n1").unwrap()
    }

    async fn peers(&self) -> Vec<PeerView> {
        self.peers.lock().unwrap().clone()
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

    async fn publish_services(
        &self,
        _: &[ServiceDef],
        loads: &BTreeMap<String, ServiceLoad>,
        _: &BTreeMap<String, mesh_protocol::service::image::NodeImage>,
    ) {
        *self.published.lock().unwrap() = loads.clone();
    }

    async fn open_tunnel(
        &self,
        _: &NodeId,
        _: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        // The peers a test sets never answer.
        self.tunnels
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(CallError::NoAnswer)
    }
}

/// Cores that are always free; keeps who holds some.
#[derive(Clone, Default)]
pub(super) struct FakeCores {
    pub(super) held: Arc<Mutex<BTreeSet<TaskId>>>,
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
