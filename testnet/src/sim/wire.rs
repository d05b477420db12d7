//! The simulator's wire: chitchat's in-memory transport, with every
//! message put through the agents' compact gossip form
//! (`mesh_protocol::digest_codec`) and back, so the simulated mesh runs on
//! what the agents' wire carries, and both sizes are counted.
//!
//! As in the agents, a SYN-ACK is coded against the SYN it answers
//! (`digest_codec::Answering`, the same code as theirs). The initiator expands the answer
//! against the SYN it sent, which is that SYN byte for byte; here the
//! answering side's copy stands in for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chitchat::transport::{ChannelTransport, Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use mesh_protocol::digest_codec::{self, Answering};

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
    coded_answers: bool,
}

impl CompactWire {
    /// Messages sent through this wire so far.
    pub fn messages(&self) -> u64 {
        self.bytes.count()
    }

    /// `coded_answers`: SYN-ACKs coded against their SYN, as the agents
    /// send them; otherwise whole.
    pub fn new(inner: ChannelTransport, coded_answers: bool) -> (Self, Arc<WireBytes>) {
        let bytes = Arc::new(WireBytes::default());
        (
            Self {
                inner,
                bytes: bytes.clone(),
                coded_answers,
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
            answering: Answering::default(),
            coded_answers: self.coded_answers,
        }))
    }
}

struct CompactSocket {
    inner: Box<dyn Socket>,
    bytes: Arc<WireBytes>,
    /// The SYN being answered, as in the agents' transport.
    answering: Answering,
    coded_answers: bool,
}

#[async_trait]
impl Socket for CompactSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let mut plain = Vec::with_capacity(msg.serialized_len());
        msg.serialize(&mut plain);
        let (compact, syn) = self.answering.compact(to, &plain)?;
        let expanded = match &syn {
            Some(syn) => digest_codec::expand_answer(&compact, syn, digest_codec::MAX_MESSAGE)?,
            None => {
                let back = digest_codec::expand(&compact, digest_codec::MAX_MESSAGE)?;
                anyhow::ensure!(back == plain, "the compact form did not round-trip");
                back
            }
        };
        self.bytes
            .chitchat
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        self.bytes
            .compact
            .fetch_add(compact.len() as u64, Ordering::Relaxed);
        self.bytes.messages.fetch_add(1, Ordering::Relaxed);
        let msg = ChitchatMessage::deserialize(&mut expanded.as_slice())?;
        self.inner.send(to, msg).await
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        let (from, msg) = self.inner.recv().await?;
        let syn = (self.coded_answers && matches!(msg, ChitchatMessage::Syn { .. })).then(|| {
            let mut plain = Vec::with_capacity(msg.serialized_len());
            msg.serialize(&mut plain);
            plain
        });
        self.answering.received(from, syn);
        Ok((from, msg))
    }
}
