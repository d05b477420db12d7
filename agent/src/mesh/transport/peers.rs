//! What the endpoint knows of its peers (live connections, the node name
//! each address proved, the connections each peer dialled to us) and the
//! counters of what it refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use quinn::Connection;

use super::super::gossip_check::Refusal;
use super::super::tls;

/// What the endpoint knows of its peers: live connections and the node name
/// each address proved with its certificate.
#[derive(Debug, Default)]
pub struct Peers {
    inner: Mutex<PeersInner>,
}

#[derive(Debug, Default)]
struct PeersInner {
    connections: HashMap<SocketAddr, Connection>,
    names: HashMap<SocketAddr, String>,
    /// Connections peers dialled to us, oldest first, by who dialled (the
    /// certificate's name, else the address).
    accepted: HashMap<String, VecDeque<Connection>>,
}

impl Peers {
    fn lock(&self) -> MutexGuard<'_, PeersInner> {
        // Poisoning only follows a panic elsewhere; the maps stay consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, conn: &Connection) {
        let addr = conn.remote_address();
        let mut inner = self.lock();
        if let Some(name) = tls::peer_node_name(conn) {
            inner.names.insert(addr, name);
        }
        inner.connections.insert(addr, conn.clone());
    }

    /// Keeps an accepted connection, and returns the oldest ones of the
    /// same peer beyond [`super::MAX_CONNECTIONS_PER_PEER`] (for the caller to
    /// close): a peer normally holds one or two (one each way, plus a
    /// stale one for a moment after a restart), and the newest is the one
    /// it uses.
    pub(super) fn accepted(&self, conn: &Connection) -> Vec<Connection> {
        let who = tls::peer_node_name(conn).unwrap_or_else(|| conn.remote_address().to_string());
        let mut inner = self.lock();
        inner
            .accepted
            .retain(|_, conns| conns.iter().any(|c| c.close_reason().is_none()));
        let conns = inner.accepted.entry(who).or_default();
        conns.retain(|c| c.close_reason().is_none());
        conns.push_back(conn.clone());
        let extra = conns.len().saturating_sub(super::MAX_CONNECTIONS_PER_PEER);
        conns.drain(..extra).collect()
    }

    pub(super) fn live(&self, addr: &SocketAddr) -> Option<Connection> {
        let mut inner = self.lock();
        match inner.connections.get(addr) {
            Some(c) if c.close_reason().is_none() => Some(c.clone()),
            Some(_) => {
                inner.connections.remove(addr);
                None
            }
            None => None,
        }
    }

    /// The node name the peer at `addr` proved, if it ever connected.
    pub fn name_at(&self, addr: &SocketAddr) -> Option<String> {
        self.lock().names.get(addr).cloned()
    }
}

/// Counters of refused input, for logs and tests.
#[derive(Debug, Default)]
pub struct Refusals {
    pub handshakes: AtomicU64,
    pub messages: AtomicU64,
    /// Handshakes refused because the peer speaks another RPC version.
    pub versions: AtomicU64,
    /// Dials refused because the certificate at the address names another
    /// node than the one meant.
    pub identities: AtomicU64,
    /// Accepted connections closed because their peer held too many.
    pub connections: AtomicU64,
    /// Gossip messages refused, by reason ([`Refusal::reason`]).
    gossip: Mutex<BTreeMap<&'static str, u64>>,
}

impl Refusals {
    /// Counts a refused gossip message; returns how many of its reason so far.
    pub(super) fn gossip_refused(&self, refusal: &Refusal) -> u64 {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let mut by_reason = self.gossip.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_reason.entry(refusal.reason()).or_default();
        *n += 1;
        *n
    }

    /// Gossip messages refused so far, by reason.
    pub fn gossip(&self) -> BTreeMap<&'static str, u64> {
        self.gossip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
