//! The client side of services: the connections a service's listener
//! (`listeners`) accepts, and for each the choice of node (pure, in
//! `mesh_protocol::service::choice`), then the bytes pumped to a local
//! container or through a QUIC stream to the chosen peer. Nodes whose pull
//! of the service's image failed are not tried (this node's own status is
//! exact, the others' come from the gossip, see `prepull`). A connection
//! beyond this agent's caps (`admission`) is refused at once. When no node
//! has room the connection waits here, in a bounded queue, until one has or
//! `--queue-timeout` passes; then it is closed. A served connection is
//! closed when idle for the service's idle timeout, or open for its total
//! timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_protocol::NodeId;
use mesh_protocol::gossip::PeerView;
use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::choice::{image_usable, route_per_connection, route_pool};
use mesh_protocol::service::image::{NodeImage, node_images};
use mesh_protocol::service::{Mode, ServiceSpec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use super::admission::{Admission, Permit, Refusal};
use super::backend::{AcquireError, Backend, Lease};
use super::ends::{Sink, Source};
use super::ports::MeshPort;
use super::prepull::ImagesView;
use super::pump::{Ended, Timeouts, pump_within};
use super::stats::{Count, Stats};
use super::tunnel::{self, Tunnel, TunnelError};
use crate::clock::deadline_after;
use crate::mesh::candidates_of;
use crate::metrics::Route;

/// How old a cached gossip view may be when routing a connection; also
/// how often a waiting connection looks whether the view changed.
const VIEW_TTL: Duration = Duration::from_millis(100);
/// A waiting connection routes again when a local container frees up, when
/// the view shows other nodes or figures, and otherwise after this long,
/// doubling up to `RETRY_MAX` (a node's room may not show in the gossip).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Refused connections being closed gently at once; beyond this they are
/// just dropped (a flood must not pile up sockets).
const REFUSING: usize = 256;
/// How often refusals at the caps are logged at warn level.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What routing reads of the gossip view, computed once per `VIEW_TTL`
/// rather than per connection.
struct RouteView {
    peers: Vec<PeerView>,
    candidates: Vec<mesh_protocol::load::Candidate>,
}

/// The backend found for a connection.
enum Found {
    Local(Lease),
    Remote(Tunnel, NodeId),
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
    /// This node's images of the services.
    images: ImagesView,
    /// This agent's caps on open client connections.
    admission: Admission,
    /// Places for gentle refusals (see `REFUSING`).
    refusing: Arc<Semaphore>,
    /// When a refusal at the caps was last logged at warn, and how many
    /// were refused since.
    refusals: Mutex<(Option<Instant>, u64)>,
    view: Mutex<Option<(Instant, Arc<RouteView>)>>,
    /// Spreads ties between equal nodes across connections.
    salt: std::sync::atomic::AtomicU64,
    /// The accept loops and the connections they serve.
    tasks: TaskTracker,
    /// Where refused connections are told (a flood, counted).
    events: crate::events::EventLog,
}

impl<M: MeshPort> Front<M> {
    /// Forgets a removed service's counters (see [`Stats::forget`]).
    pub fn forget_counts(&self, service: &mesh_protocol::ServiceName) {
        self.stats.forget(service);
    }

    pub fn new(
        mesh: M,
        backend: Backend,
        stats: Stats,
        images: ImagesView,
        admission: Admission,
        events: crate::events::EventLog,
    ) -> Arc<Self> {
        Arc::new(Self {
            events,
            mesh,
            backend,
            stats,
            images,
            admission,
            refusing: Arc::new(Semaphore::new(REFUSING)),
            refusals: Mutex::new((None, 0)),
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
        // Accept errors recur every try while they last: said once a reason.
        let mut failing = crate::repeat::RepeatGate::default();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((client, peer)) => {
                    if let Some(last) = failing.cleared() {
                        info!(service = %spec.borrow().name, last_error = %last.reason, repeats = last.repeats, "accepting again");
                    }
                    let spec = spec.borrow().clone();
                    match self.admission.admit(peer.ip()) {
                        Ok(permit) => {
                            let _ = client.set_nodelay(true);
                            let span = debug_span!("conn", service = %spec.name, client = %peer);
                            self.tasks.spawn(
                                self.clone()
                                    .handle(spec, client, peer, permit)
                                    .instrument(span),
                            );
                        }
                        Err(why) => self.refuse_over_cap(&spec, client, peer, why),
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    match failing.failed(&e.to_string()) {
                        Some(None) => {
                            warn!(service = %spec.borrow().name, error = %e, "accept failed; tried again every 50 ms (said again when the reason changes)")
                        }
                        Some(Some(before)) => {
                            warn!(service = %spec.borrow().name, error = %e, before = %before.reason, repeats = before.repeats, "accept failed, for another reason now")
                        }
                        None => {}
                    }
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
        _permit: Permit,
    ) {
        if !self.serve(&spec, &mut client, peer).await {
            refuse(client).await;
        }
    }

    /// A connection beyond the caps: counted accepted and refused, closed
    /// gently if there is a place for that, else dropped.
    fn refuse_over_cap(
        &self,
        spec: &ServiceSpec,
        client: TcpStream,
        peer: SocketAddr,
        why: Refusal,
    ) {
        self.stats.count(&spec.name, Count::Accepted);
        self.stats.count(&spec.name, Count::Refused);
        debug!(service = %spec.name, client = %peer, reason = %why, "connection refused");
        self.told_refusal(&spec.name, format!("at this agent's caps: {why}"));
        {
            let mut r = lock(&self.refusals);
            r.1 += 1;
            if r.0.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                warn!(service = %spec.name, client = %peer, reason = %why, refused = r.1, "connections refused at this agent's caps (count since the last such line)");
                *r = (Some(Instant::now()), 0);
            }
        }
        if let Ok(place) = self.refusing.clone().try_acquire_owned() {
            self.tasks.spawn(async move {
                refuse(client).await;
                drop(place);
            });
        }
    }

    /// Tells a refused connection (counted with others of the service).
    fn told_refusal(&self, service: &mesh_protocol::ServiceName, why: String) {
        self.events.emit_flood(
            mesh_protocol::events::EventKind::ConnectionRefused,
            service,
            format!("{}: {why}", self.mesh.node()),
        );
    }

    /// Returns whether the connection was served.
    async fn serve(&self, spec: &ServiceSpec, client: &mut TcpStream, peer: SocketAddr) -> bool {
        let name = &spec.name;
        self.stats.count(name, Count::Accepted);
        let accepted = Instant::now();
        // Boxed: finding a backend (routing, calls to peers, waiting in the
        // queue) keeps its state only while it lasts, not for the life of
        // every held connection, which keeps only the pump's.
        let Some(found) = Box::pin(self.find(spec, peer)).await else {
            return false;
        };
        let timeouts = Timeouts {
            idle: Duration::from_millis(spec.idle_timeout_ms),
            total: spec.total_timeout_ms.map(Duration::from_millis),
        };
        let ended = match found {
            Found::Local(mut lease) => {
                let setup = &self.stats.traffic().setup;
                setup.observe(Route::Local, accepted.elapsed());
                let me = self.mesh.node();
                let open = self.stats.open(name, peer, me, lease.container.clone());
                let (cr, cw) = client.split();
                let (sr, sw) = lease.stream.split();
                let ended = pump_within(
                    (Source::tcp(cr), Sink::Tcp(cw)),
                    (Source::tcp(sr), Sink::Tcp(sw)),
                    &open.bytes,
                    timeouts,
                )
                .await;
                let (sent, received) = open.bytes.totals();
                self.stats.traffic().carried_local(sent, received);
                ended
            }
            Found::Remote(mut t, node) => {
                let setup = &self.stats.traffic().setup;
                setup.observe(Route::Mesh, accepted.elapsed());
                let open = self.stats.open(name, peer, node, t.container.clone());
                let (cr, cw) = client.split();
                let ended = pump_within(
                    (Source::tcp(cr), Sink::Tcp(cw)),
                    (Source::Quic(&mut t.recv), Sink::Quic(&mut t.send)),
                    &open.bytes,
                    timeouts,
                )
                .await;
                let (sent, received) = open.bytes.totals();
                self.stats.traffic().carried_mesh(sent, received);
                if ended != Ended::Closed {
                    // Not a close: the serving node must not wait for its
                    // container (which may say nothing) to end it.
                    tunnel::abort(&mut t);
                }
                ended
            }
        };
        match ended {
            Ended::Closed => {}
            Ended::Aborted => {
                debug!(service = %name, client = %peer, "connection aborted: a side reset it or its connection was lost")
            }
            Ended::Idle => {
                debug!(service = %name, client = %peer, "connection closed: idle for the service's idle timeout")
            }
            Ended::Total => {
                debug!(service = %name, client = %peer, "connection closed: open for the service's total timeout")
            }
        }
        self.stats.count(name, Count::Served);
        true
    }

    /// A container for the connection, here or on a peer: routes, and
    /// while no node has room waits in this node's queue (until a local
    /// container frees up, the view changes, or a backoff passes) up to the
    /// queue timeout. None: refused (counted and told).
    async fn find(&self, spec: &ServiceSpec, peer: SocketAddr) -> Option<Found> {
        let name = &spec.name;
        let deadline = deadline_after(Duration::from_millis(spec.queue_timeout_ms));
        // Counted as waiting while held; dropped once a backend is found.
        let mut waiting = None;
        let mut backoff = RETRY_MIN;
        loop {
            let mut released = std::pin::pin!(self.backend.released.notified());
            // Registered now, so a container freed while routing is seen.
            released.as_mut().enable();
            match self.route(spec, peer).await {
                Routed::Local(lease) => return Some(Found::Local(lease)),
                Routed::Remote(t, node) => return Some(Found::Remote(t, node)),
                Routed::Failed(why) => {
                    warn!(service = %name, client = %peer, error = %why, "connection refused: the service's containers fail to start");
                    self.told_refusal(name, format!("its containers fail to start: {why}"));
                    self.stats.count(name, Count::Refused);
                    return None;
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
                        self.told_refusal(name, "no room and the queue is full".into());
                        self.stats.count(name, Count::Refused);
                        return None;
                    }
                }
            }
            if Instant::now() >= deadline {
                info!(service = %name, client = %peer, "connection refused: no room within --queue-timeout");
                self.told_refusal(name, "no room within the queue timeout".into());
                self.stats.count(name, Count::Refused);
                return None;
            }
            let retry_at = (Instant::now() + backoff).min(deadline);
            backoff = (backoff * 2).min(RETRY_MAX);
            let mut view = self.view().await;
            let seen = self.fingerprint(spec, &view);
            loop {
                tokio::select! {
                    _ = released.as_mut() => break,
                    _ = tokio::time::sleep_until(retry_at) => break,
                    _ = tokio::time::sleep(VIEW_TTL) => {
                        let now = self.view().await;
                        if !Arc::ptr_eq(&now, &view) {
                            view = now;
                            if self.fingerprint(spec, &view) != seen {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// What routing would try for `spec` apart from this node, with the
    /// figures it decides on: when this changes, a waiting connection
    /// routes again. A pure function of the cached view: no call.
    fn fingerprint(&self, spec: &ServiceSpec, view: &RouteView) -> Vec<(NodeId, u32, u32)> {
        let me = self.mesh.node();
        let loads = gossiped_loads(view, spec);
        let mut nodes: Vec<_> = self
            .order(spec, view, &loads, 0)
            .into_iter()
            .filter(|n| *n != me)
            .map(|n| {
                let l = loads.get(&n).cloned().unwrap_or_default();
                (n, l.ready, l.containers)
            })
            .collect();
        nodes.sort();
        nodes
    }

    /// The nodes to try, best first, by the pure choice.
    fn order(
        &self,
        spec: &ServiceSpec,
        view: &RouteView,
        loads: &BTreeMap<NodeId, ServiceLoad>,
        salt: u64,
    ) -> Vec<NodeId> {
        let me = self.mesh.node();
        let images = self.node_images(spec, view);
        match spec.mode {
            Mode::PerConnection => {
                route_per_connection(&me, spec, &view.candidates, loads, &images, salt)
            }
            Mode::Pool => route_pool(&me, &view.candidates, loads, &images, salt),
        }
    }

    /// Each node's image of `spec`'s service: this node's exact, the
    /// others' as gossiped.
    fn node_images(&self, spec: &ServiceSpec, view: &RouteView) -> BTreeMap<NodeId, NodeImage> {
        let own = self.images.borrow().statuses.get(&spec.name).cloned();
        node_images(
            &view.peers,
            spec.name.as_str(),
            &self.mesh.node(),
            own.as_ref(),
        )
    }

    /// Tries the nodes in the order the view suggests, this node last if
    /// the view did not name it (its own state is exact, the view is not).
    async fn route(&self, spec: &ServiceSpec, client: SocketAddr) -> Routed {
        let view = self.view().await;
        let me = self.mesh.node();
        let mut loads = gossiped_loads(&view, spec);
        // This node's own figures are exact; the gossip's are a round old.
        if let Some(own) = self.backend.load(&spec.name) {
            loads.insert(me.clone(), own);
        }
        let salt = self.salt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut order = self.order(spec, &view, &loads, salt);
        if !order.contains(&me) && image_usable(&self.node_images(spec, &view), &me) {
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
                .find(|p| p.node == node && p.state.takes_work())
                .map(|p| p.gossip_addr)
            else {
                continue;
            };
            match tunnel::open(&self.mesh, &node, addr, &spec.name, client, wait).await {
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

/// Each node's figures for `spec` as the gossip view shows them.
fn gossiped_loads(view: &RouteView, spec: &ServiceSpec) -> BTreeMap<NodeId, ServiceLoad> {
    view.peers
        .iter()
        .filter_map(|p| {
            let load = p.info.as_ref()?.services.get(spec.name.as_str())?;
            Some((p.node.clone(), load.clone()))
        })
        .collect()
}

/// Closes a refused connection without a reset: says end-of-stream, then
/// reads (and drops) what the client still sends, for a moment, so the
/// kernel does not answer unread data with RST.
async fn refuse(mut client: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = client.shutdown().await;
    // On the heap: every connection's task is as large as its largest
    // state, and this one would add 4 KiB to each held connection.
    let mut sink = vec![0u8; 4096];
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
