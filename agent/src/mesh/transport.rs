//! Chitchat over QUIC: one quinn endpoint per agent carries every gossip
//! message on its own unidirectional stream (a kind byte, then chitchat's
//! own serialization), over mutually authenticated connections that are
//! cached per peer address and re-dialled when they drop.
//!
//! The gossip loop never waits on the network: `send` hands the message to a
//! per-peer task through a bounded queue and returns; a full queue drops the
//! message (gossip repeats itself every interval).
//!
//! Received gossip reaches chitchat only once [`super::gossip_check`] passed it and,
//! for a reply, once it answers an exchange this node started with that
//! peer ([`Exchanges`]); the rest is counted and dropped, with a warning
//! logged at the 1st, 2nd, 4th, 8th... refusal of each reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use bytes::Bytes;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Serializable};
use quinn::{Connection, Endpoint, VarInt};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use mesh_protocol::NodeId;
use mesh_protocol::digest_codec::Answering;
use mesh_protocol::rpc::{KIND_IMAGE, KIND_RPC, KIND_TUNNEL};

use super::admission::{self, Admit, Slots};
use super::exchanges::Exchanges;
use super::gossip_check::Kind;
use super::handlers::{Caller, SharedHandlers};
use super::tls;
use crate::repeat::RepeatGates;

mod peers;
mod receive;
mod syns;
pub use peers::{Peers, Refusals};
pub use receive::{GossipDecodeError, decode};
use receive::{peer_key, read_gossip};
pub use syns::RecentSyns;

/// The TLS server name we dial with; peers are identified by the name in
/// their certificate after the handshake, not by this.
const DIAL_NAME: &str = "ganger-peer";
/// First byte of a gossip stream.
pub const KIND_GOSSIP: u8 = 1;
/// Largest gossip message accepted (chitchat keeps messages under 64 KiB).
pub const MAX_GOSSIP_BYTES: usize = mesh_protocol::digest_codec::MAX_MESSAGE;
/// How long a dial may take, Retry round trip included.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an accepted handshake may hold its slot. Handshakes between
/// peers take milliseconds; this bounds what a source that proved its
/// address but then stalls can hold.
const ACCEPT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Addresses whose refused handshakes are remembered, to say each reason
/// once (a misconfigured node dials every round); beyond it they are all
/// forgotten, so a flood of sources costs at most this much memory.
const REFUSED_SOURCES: usize = 1024;
/// After a failed dial, messages to that address are dropped this long.
const REDIAL_BACKOFF: Duration = Duration::from_millis(500);
const PEER_QUEUE: usize = 64;
/// Checked gossip messages waiting for chitchat (each at most
/// [`super::gossip_check::MAX_DELTA_BYTES`] decompressed).
const INBOX: usize = 256;
/// Connections one peer (by certificate name) may have dialled to us at
/// once; beyond it the oldest is closed.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// The application close code and reason for a connection closed because
/// its peer opened too many.
const TOO_MANY_CONNECTIONS: (u32, &[u8]) = (1, b"too many connections from this peer");

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot dial {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error(
        "{addr} speaks another RPC version than this node ({ours}); run the same release on every node"
    )]
    Version { addr: SocketAddr, ours: String },
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("no handshake with {addr} within {HANDSHAKE_TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
    #[error(
        "{addr} is not {expected}: its certificate names {}; refusing to call it (gossip may carry a stale or false address for {expected})",
        found.as_deref().unwrap_or("no node")
    )]
    WrongNode {
        addr: SocketAddr,
        expected: NodeId,
        found: Option<String>,
    },
}

/// A chitchat transport on a bound quinn endpoint, which also serves and
/// makes agent-to-agent calls (`rpc`) over the same connections.
#[derive(Clone)]
pub struct QuicTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport").finish_non_exhaustive()
    }
}

struct Shared {
    endpoint: Endpoint,
    peers: Peers,
    refusals: Refusals,
    /// Gossip sent and read, for /metrics.
    gossip: crate::metrics::GossipCounts,
    /// Where received gossip goes; set when chitchat opens its socket.
    inbox: Mutex<Option<Inbox>>,
    /// The gossip replies this node waits for.
    exchanges: Mutex<Exchanges>,
    /// The SYNs this node sent lately, which answers are coded against.
    syns: RecentSyns,
    /// What serves calls and forwarded service connections.
    handlers: SharedHandlers,
    /// The ALPN protocol this node speaks, for messages.
    alpn: String,
    /// Sources whose handshakes failed, each reason said once.
    refused_sources: Mutex<RepeatGates<IpAddr>>,
}

impl QuicTransport {
    /// Starts accepting on `endpoint`; `alpn` is the protocol its TLS
    /// configuration speaks.
    pub fn new(endpoint: Endpoint, handlers: SharedHandlers, alpn: &[u8]) -> Self {
        let shared = Arc::new(Shared {
            endpoint,
            peers: Peers::default(),
            refusals: Refusals::default(),
            gossip: Default::default(),
            inbox: Mutex::new(None),
            exchanges: Mutex::new(Exchanges::default()),
            syns: RecentSyns::default(),
            handlers,
            alpn: String::from_utf8_lossy(alpn).into_owned(),
            refused_sources: Mutex::new(RepeatGates::default()),
        });
        tokio::spawn(accept_loop(shared.clone()));
        Self { shared }
    }

    pub fn peers(&self) -> &Peers {
        &self.shared.peers
    }

    pub fn refusals(&self) -> &Refusals {
        &self.shared.refusals
    }

    /// Gossip sent and read so far.
    pub fn gossip(&self) -> crate::metrics::GossipTraffic {
        self.shared.gossip.snapshot()
    }

    /// A live connection to `to`, dialling (and serving it) if needed.
    pub async fn connection(&self, to: SocketAddr) -> Result<Connection, DialError> {
        connection(&self.shared, to).await
    }

    /// A live connection to node `node` at `to`: refused (and counted) if
    /// the certificate there names another node. Every call and tunnel
    /// goes through this, so gossip that puts a node at the wrong address
    /// (stale, or a member announcing another's id) gets nothing meant for
    /// that node; the name seen is recorded, which drops the false entry
    /// from the peer list ([`super::view`]).
    pub async fn connection_to(
        &self,
        node: &NodeId,
        to: SocketAddr,
    ) -> Result<Connection, DialError> {
        let conn = connection(&self.shared, to).await?;
        let found = tls::peer_node_name(&conn);
        if found.as_deref() == Some(node.as_str()) {
            return Ok(conn);
        }
        let n = self
            .shared
            .refusals
            .identities
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let e = DialError::WrongNode {
            addr: to,
            expected: node.clone(),
            found,
        };
        if n.is_power_of_two() {
            warn!(peer = %to, refused_so_far = n, "{e}");
        }
        Err(e)
    }
}

async fn connection(shared: &Arc<Shared>, to: SocketAddr) -> Result<Connection, DialError> {
    if let Some(c) = shared.peers.live(&to) {
        return Ok(c);
    }
    let connecting = shared
        .endpoint
        .connect(to, DIAL_NAME)
        .map_err(|source| DialError::Connect { addr: to, source })?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(source)) if tls::is_version_mismatch(&source) => {
            let n = shared.refusals.versions.fetch_add(1, Ordering::Relaxed) + 1;
            let e = DialError::Version {
                addr: to,
                ours: shared.alpn.clone(),
            };
            if n.is_power_of_two() {
                warn!(peer = %to, refused_so_far = n, "{e}");
            }
            return Err(e);
        }
        Ok(Err(source)) => return Err(DialError::Handshake { addr: to, source }),
        Err(_) => return Err(DialError::Timeout { addr: to }),
    };
    shared.peers.add(&conn);
    // The peer may open streams on this connection too.
    tokio::spawn(serve_connection(shared.clone(), conn.clone()));
    Ok(conn)
}

#[async_trait]
impl Transport for QuicTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        *self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(inbox_tx);
        Ok(Box::new(QuicSocket {
            shared: self.shared.clone(),
            inbox,
            outboxes: HashMap::new(),
            answering: Answering::default(),
        }))
    }
}

type Inbox = mpsc::Sender<(SocketAddr, ChitchatMessage)>;

struct QuicSocket {
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    outboxes: HashMap<SocketAddr, mpsc::Sender<(Kind, Bytes)>>,
    /// The SYN chitchat is answering.
    answering: Answering,
}

#[async_trait]
impl Socket for QuicSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let mut plain = Vec::with_capacity(msg.serialized_len());
        msg.serialize(&mut plain);
        // On the wire in the compact form (digests about 3 times smaller;
        // mesh_protocol::digest_codec), after the stream's kind byte; a
        // SYN-ACK coded against the SYN it answers.
        let mut buf = vec![KIND_GOSSIP];
        match self.answering.compact(to, &plain) {
            Ok((compact, _)) => buf.extend(compact),
            Err(e) => {
                // chitchat's own serialization: never expected.
                warn!(peer = %to, error = %e, "cannot encode a gossip message; not sent");
                return Ok(());
            }
        }
        if let ChitchatMessage::Syn { .. } = msg {
            self.shared
                .syns
                .sent(Bytes::from(plain), tokio::time::Instant::now());
        }
        let sent = (Kind::of(&msg), Bytes::from(buf));
        let outbox = self.outboxes.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(peer_sender(self.shared.clone(), to, rx));
            tx
        });
        if let Err(mpsc::error::TrySendError::Closed(_)) = outbox.try_send(sent) {
            self.outboxes.remove(&to);
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        let (from, msg) = self
            .inbox
            .recv()
            .await
            .ok_or_else(|| anyhow!("QUIC endpoint closed"))?;
        let syn = matches!(msg, ChitchatMessage::Syn { .. }).then(|| {
            let mut plain = Vec::with_capacity(msg.serialized_len());
            msg.serialize(&mut plain);
            plain
        });
        self.answering.received(from, syn);
        Ok((from, msg))
    }
}

/// Sends queued messages to one peer, dialling when there is no connection,
/// and records the replies they call for.
async fn peer_sender(shared: Arc<Shared>, to: SocketAddr, mut rx: mpsc::Receiver<(Kind, Bytes)>) {
    let mut down_until: Option<tokio::time::Instant> = None;
    while let Some((kind, bytes)) = rx.recv().await {
        if down_until.is_some_and(|t| tokio::time::Instant::now() < t) {
            continue;
        }
        let conn = match connection(&shared, to).await {
            Ok(c) => c,
            Err(e) => {
                debug!(peer = %to, error = %e, "cannot reach peer");
                down_until = Some(tokio::time::Instant::now() + REDIAL_BACKOFF);
                continue;
            }
        };
        // Before sending: the reply may come back at once.
        shared
            .exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sent(&peer_key(&conn), kind, tokio::time::Instant::now());
        match send_uni(&conn, &bytes).await {
            Ok(()) => shared.gossip.sent(kind.metric(), bytes.len()),
            Err(e) => debug!(peer = %to, error = %e, "gossip send failed"),
        }
    }
}

async fn send_uni(conn: &Connection, bytes: &[u8]) -> anyhow::Result<()> {
    let mut stream = conn.open_uni().await?;
    stream.write_all(bytes).await?;
    stream.finish()?;
    Ok(())
}

/// Accepts connections; a peer without a valid certificate never gets past
/// the handshake, and a source that has not proved its address gets a
/// stateless Retry instead of a handshake slot (see [`admission`]).
async fn accept_loop(shared: Arc<Shared>) {
    let slots = Slots::new(admission::Limits::default());
    while let Some(incoming) = shared.endpoint.accept().await {
        let from = incoming.remote_address();
        let slot = match slots.admit(incoming.remote_address_validated(), from.ip()) {
            Ok(slot) => slot,
            Err(Admit::Retry) => {
                // Stateless: costs one packet and no slot. (It fails only
                // if the address was validated, which `admit` ruled out.)
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            Err(why) => {
                let n = shared.refusals.handshakes.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged, but not once per packet of a flood.
                if n.is_power_of_two() {
                    let what = if why == Admit::SourceFull {
                        "too many handshakes at once from one source; refusing its connections"
                    } else {
                        "too many handshakes at once; refusing connections"
                    };
                    warn!(peer = %from, refused_so_far = n, "{what}");
                }
                incoming.refuse();
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = match incoming.accept() {
                Ok(connecting) => {
                    match tokio::time::timeout(ACCEPT_HANDSHAKE_TIMEOUT, connecting).await {
                        Ok(r) => r.map_err(Refused::Handshake),
                        Err(_) => Err(Refused::Timeout),
                    }
                }
                Err(e) => Err(Refused::Handshake(e)),
            };
            drop(slot);
            match result {
                Ok(conn) => {
                    let cleared = shared
                        .refused_sources
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .cleared(&from.ip());
                    if let Some(last) = cleared {
                        info!(peer = %from, last_error = %last.reason, repeats = last.repeats, "a source refused before got through the handshake");
                    }
                    shared.peers.add(&conn);
                    for old in shared.peers.accepted(&conn) {
                        let n = shared.refusals.connections.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            warn!(peer = %from, refused_so_far = n, "a peer holds too many connections; closing its oldest");
                        }
                        let (code, reason) = TOO_MANY_CONNECTIONS;
                        old.close(code.into(), reason);
                    }
                    serve_connection(shared, conn).await;
                }
                Err(Refused::Handshake(e)) if tls::is_version_mismatch(&e) => {
                    shared.refusals.handshakes.fetch_add(1, Ordering::Relaxed);
                    let n = shared.refusals.versions.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(peer = %from, ours = %shared.alpn, refused_so_far = n, "refused a peer that speaks another RPC version; run the same release on every node");
                    }
                }
                Err(e) => {
                    shared.refusals.handshakes.fetch_add(1, Ordering::Relaxed);
                    let said = {
                        let mut sources = shared
                            .refused_sources
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        if sources.len() >= REFUSED_SOURCES {
                            sources.retain(|_| false);
                        }
                        sources.failed(from.ip(), &e.to_string())
                    };
                    match said {
                        Some(None) => {
                            warn!(peer = %from, error = %e, "refused connection (said again for this address when the reason changes)")
                        }
                        Some(Some(before)) => {
                            warn!(peer = %from, error = %e, before = %before.reason, repeats = before.repeats, "refused connection, for another reason now")
                        }
                        None => {}
                    }
                }
            }
        });
    }
}

/// Why an incoming connection never got to its handshake's end.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("no handshake within {ACCEPT_HANDSHAKE_TIMEOUT:?}")]
    Timeout,
}

/// Serves one connection until it closes: gossip on unidirectional streams,
/// calls and tunnels on bidirectional ones.
///
/// The peer may open [`tls::INITIAL_BIDI_STREAMS`] bidirectional streams at
/// once, raised (doubling) while three quarters are in use, up to
/// [`tls::MAX_BIDI_STREAMS`]: quinn sets aside state for every stream a
/// peer may open, on every connection, so an idle connection stays cheap
/// and one that carries thousands of service connections can still grow.
async fn serve_connection(shared: Arc<Shared>, conn: Connection) {
    let calls = {
        let (shared, conn) = (shared.clone(), conn.clone());
        async move {
            // Who calls is the node the certificate names, never what a
            // request says.
            let caller: Caller = tls::peer_node_name(&conn).and_then(|n| NodeId::new(n).ok());
            let budget = Arc::new(Semaphore::new(super::rpc::REQUEST_BUDGET));
            let open = Arc::new(AtomicUsize::new(0));
            let mut limit = tls::INITIAL_BIDI_STREAMS;
            while let Ok((send, recv)) = conn.accept_bi().await {
                let in_use = open.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(raised) = raise_stream_limit(in_use, limit) {
                    limit = raised;
                    conn.set_max_concurrent_bi_streams(VarInt::from_u32(limit));
                }
                let stream = OpenStream(open.clone());
                let (shared, caller, budget) = (shared.clone(), caller.clone(), budget.clone());
                // Spawned as it is: a wrapping block would keep every
                // argument twice (its captures and the call's) for as long
                // as the stream is open.
                tokio::spawn(serve_stream(stream, shared, caller, budget, send, recv));
            }
        }
    };
    tokio::join!(read_gossip(shared, conn), calls);
}

/// The new limit of concurrent streams when `in_use` of `limit` are open:
/// doubled once three quarters are taken, up to the maximum.
fn raise_stream_limit(in_use: usize, limit: u32) -> Option<u32> {
    let limit_now = limit as usize;
    (in_use * 4 >= limit_now * 3 && limit < tls::MAX_BIDI_STREAMS)
        .then(|| limit.saturating_mul(2).min(tls::MAX_BIDI_STREAMS))
}

/// Counts a stream as open until dropped (with its `serve_stream`).
struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one bidirectional stream by its kind byte: a call, a forwarded
/// service connection, or an image sent to a peer.
async fn serve_stream(
    // First, so it drops last (arguments drop in reverse): the stream
    // counts as open until its halves are gone.
    _open: OpenStream,
    shared: Arc<Shared>,
    caller: Caller,
    budget: Arc<Semaphore>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // Boxed: the wait for the kind byte (a timer and a read) is over once
    // it came, but in this future's state it would stay for as long as a
    // forwarded connection is held.
    let Some(kind) = Box::pin(read_kind(&mut recv)).await else {
        shared.refusals.messages.fetch_add(1, Ordering::Relaxed);
        return;
    };
    match kind {
        KIND_RPC => {
            Box::pin(super::rpc::serve_call(
                send,
                recv,
                caller,
                &shared.handlers,
                &budget,
            ))
            .await
        }
        KIND_TUNNEL | KIND_IMAGE => match shared.handlers.streams(kind) {
            Some(serve) => serve(caller, send, recv).await,
            None => {
                let _ = send.reset(0u32.into());
            }
        },
        other => {
            shared.refusals.messages.fetch_add(1, Ordering::Relaxed);
            warn!(caller = ?caller, kind = other, "refused a stream of unknown kind");
            let _ = send.reset(0u32.into());
        }
    }
}

/// A stream's first byte, its kind; None if it does not come in time.
async fn read_kind(recv: &mut quinn::RecvStream) -> Option<u8> {
    let mut kind = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, recv.read_exact(&mut kind)).await {
        Ok(Ok(())) => Some(kind[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
