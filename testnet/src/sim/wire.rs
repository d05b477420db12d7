//! The simulator's wire: chitchat's in-memory transport, with every
//! message put through the agents' compact gossip form
//! (`mesh_protocol::digest_codec`) and back, so the simulated mesh runs on
//! what the agents' wire carries, and both sizes are counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chitchat::transport::{ChannelTransport, Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use mesh_protocol::digest_codec;

/// Bytes sent, in chitchat's form and in the compact one.
#[derive(Debug, Default)]
pub struct WireBytes {
    pub chitchat: AtomicU64,
    pub compact: AtomicU64,
    messages: AtomicU64,
}

impl WireBytes {
    /// Messages sent.
    fn count(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn totals(&self) -> (u64, u64) {
        (
            self.chitchat.load(Ordering::Relaxed),
            self.compact.load(Ordering::Relaxed),
        )
    }
}

pub struct CompactWire {
    inner: ChannelTransport,
    bytes: Arc<WireBytes>,
}

impl CompactWire {
    /// Messages sent through this wire so far.
    pub fn messages(&self) -> u64 {
        self.bytes.count()
    }

    pub fn new(inner: ChannelTransport) -> (Self, Arc<WireBytes>) {
        let bytes = Arc::new(WireBytes::default());
        (
            Self {
                inner,
                bytes: bytes.clone(),
            },
            bytes,
        )
    }
}

#[async_trait]
impl Transport for CompactWire {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(CompactSocket {
            inner: self.inner.open(listen_addr).await?,
            bytes: self.bytes.clone(),
        }))
    }
}

struct CompactSocket {
    inner: Box<dyn Socket>,
    bytes: Arc<WireBytes>,
}

#[async_trait]
impl Socket for CompactSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let mut plain = Vec::with_capacity(msg.serialized_len());
        msg.serialize(&mut plain);
        let compact = digest_codec::compact(&plain)?;
        self.bytes
            .chitchat
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        self.bytes
            .compact
            .fetch_add(compact.len() as u64, Ordering::Relaxed);
        self.bytes.messages.fetch_add(1, Ordering::Relaxed);
        let expanded = digest_codec::expand(&compact, digest_codec::MAX_MESSAGE)?;
        anyhow::ensure!(expanded == plain, "the compact form did not round-trip");
        let msg = ChitchatMessage::deserialize(&mut expanded.as_slice())?;
        self.inner.send(to, msg).await
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.inner.recv().await
    }
}
