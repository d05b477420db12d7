//! The client side of services: the connections a service's listener
//! (`listeners`) accepts, and for each the choice of node (pure, in
//! `mesh_protocol::service::choice`), then the bytes pumped to a local
//! container or through a QUIC stream to the chosen peer. When no node has
//! room the connection waits here, in a bounded queue, until one has or
//! `--queue-timeout` passes; then it is closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_protocol::NodeId;
use mesh_protocol::gossip::{PeerState, PeerView};
use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::choice::{route_per_connection, route_pool};
use mesh_protocol::service::{Mode, ServiceSpec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use super::backend::{AcquireError, Backend, Lease};
use super::ports::MeshPort;
use super::pump::pump;
use super::stats::{Count, Stats};
use super::tunnel::{self, Tunnel, TunnelError};
use crate::clock::deadline_after;
use crate::mesh::candidates_of;

/// How old a cached gossip view may be when routing a connection.
const VIEW_TTL: Duration = Duration::from_millis(100);
/// How often a waiting connection looks again for room elsewhere.
const RETRY: Duration = Duration::from_millis(100);

/// What routing reads of the gossip view, computed once per `VIEW_TTL`
/// rather than per connection.
struct RouteView {
    peers: Vec<PeerView>,
    candidates: Vec<mesh_protocol::load::Candidate>,
}

/// Where one connection goes.
enum Routed {
    Local(Lease),
    Remote(Tunnel, NodeId),
    NoRoom,
    /// The service's containers fail to start where they were tried.
    Failed(Failure),
}

/// Why a connection was let go rather than queued.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Local(AcquireError),
    #[error("{node}: {error}")]
    Remote { node: NodeId, error: TunnelError },
}

pub struct Front<M> {
    mesh: M,
    backend: Backend,
    stats: Stats,
    view: Mutex<Option<(Instant, Arc<RouteView>)>>,
    /// Spreads ties between equal nodes across connections.
    salt: std::sync::atomic::AtomicU64,
    /// The accept loops and the connections they serve.
    tasks: TaskTracker,
}

impl<M: MeshPort> Front<M> {
    pub fn new(mesh: M, backend: Backend, stats: Stats) -> Arc<Self> {
        Arc::new(Self {
            mesh,
            backend,
            stats,
            view: Mutex::new(None),
            salt: std::sync::atomic::AtomicU64::new(0),
            tasks: TaskTracker::new(),
        })
    }

    /// Accepts `listener`'s clients until `stop`, serving each with the
    /// definition `spec` holds then.
    pub(super) fn accept(
        self: &Arc<Self>,
        listener: TcpListener,
        spec: watch::Receiver<Arc<ServiceSpec>>,
        stop: CancellationToken,
    ) {
        self.tasks
            .spawn(self.clone().accept_loop(listener, spec, stop));
    }

    /// Waits (up to `deadline`) for the accept loops and the connections
    /// in flight to end.
    pub async fn drain(&self, deadline: Duration) {
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            info!(
                connections = self.tasks.len(),
                "service connections still open at shutdown; they end with the agent"
            );
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        spec: watch::Receiver<Arc<ServiceSpec>>,
        stop: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((client, peer)) => {
                    let _ = client.set_nodelay(true);
                    let spec = spec.borrow().clone();
                    let span = debug_span!("conn", service = %spec.name, client = %peer);
                    self.tasks
                        .spawn(self.clone().handle(spec, client, peer).instrument(span));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    warn!(service = %spec.borrow().name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one client connection to its end; a refused one is closed
    /// gently (see `refuse`).
    async fn handle(
        self: Arc<Self>,
        spec: Arc<ServiceSpec>,
        mut client: TcpStream,
        peer: SocketAddr,
    ) {
        if !self.serve(&spec, &mut client, peer).await {
            refuse(client).await;
        }
    }

    /// Returns whether the connection was served.
    async fn serve(&self, spec: &ServiceSpec, client: &mut TcpStream, peer: SocketAddr) -> bool {
        let name = &spec.name;
        self.stats.count(name, Count::Accepted);
        let deadline = deadline_after(Duration::from_millis(spec.queue_timeout_ms));
        let mut waiting = None;
        loop {
            let released = self.backend.released.notified();
            match self.route(spec, peer).await {
                Routed::Local(mut lease) => {
                    let me = self.mesh.node();
                    let open = self.stats.open(name, peer, me, lease.container.clone());
                    drop(waiting);
                    let (cr, cw) = client.split();
                    let (sr, sw) = lease.stream.split();
                    pump((cr, cw), (sr, sw), &open.bytes).await;
                    self.stats.count(name, Count::Served);
                    return true;
                }
                Routed::Remote(t, node) => {
                    let open = self.stats.open(name, peer, node, t.container.clone());
                    drop(waiting);
                    let (cr, cw) = client.split();
                    pump((cr, cw), (t.recv, t.send), &open.bytes).await;
                    self.stats.count(name, Count::Served);
                    return true;
                }
                Routed::Failed(why) => {
                    warn!(service = %name, client = %peer, error = %why, "connection refused: the service's containers fail to start");
                    self.stats.count(name, Count::Refused);
                    return false;
                }
                Routed::NoRoom => {}
            }
            if waiting.is_none() {
                match self.backend.enqueue(name).await {
                    Some(guard) => {
                        self.stats.count(name, Count::Queued);
                        waiting = Some(guard);
                    }
                    None => {
                        info!(service = %name, client = %peer, "connection refused: no room and the queue is full");
                        self.stats.count(name, Count::Refused);
                        return false;
                    }
                }
            }
            if Instant::now() >= deadline {
                info!(service = %name, client = %peer, "connection refused: no room within --queue-timeout");
                self.stats.count(name, Count::Refused);
                return false;
            }
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep(RETRY) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Tries the nodes in the order the view suggests, this node last if
    /// the view did not name it (its own state is exact, the view is not).
    async fn route(&self, spec: &ServiceSpec, client: SocketAddr) -> Routed {
        let view = self.view().await;
        let me = self.mesh.node();
        let candidates = &view.candidates;
        let mut loads: BTreeMap<NodeId, ServiceLoad> = view
            .peers
            .iter()
            .filter_map(|p| {
                let load = p.info.as_ref()?.services.get(spec.name.as_str())?;
                Some((p.node.clone(), load.clone()))
            })
            .collect();
        // This node's own figures are exact; the gossip's are a round old.
        if let Some(own) = self.backend.load(&spec.name) {
            loads.insert(me.clone(), own);
        }
        let salt = self.salt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut order = match spec.mode {
            Mode::PerConnection => route_per_connection(&me, spec, candidates, &loads, salt),
            Mode::Pool => route_pool(&me, candidates, &loads, salt),
        };
        if !order.contains(&me) {
            order.push(me.clone());
        }
        let wait = Duration::from_millis(spec.ready_timeout_ms)
            .saturating_mul(spec.ready_retries.saturating_add(1))
            .saturating_add(Duration::from_secs(5));
        // A node whose containers fail (a broken image there, Docker down)
        // does not stop the search; if no node serves, the client is let go
        // rather than queued.
        let mut failed = None;
        for node in order {
            if node == me {
                match self.backend.acquire(&spec.name).await {
                    Ok(lease) => return Routed::Local(lease),
                    Err(e) if e.is_failure() => failed = Some(Failure::Local(e)),
                    Err(e) => debug!(service = %spec.name, error = %e, "no local container"),
                }
                continue;
            }
            let Some(addr) = view
                .peers
                .iter()
                .find(|p| p.node == node && p.state == PeerState::Alive)
                .map(|p| p.gossip_addr)
            else {
                continue;
            };
            match tunnel::open(&self.mesh, addr, &spec.name, client, wait).await {
                Ok(t) => return Routed::Remote(t, node),
                Err(error) if error.is_failure() => failed = Some(Failure::Remote { node, error }),
                Err(e) => {
                    debug!(service = %spec.name, %node, error = %e, "peer did not take the connection")
                }
            }
        }
        match failed {
            Some(why) => Routed::Failed(why),
            None => Routed::NoRoom,
        }
    }

    async fn view(&self) -> Arc<RouteView> {
        if let Some((at, v)) = lock(&self.view).as_ref()
            && at.elapsed() < VIEW_TTL
        {
            return v.clone();
        }
        let peers = self.mesh.peers().await;
        let fresh = Arc::new(RouteView {
            candidates: candidates_of(&peers),
            peers,
        });
        *lock(&self.view) = Some((Instant::now(), fresh.clone()));
        fresh
    }
}

/// Closes a refused connection without a reset: says end-of-stream, then
/// reads (and drops) what the client still sends, for a moment, so the
/// kernel does not answer unread data with RST.
async fn refuse(mut client: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<M> std::fmt::Debug for Front<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}
