//! What service connections carry, counted where they are served: the
//! setup time of each, observed once it has a container, and the bytes
//! it moved, added once when it closes (the pump counts into the
//! connection's own counters as it goes; nothing here is touched per read
//! or write). Shared by every clone (the services' `Stats` hands it out)
//! and read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::timings::SetupTimes;

/// This node's service connections: setup times and bytes forwarded.
#[derive(Debug, Clone, Default)]
pub struct ServiceTraffic {
    pub setup: SetupTimes,
    bytes: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    to_container: AtomicU64,
    to_client: AtomicU64,
    mesh_sent: AtomicU64,
    mesh_received: AtomicU64,
}

/// Bytes of closed service connections, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// From clients to containers on this host (client and container both
    /// here).
    pub to_container: u64,
    /// From containers on this host back to their clients.
    pub to_client: u64,
    /// Sent to peers over QUIC: a client's bytes for a container there
    /// (this node accepted the connection), or a container's reply to a
    /// client a peer accepted (this node serves it).
    pub mesh_sent: u64,
    /// Received from peers over QUIC, the other way.
    pub mesh_received: u64,
}

impl ServiceTraffic {
    /// A connection between a client and a container on this host closed.
    pub fn carried_local(&self, to_container: u64, to_client: u64) {
        self.bytes
            .to_container
            .fetch_add(to_container, Ordering::Relaxed);
        self.bytes.to_client.fetch_add(to_client, Ordering::Relaxed);
    }

    /// A connection forwarded through a peer (either way) closed.
    pub fn carried_mesh(&self, sent: u64, received: u64) {
        self.bytes.mesh_sent.fetch_add(sent, Ordering::Relaxed);
        self.bytes
            .mesh_received
            .fetch_add(received, Ordering::Relaxed);
    }

    pub fn forwarded(&self) -> Forwarded {
        let b = &self.bytes;
        Forwarded {
            to_container: b.to_container.load(Ordering::Relaxed),
            to_client: b.to_client.load(Ordering::Relaxed),
            mesh_sent: b.mesh_sent.load(Ordering::Relaxed),
            mesh_received: b.mesh_received.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_counts() {
        let t = ServiceTraffic::default();
        let other = t.clone();
        t.carried_local(5, 7);
        other.carried_mesh(3, 4);
        other.carried_local(1, 0);
        assert_eq!(
            t.forwarded(),
            Forwarded {
                to_container: 6,
                to_client: 7,
                mesh_sent: 3,
                mesh_received: 4
            }
        );
    }
}
