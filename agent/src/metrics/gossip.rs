//! What gossip costs this node: bytes and messages through the chitchat
//! transport (`mesh::transport`), counted as they are sent and read with
//! relaxed atomics, and read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// A gossip message's type, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipKind {
    /// Starts an exchange: this node's digest.
    Syn,
    /// The answer to a SYN: the delta and the answering node's digest.
    SynAck,
    /// The last message of an exchange: the delta the SYN-ACK asked for.
    Ack,
    /// The answer to a SYN from another cluster.
    BadCluster,
}

impl GossipKind {
    pub const ALL: [GossipKind; 4] = [
        GossipKind::Syn,
        GossipKind::SynAck,
        GossipKind::Ack,
        GossipKind::BadCluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GossipKind::Syn => "syn",
            GossipKind::SynAck => "synack",
            GossipKind::Ack => "ack",
            GossipKind::BadCluster => "bad_cluster",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Gossip counted since start; shared by the transport's tasks.
#[derive(Debug, Default)]
pub struct GossipCounts {
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    sent: [AtomicU64; 4],
    received: [AtomicU64; 4],
}

/// What [`GossipCounts`] held at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipTraffic {
    /// Bytes of gossip messages written to peers' streams (each message
    /// with its kind byte; QUIC's own overhead not included).
    pub sent_bytes: u64,
    /// Bytes of gossip streams read from peers, refused ones included.
    pub received_bytes: u64,
    /// Messages sent, by kind (in `GossipKind::ALL` order).
    pub sent: [u64; 4],
    /// Messages received that passed the checks, by kind.
    pub received: [u64; 4],
}

impl GossipCounts {
    /// A message of `kind`, `bytes` long, went out on a peer's stream.
    pub fn sent(&self, kind: GossipKind, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.sent[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A gossip stream of `bytes` was read (before its checks).
    pub fn read(&self, bytes: usize) {
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A message of `kind` passed the checks.
    pub fn received(&self, kind: GossipKind) {
        self.received[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> GossipTraffic {
        let load = |a: &[AtomicU64; 4]| a.each_ref().map(|n| n.load(Ordering::Relaxed));
        GossipTraffic {
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            sent: load(&self.sent),
            received: load(&self.received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_count_by_kind_and_bytes_add_up() {
        let c = GossipCounts::default();
        c.sent(GossipKind::Syn, 10);
        c.sent(GossipKind::Syn, 12);
        c.sent(GossipKind::Ack, 5);
        c.read(40);
        c.received(GossipKind::SynAck);
        let t = c.snapshot();
        assert_eq!((t.sent_bytes, t.received_bytes), (27, 40));
        assert_eq!(t.sent, [2, 0, 1, 0]);
        assert_eq!(t.received, [0, 1, 0, 0]);
    }
}
