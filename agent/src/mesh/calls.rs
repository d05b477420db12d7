//! Calls and streams to one peer (or every live one): RPC with one answer or
//! a stream of them, counted by kind and outcome, and the raw streams of
//! forwarded service connections and images.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_protocol::NodeId;
use mesh_protocol::rpc::{Request, Response};

use super::{Mesh, rpc};

impl Mesh {
    /// Calls node `node` at `addr` (refused unless its certificate names
    /// `node`) and waits for its one answer.
    pub async fn call(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, rpc::CallError> {
        let answer = match self.transport.connection_to(node, addr).await {
            Ok(conn) => rpc::call(&conn, request, timeout).await,
            Err(e) => Err(e.into()),
        };
        let outcome = match &answer {
            Ok(Response::Failed(_)) => "failed",
            Ok(_) => "ok",
            Err(_) => "no_answer",
        };
        self.calls.count(request.name(), outcome);
        answer
    }

    /// Calls every live peer with `request` at once and gathers each one's
    /// answer (or why there is none), for the API's mesh-wide views.
    pub async fn call_live(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Vec<(NodeId, Result<Response, rpc::CallError>)> {
        let peers = self.live_peers().await;
        let calls = peers.into_iter().map(|(node, addr)| async move {
            let answer = self.call(&node, addr, request, timeout).await;
            (node, answer)
        });
        futures_util::future::join_all(calls).await
    }

    /// The calls this node made (`call`), by kind and outcome.
    pub fn rpc_calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.calls.read()
    }

    /// Calls node `node` at `addr`, which answers with a stream.
    pub async fn call_stream(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<
        futures_util::stream::BoxStream<'static, Result<Response, rpc::CallError>>,
        rpc::CallError,
    > {
        let conn = self.transport.connection_to(node, addr).await?;
        rpc::call_stream(&conn, request).await
    }

    /// Opens a stream to node `node` at `addr` for a forwarded service
    /// connection (the kind byte written).
    pub async fn open_tunnel(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), rpc::CallError> {
        self.open_stream(node, addr, mesh_protocol::rpc::KIND_TUNNEL)
            .await
    }

    /// Opens a stream to node `node` at `addr` to fetch an image (the kind
    /// byte written).
    pub async fn open_image(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), rpc::CallError> {
        self.open_stream(node, addr, mesh_protocol::rpc::KIND_IMAGE)
            .await
    }

    async fn open_stream(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        kind: u8,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), rpc::CallError> {
        let conn = self.transport.connection_to(node, addr).await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&[kind]).await?;
        Ok((send, recv))
    }
}
