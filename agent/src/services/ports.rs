//! What services need from the rest of the agent, as two narrow traits:
//! the mesh (definitions, figures, the view, tunnels to peers) and the
//! cores (the supervisor's allocator). The real implementations are here;
//! tests give fakes, so the services task, the front and the backend run
//! without a mesh or a supervisor.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use mesh_protocol::gossip::PeerView;
use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::ServiceDef;
use mesh_protocol::service::image::NodeImage;
use mesh_protocol::{CoreCount, NodeId, TaskId};

use crate::mesh::rpc::CallError;
use crate::mesh::{GossipValue, Mesh};
use crate::supervisor::{Reservation, SupervisorError, SupervisorHandle};

/// What services ask of the mesh.
pub trait MeshPort: Clone + Send + Sync + 'static {
    /// This node.
    fn node(&self) -> NodeId;

    /// Every node this one knows of (itself included).
    fn peers(&self) -> impl Future<Output = Vec<PeerView>> + Send;

    /// Every service definition any node publishes, as it was published
    /// (see `gossiped` for reading them).
    fn service_defs(&self) -> impl Future<Output = Vec<GossipValue>> + Send;

    /// Publishes these definitions, this node's figures and the services
    /// whose image it lacks.
    fn publish_services(
        &self,
        defs: &[ServiceDef],
        loads: &BTreeMap<String, ServiceLoad>,
        images: &BTreeMap<String, NodeImage>,
    ) -> impl Future<Output = ()> + Send;

    /// Opens a stream to node `node` at `addr` for a forwarded connection
    /// (refused unless the certificate there names `node`).
    fn open_tunnel(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<(quinn::SendStream, quinn::RecvStream), CallError>> + Send;
}

impl MeshPort for Mesh {
    fn node(&self) -> NodeId {
        Mesh::node(self)
    }

    async fn peers(&self) -> Vec<PeerView> {
        Mesh::peers(self).await
    }

    async fn service_defs(&self) -> Vec<GossipValue> {
        Mesh::values_with_prefix(self, mesh_protocol::service::defs::KEY_PREFIX).await
    }

    async fn publish_services(
        &self,
        defs: &[ServiceDef],
        loads: &BTreeMap<String, ServiceLoad>,
        images: &BTreeMap<String, NodeImage>,
    ) {
        Mesh::publish_services(self, defs, loads, images).await
    }

    async fn open_tunnel(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        Mesh::open_tunnel(self, node, addr).await
    }
}

/// Where service containers get their cores.
pub trait Cores: Send + Sync + 'static {
    /// Holds `cores` (all on one NUMA node) for `holder`, or says why not now.
    fn reserve(
        &self,
        holder: TaskId,
        cores: CoreCount,
    ) -> impl Future<Output = Result<Reservation, SupervisorError>> + Send;

    /// Frees what `holder` holds.
    fn release(&self, holder: TaskId) -> impl Future<Output = ()> + Send;
}

impl Cores for SupervisorHandle {
    async fn reserve(
        &self,
        holder: TaskId,
        cores: CoreCount,
    ) -> Result<Reservation, SupervisorError> {
        SupervisorHandle::reserve(self, holder, cores).await
    }

    async fn release(&self, holder: TaskId) {
        SupervisorHandle::release(self, holder).await
    }
}
