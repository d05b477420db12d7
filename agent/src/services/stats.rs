//! What this node counts about services: per-service counters for the
//! connections it accepted, and the table of its open connections with live
//! byte counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_protocol::api::{ConnectionView, ServiceCounters};
use mesh_protocol::{NodeId, ServiceName};
use tokio::time::Instant;

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Accepted,
    Served,
    Queued,
    Refused,
    FailedStart,
}

/// Byte counters one forwarded connection updates as it goes.
#[derive(Debug, Default)]
pub struct Bytes {
    pub inbound: AtomicU64,
    pub outbound: AtomicU64,
}

struct Open {
    service: ServiceName,
    client: SocketAddr,
    node: NodeId,
    container: String,
    bytes: Arc<Bytes>,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<ServiceName, ServiceCounters>,
    open: BTreeMap<u64, Open>,
    next: u64,
}

/// Shared by the listeners and the report; cheap to clone.
#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

/// Removes its connection from the table when dropped.
pub struct OpenGuard {
    stats: Stats,
    id: u64,
    pub bytes: Arc<Bytes>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.stats.lock().open.remove(&self.id);
    }
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self, service: &ServiceName, what: Count) {
        let mut inner = self.lock();
        let c = inner.counters.entry(service.clone()).or_default();
        match what {
            Count::Accepted => c.accepted += 1,
            Count::Served => c.served += 1,
            Count::Queued => c.queued += 1,
            Count::Refused => c.refused += 1,
            Count::FailedStart => c.failed_starts += 1,
        }
    }

    pub fn counters(&self, service: &ServiceName) -> ServiceCounters {
        self.lock()
            .counters
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Records an open connection until the guard drops.
    pub fn open(
        &self,
        service: &ServiceName,
        client: SocketAddr,
        node: NodeId,
        container: String,
    ) -> OpenGuard {
        let bytes = Arc::new(Bytes::default());
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.open.insert(
            id,
            Open {
                service: service.clone(),
                client,
                node,
                container,
                bytes: bytes.clone(),
                since: Instant::now(),
            },
        );
        OpenGuard {
            stats: self.clone(),
            id,
            bytes,
        }
    }

    pub fn connections(&self, entry: &NodeId) -> Vec<ConnectionView> {
        self.lock()
            .open
            .iter()
            .map(|(id, o)| ConnectionView {
                id: *id,
                service: o.service.clone(),
                client: o.client,
                entry: entry.clone(),
                node: o.node.clone(),
                container: o.container.clone(),
                bytes_in: o.bytes.inbound.load(Ordering::Relaxed),
                bytes_out: o.bytes.outbound.load(Ordering::Relaxed),
                age_ms: o.since.elapsed().as_millis() as u64,
            })
            .collect()
    }
}

impl std::fmt::Debug for OpenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenGuard").finish_non_exhaustive()
    }
}
