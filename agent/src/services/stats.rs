//! What this node counts about services: per-service counters for the
//! connections it accepted, and the table of its open connections with live
//! byte counts. One task owns both; listeners and connections tell it what
//! happened over a channel (never waiting), and the report asks it for a
//! snapshot, which reflects everything told before the asking.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_protocol::api::{ConnectionView, ServiceCounters};
use mesh_protocol::{NodeId, ServiceName};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::ServiceTraffic;

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

impl Bytes {
    /// (inbound, outbound) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.inbound.load(Ordering::Relaxed),
            self.outbound.load(Ordering::Relaxed),
        )
    }
}

struct Open {
    service: ServiceName,
    client: SocketAddr,
    node: NodeId,
    container: String,
    bytes: Arc<Bytes>,
    since: Instant,
}

enum Event {
    Count(ServiceName, Count),
    Forget(ServiceName),
    Open(u64, Open),
    Close(u64),
    Snapshot(oneshot::Sender<Snapshot>),
}

/// The counters and open connections at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    counters: BTreeMap<ServiceName, ServiceCounters>,
    open: Vec<ConnectionView>,
}

impl Snapshot {
    pub fn counters(&self, service: &ServiceName) -> ServiceCounters {
        self.counters.get(service).cloned().unwrap_or_default()
    }

    /// The open connections this node accepted, `entry` being this node.
    pub fn connections(self, entry: &NodeId) -> Vec<ConnectionView> {
        self.open
            .into_iter()
            .map(|mut c| {
                c.entry = entry.clone();
                c
            })
            .collect()
    }
}

/// Tells the stats task what happened; cheap to clone.
#[derive(Clone)]
pub struct Stats {
    tx: mpsc::UnboundedSender<Event>,
    next: Arc<AtomicU64>,
    /// Setup times and bytes forwarded, counted where they happen (not
    /// through the task) and read by /metrics.
    traffic: ServiceTraffic,
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
        // The task is gone only once every Stats is: nothing to tell then.
        let _ = self.stats.tx.send(Event::Close(self.id));
    }
}

impl std::fmt::Debug for OpenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenGuard").finish_non_exhaustive()
    }
}

impl Stats {
    /// Starts the task that owns the figures; it ends at `stop` (or when
    /// the last `Stats` and `OpenGuard` are dropped). After it ended,
    /// snapshots are empty.
    pub fn spawn(stop: CancellationToken) -> (Stats, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let join = tokio::spawn(own(rx, stop));
        (
            Stats {
                tx,
                next: Arc::new(AtomicU64::new(0)),
                traffic: ServiceTraffic::default(),
            },
            join,
        )
    }

    /// Connection setup times and bytes forwarded (shared by every clone).
    pub fn traffic(&self) -> &ServiceTraffic {
        &self.traffic
    }

    pub fn count(&self, service: &ServiceName, what: Count) {
        let _ = self.tx.send(Event::Count(service.clone(), what));
    }

    /// Drops a removed service's counters, so one created again under its
    /// name starts from zero. Its open connections stay listed until they
    /// close.
    pub fn forget(&self, service: &ServiceName) {
        let _ = self.tx.send(Event::Forget(service.clone()));
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
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let open = Open {
            service: service.clone(),
            client,
            node,
            container,
            bytes: bytes.clone(),
            since: Instant::now(),
        };
        let _ = self.tx.send(Event::Open(id, open));
        OpenGuard {
            stats: self.clone(),
            id,
            bytes,
        }
    }

    /// The figures, including everything told before this call.
    pub async fn snapshot(&self) -> Snapshot {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Event::Snapshot(reply)).is_err() {
            return Snapshot::default();
        }
        answer.await.unwrap_or_default()
    }
}

/// The stats task: applies events in the order they were sent.
async fn own(mut rx: mpsc::UnboundedReceiver<Event>, stop: CancellationToken) {
    let mut counters: BTreeMap<ServiceName, ServiceCounters> = BTreeMap::new();
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            Event::Count(service, what) => {
                let c = counters.entry(service).or_default();
                let n = match what {
                    Count::Accepted => &mut c.accepted,
                    Count::Served => &mut c.served,
                    Count::Queued => &mut c.queued,
                    Count::Refused => &mut c.refused,
                    Count::FailedStart => &mut c.failed_starts,
                };
                *n = n.saturating_add(1);
            }
            Event::Forget(service) => {
                counters.remove(&service);
            }
            Event::Open(id, o) => {
                open.insert(id, o);
            }
            Event::Close(id) => {
                open.remove(&id);
            }
            Event::Snapshot(reply) => {
                let _ = reply.send(Snapshot {
                    counters: counters.clone(),
                    open: open.iter().map(|(id, o)| view(*id, o)).collect(),
                });
            }
        }
    }
}

fn view(id: u64, o: &Open) -> ConnectionView {
    ConnectionView {
        id,
        service: o.service.clone(),
        client: o.client,
        // Filled in by `Snapshot::connections`.
        entry: o.node.clone(),
        node: o.node.clone(),
        container: o.container.clone(),
        bytes_in: o.bytes.inbound.load(Ordering::Relaxed),
        bytes_out: o.bytes.outbound.load(Ordering::Relaxed),
        age_ms: o.since.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_sees_everything_told_before_it() {
        let stop = CancellationToken::new();
        let (stats, join) = Stats::spawn(stop.clone());
        let svc = ServiceName::new("echo").unwrap();
        let node = NodeId::new("n1").unwrap();
        stats.count(&svc, Count::Accepted);
        stats.count(&svc, Count::Served);
        let guard = stats.open(
            &svc,
            "127.0.0.1:5000".parse().unwrap(),
            node.clone(),
            "c1".into(),
        );
        guard.bytes.inbound.fetch_add(7, Ordering::Relaxed);
        let snap = stats.snapshot().await;
        let c = snap.counters(&svc);
        assert_eq!((c.accepted, c.served, c.refused), (1, 1, 0));
        let open = snap.connections(&node);
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].bytes_in, open[0].container.as_str()), (7, "c1"));
        drop(guard);
        assert!(stats.snapshot().await.connections(&node).is_empty());
        // Removed, then created again: it starts from zero; others keep theirs.
        let other = ServiceName::new("web").unwrap();
        stats.count(&other, Count::Refused);
        stats.forget(&svc);
        let snap = stats.snapshot().await;
        assert_eq!(snap.counters(&svc), ServiceCounters::default());
        assert_eq!(snap.counters(&other).refused, 1);
        stop.cancel();
        join.await.unwrap();
        assert!(stats.snapshot().await.connections(&node).is_empty());
    }
}
