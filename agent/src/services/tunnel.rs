//! Service connections forwarded between agents: the accepting node opens a
//! QUIC stream of kind `KIND_TUNNEL` to the chosen node, sends a
//! `TunnelOpen`, and once the answer is `Ready` both sides pump raw bytes
//! (framing in `mesh_protocol::rpc`).

use std::net::SocketAddr;
use std::time::Duration;

use mesh_protocol::rpc::{TunnelOpen, TunnelReply};
use mesh_protocol::service::image::ImageStatus;
use mesh_protocol::{NodeId, ServiceName};
use tracing::{Instrument, debug, debug_span, warn};

use super::backend::{AcquireError, Backend};
use super::ends::{Sink, Source};
use super::ports::MeshPort;
use super::prepull::ImagesView;
use super::pump::{Way, pump};
use super::stats::Bytes;
use crate::mesh::rpc::{CallError, read_frame, write_frame};
use crate::metrics::ServiceTraffic;

/// How long the caller may take to say which service it wants.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// An open forwarded connection, ready for bytes.
pub struct Tunnel {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub container: String,
}

/// Why a peer did not take a forwarded connection. The peer's own words
/// (`why`) are detail; the variant is what a caller decides on.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// No room there now: another node, or later.
    #[error("{addr} has no room: {why}")]
    Full { addr: SocketAddr, why: String },
    /// The service's containers fail to start there.
    #[error("containers fail to start at {addr}: {why}")]
    Failed { addr: SocketAddr, why: String },
    #[error("{addr} did not answer within {wait:?}")]
    NoAnswer { addr: SocketAddr, wait: Duration },
    #[error("{addr} closed the stream without an answer")]
    Closed { addr: SocketAddr },
    #[error(transparent)]
    Call(#[from] CallError),
}

impl TunnelError {
    /// Whether the service's containers fail there (rather than there
    /// being no room, or no answer).
    pub fn is_failure(&self) -> bool {
        matches!(self, TunnelError::Failed { .. })
    }
}

/// The code a tunnel is reset with when its connection is aborted (a
/// timeout, a reset, a lost connection) rather than closed.
const ABORTED: quinn::VarInt = quinn::VarInt::from_u32(1);

/// Resets both halves of a tunnel whose connection did not close cleanly:
/// the far node's pump ends at once, whatever its container does.
pub fn abort(t: &mut Tunnel) {
    let _ = t.send.reset(ABORTED);
    let _ = t.recv.stop(ABORTED);
}

/// Asks node `node` at `addr` to serve one connection of `service`. Waits
/// as long as the node may take to start containers (`wait`).
pub async fn open(
    mesh: &impl MeshPort,
    node: &NodeId,
    addr: SocketAddr,
    service: &ServiceName,
    client: SocketAddr,
    wait: Duration,
) -> Result<Tunnel, TunnelError> {
    let (mut send, mut recv) = mesh.open_tunnel(node, addr).await?;
    let open = TunnelOpen {
        service: service.clone(),
        client,
    };
    write_frame(&mut send, &open).await?;
    let reply = tokio::time::timeout(wait, read_frame::<TunnelReply>(&mut recv))
        .await
        .map_err(|_| TunnelError::NoAnswer { addr, wait })??;
    match reply {
        Some(TunnelReply::Ready { container }) => Ok(Tunnel {
            send,
            recv,
            container,
        }),
        Some(TunnelReply::Full(why)) => Err(TunnelError::Full { addr, why }),
        Some(TunnelReply::Failed(why)) => Err(TunnelError::Failed { addr, why }),
        None => Err(TunnelError::Closed { addr }),
    }
}

/// What the called side of a tunnel serves from: this node's containers,
/// and its images of the services (a node whose pull failed refuses).
#[derive(Debug, Clone)]
pub struct Here {
    pub backend: Backend,
    pub images: ImagesView,
    /// Where the bytes served are counted (as carried over the mesh).
    pub traffic: ServiceTraffic,
}

/// Serves one forwarded connection on this node.
pub async fn serve(
    here: Here,
    caller: Option<String>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // Boxed, and `answer` borrows what this future owns: the wait for the
    // `TunnelOpen` and a second copy of each argument would otherwise stay
    // in the state of every held connection.
    let open = match Box::pin(read_open(&mut recv)).await {
        Ok(open) => open,
        Err(why) => {
            warn!(caller = ?caller, answer = %why, "refused a malformed forwarded connection");
            let _ = send.reset(0u32.into());
            return;
        }
    };
    let span = debug_span!("conn", service = %open.service, client = %open.client, from = ?caller);
    answer(&here, &open, &caller, &mut send, &mut recv)
        .instrument(span)
        .await
}

/// The `TunnelOpen` a forwarded connection starts with, or what came
/// instead (for the log).
async fn read_open(recv: &mut quinn::RecvStream) -> Result<TunnelOpen, String> {
    match tokio::time::timeout(OPEN_TIMEOUT, read_frame::<TunnelOpen>(recv)).await {
        Ok(Ok(Some(open))) => Ok(open),
        Ok(Ok(None)) => Err("the stream ended".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("nothing within {OPEN_TIMEOUT:?}")),
    }
}

/// Serves a forwarded connection once its `TunnelOpen` arrived.
async fn answer(
    here: &Here,
    open: &TunnelOpen,
    caller: &Option<String>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) {
    // A peer whose view is a round old may not know our pull failed yet:
    // say so rather than pull again for its client.
    let image = here.images.borrow().statuses.get(&open.service).cloned();
    if let Some(ImageStatus::Failed(why)) = image {
        let reply = TunnelReply::Failed(format!("this node cannot get the image: {why}"));
        let _ = write_frame(send, &reply).await;
        let _ = send.finish();
        return;
    }
    let reply = match Box::pin(here.backend.acquire(&open.service)).await {
        Ok(mut lease) => {
            let ready = TunnelReply::Ready {
                container: lease.container.clone(),
            };
            if write_frame(send, &ready).await.is_err() {
                return;
            }
            debug!(service = %open.service, client = %open.client, caller = ?caller, container = %lease.container, "serving a forwarded connection");
            let (sr, sw) = lease.stream.split();
            let bytes = Bytes::default();
            let way = pump(
                (Source::Quic(recv), Sink::Quic(send)),
                (Source::tcp(sr), Sink::Tcp(sw)),
                &bytes,
            )
            .await;
            if way == Way::Aborted {
                // The container's side failed, or the client's did: the
                // other end hears a reset, not an end of stream.
                let _ = send.reset(ABORTED);
                let _ = recv.stop(ABORTED);
            }
            // The peer is the client's side: what it sent came in.
            let (received, sent) = bytes.totals();
            here.traffic.carried_mesh(sent, received);
            return;
        }
        // Not merged here yet (a new definition spreads within a round or
        // two): another node, or later.
        Err(AcquireError::Gone(name)) => {
            TunnelReply::Full(format!("service {name} is not served here yet"))
        }
        Err(e) if e.is_failure() => TunnelReply::Failed(e.to_string()),
        Err(e) => TunnelReply::Full(e.to_string()),
    };
    let _ = write_frame(send, &reply).await;
    let _ = send.finish();
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}
