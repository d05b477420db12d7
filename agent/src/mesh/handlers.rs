//! What serves the streams peers open: a handler per RPC topic, one for
//! forwarded service connections and one for images sent to peers. The parts of the agent register theirs
//! once they exist, after the mesh has started; a call that arrives before
//! its part registered is answered "unavailable", and a tunnel is reset.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use mesh_protocol::NodeId;
use mesh_protocol::rpc::{Request, Response, Topic};

/// How a handler answers a call.
pub enum Reply {
    One(Response),
    Stream(BoxStream<'static, Response>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::One(r) => f.debug_tuple("One").field(r).finish(),
            Reply::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Who called: the node its certificate names (None: the certificate names
/// no valid node id, as with a foreign tool under `--insecure-dev`).
pub type Caller = Option<NodeId>;

/// Answers the calls of one topic.
pub type RpcHandler = Arc<dyn Fn(Caller, Request) -> BoxFuture<'static, Reply> + Send + Sync>;

/// Serves a stream of its own kind (a forwarded service connection, an
/// image), its kind byte already read.
pub type TunnelHandler = Arc<
    dyn Fn(Caller, quinn::SendStream, quinn::RecvStream) -> BoxFuture<'static, ()> + Send + Sync,
>;

/// The registered handlers; shared by the transport and the mesh handle.
#[derive(Default)]
pub struct Handlers {
    calls: RwLock<HashMap<Topic, RpcHandler>>,
    tunnels: RwLock<Option<TunnelHandler>>,
    images: RwLock<Option<TunnelHandler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}

impl Handlers {
    /// Serves `topic` with `handler` from now on (replacing an earlier one).
    pub fn register_calls(&self, topic: Topic, handler: RpcHandler) {
        // A poisoned lock only follows a panic elsewhere; the map is whole.
        self.calls
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic, handler);
    }

    pub fn register_tunnels(&self, handler: TunnelHandler) {
        *self.tunnels.write().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    pub fn register_images(&self, handler: TunnelHandler) {
        *self.images.write().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// The handler of streams of `kind` (tunnels or images), if registered.
    pub fn streams(&self, kind: u8) -> Option<TunnelHandler> {
        let slot = match kind {
            mesh_protocol::rpc::KIND_TUNNEL => &self.tunnels,
            mesh_protocol::rpc::KIND_IMAGE => &self.images,
            _ => return None,
        };
        slot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn calls(&self, topic: Topic) -> Option<RpcHandler> {
        self.calls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&topic)
            .cloned()
    }

    pub fn tunnels(&self) -> Option<TunnelHandler> {
        self.tunnels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub type SharedHandlers = Arc<Handlers>;
