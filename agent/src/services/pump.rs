//! Moves a connection's bytes both ways between two streams, counting
//! them, and keeps half-close: when one side stops sending, the other
//! side's write half is shut down and the reply still flows back.
//! `pump_within` also ends a connection that has been idle (no byte either
//! way) for the service's idle timeout, or open for its total timeout.
//! A read that fails (a reset stream or socket, a lost connection) is no
//! half-close: it ends both directions at once, and the caller resets what
//! it holds, so an abort crosses the mesh. A direction toward a QUIC peer
//! that stopped reading ends even while its source is silent, so a silent
//! container does not keep its lease after the client's side gave up,
//! half-closed or not.

use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::ends::{Sink, Source};
use super::stats::Bytes;

/// When a connection last moved bytes, as milliseconds since it started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// How one direction, or a connection, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Its source ended (or its sink took no more): the other direction
    /// goes on.
    Ended,
    /// Its source failed: a reset, or a lost connection.
    Aborted,
}

async fn one_way(
    mut from: Source<'_>,
    mut to: Sink<'_>,
    counter: &AtomicU64,
    activity: Option<&Activity>,
) -> Way {
    // A QUIC peer that stops reading takes nothing more: this direction
    // ends, seen even while its source is silent (a container that says
    // nothing after its client half-closed and gave up). Not an abort: the
    // other direction may still be delivering what came before.
    let mut stopped = to.stopped();
    loop {
        // Empty (no allocation) while the connection is idle.
        let mut chunks = Vec::new();
        tokio::select! {
            read = from.read(&mut chunks) => match read {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return Way::Aborted,
            },
            () = &mut stopped => break,
        }
        if let Some(a) = activity {
            a.touch();
        }
        let n: usize = chunks.iter().map(|c| c.len()).sum();
        if to.write(&mut chunks).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    to.finish().await;
    Way::Ended
}

/// Both directions until both end, or until one aborts. The directions
/// are pinned by the caller, in its own state: a future passed by value
/// and pinned here would be kept twice in this one's state (rustc keeps
/// the argument's slot beside the pinned copy), about 1.2 KB more for every
/// held connection.
async fn both_ways(
    mut up: Pin<&mut impl Future<Output = Way>>,
    mut down: Pin<&mut impl Future<Output = Way>>,
) -> Way {
    tokio::select! {
        way = up.as_mut() => match way {
            Way::Aborted => Way::Aborted,
            Way::Ended => down.await,
        },
        way = down.as_mut() => match way {
            Way::Aborted => Way::Aborted,
            Way::Ended => up.await,
        },
    }
}

/// Pumps until both directions end, or one aborts. `client` is the
/// client's side (`bytes.inbound` counts what it sends), `server` the
/// container's.
pub async fn pump(
    (client_read, client_write): (Source<'_>, Sink<'_>),
    (server_read, server_write): (Source<'_>, Sink<'_>),
    bytes: &Bytes,
) -> Way {
    let up = pin!(one_way(client_read, server_write, &bytes.inbound, None));
    let down = pin!(one_way(server_read, client_write, &bytes.outbound, None));
    both_ways(up, down).await
}

/// How long a connection may stay idle, and open in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idle: Duration,
    pub total: Option<Duration>,
}

/// How a pumped connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both directions ended.
    Closed,
    /// A read failed (see [`Way::Aborted`]).
    Aborted,
    /// No byte either way for the idle timeout.
    Idle,
    /// Open for the total timeout.
    Total,
}

/// As `pump`, but ends the connection (dropping both streams, which closes
/// them) once it has been idle for `t.idle` or open for `t.total`.
pub async fn pump_within(
    (client_read, client_write): (Source<'_>, Sink<'_>),
    (server_read, server_write): (Source<'_>, Sink<'_>),
    bytes: &Bytes,
    t: Timeouts,
) -> Ended {
    let activity = Activity::new();
    let up = pin!(one_way(
        client_read,
        server_write,
        &bytes.inbound,
        Some(&activity)
    ));
    let down = pin!(one_way(
        server_read,
        client_write,
        &bytes.outbound,
        Some(&activity)
    ));
    // Pinned here and polled by reference: `select!` would otherwise move
    // it into a second slot of this future's state.
    let mut both = pin!(both_ways(up, down));
    // One timer for both limits: a timer is about 100 bytes of every held
    // connection's state.
    let limits = async {
        loop {
            let now = Instant::now();
            let total_due = t.total.map(|total| activity.start + total);
            if total_due.is_some_and(|due| now >= due) {
                return Ended::Total;
            }
            let idle_due = activity.last() + t.idle;
            if now >= idle_due {
                return Ended::Idle;
            }
            let due = total_due.map_or(idle_due, |total| total.min(idle_due));
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        way = &mut both => match way {
            Way::Ended => Ended::Closed,
            Way::Aborted => Ended::Aborted,
        },
        ended = limits => ended,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Both ends of one loopback TCP connection.
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn ends(s: &mut TcpStream) -> (Source<'_>, Sink<'_>) {
        let (r, w) = s.split();
        (Source::tcp(r), Sink::Tcp(w))
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_close_keeps_the_reply() {
        // client <-> a pump c <-> server
        let (mut client, mut a) = tcp_pair().await;
        let (mut c, mut server) = tcp_pair().await;
        let bytes = Bytes::default();
        let server_side = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            // The client is done sending; the reply still goes back.
            server.write_all(&got.repeat(2)).await.unwrap();
            server.shutdown().await.unwrap();
        };
        let client_side = async {
            client.write_all(b"ping").await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        };
        let (_, reply, _) = tokio::join!(
            pump(ends(&mut a), ends(&mut c), &bytes),
            client_side,
            server_side
        );
        assert_eq!(reply, b"pingping");
        assert_eq!(bytes.inbound.load(Ordering::Relaxed), 4);
        assert_eq!(bytes.outbound.load(Ordering::Relaxed), 8);
    }

    #[tokio::test]
    async fn a_large_transfer_arrives_whole_both_ways_at_once() {
        let (mut client, mut a) = tcp_pair().await;
        let (mut c, mut server) = tcp_pair().await;
        let bytes = Bytes::default();
        // 8 MiB each way, written and read concurrently, so reads fill and
        // the buffers grow.
        let up: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 241) as u8).collect();
        let (cr, mut cw) = client.split();
        let (sr, mut sw) = server.split();
        let client_side = async {
            let send = async {
                cw.write_all(&up).await.unwrap();
                cw.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let mut cr = cr;
            let recv = cr.read_to_end(&mut got);
            let (_, n) = tokio::join!(send, recv);
            n.unwrap();
            got
        };
        let server_side = async {
            let send = async {
                sw.write_all(&down).await.unwrap();
                sw.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let mut sr = sr;
            let recv = sr.read_to_end(&mut got);
            let (_, n) = tokio::join!(send, recv);
            n.unwrap();
            got
        };
        let (_, at_client, at_server) = tokio::join!(
            pump(ends(&mut a), ends(&mut c), &bytes),
            client_side,
            server_side
        );
        assert!(at_client == down, "the client got what the server sent");
        assert!(at_server == up, "the server got what the client sent");
        assert_eq!(bytes.inbound.load(Ordering::Relaxed), 8 << 20);
        assert_eq!(bytes.outbound.load(Ordering::Relaxed), 8 << 20);
    }

    /// Two connected QUIC endpoints on loopback (development TLS): the
    /// dialling side's connection and the accepting side's.
    async fn quic_pair() -> (quinn::Connection, quinn::Connection, [quinn::Endpoint; 2]) {
        use crate::mesh::tls::{TlsSource, build};
        let alpn = mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION);
        let node = mesh_protocol::NodeId::new("n1").unwrap();
        let tls = build(&TlsSource::InsecureDev, &node, &alpn).unwrap();
        let endpoint = || {
            let mut e = quinn::Endpoint::server(tls.server.clone(), "127.0.0.1:0".parse().unwrap())
                .unwrap();
            e.set_default_client_config(tls.client.clone());
            e
        };
        let (a, b) = (endpoint(), endpoint());
        let addr = b.local_addr().unwrap();
        let (dialled, accepted) = tokio::join!(
            async { a.connect(addr, "peer").unwrap().await.unwrap() },
            async { b.accept().await.unwrap().await.unwrap() }
        );
        (dialled, accepted, [a, b])
    }

    /// A tunnel's serving side pumping between a QUIC stream and a
    /// container (a loopback socket), after the client's side wrote
    /// `first` (and finished, if `finish`): the client's side's stream, the
    /// container's socket and the pump.
    async fn serving(
        first: &[u8],
        finish: bool,
    ) -> (
        (quinn::SendStream, quinn::RecvStream),
        TcpStream,
        tokio::task::JoinHandle<Way>,
        (quinn::Connection, quinn::Connection, [quinn::Endpoint; 2]),
    ) {
        let (entry, serving, endpoints) = quic_pair().await;
        let (mut send, recv) = entry.open_bi().await.unwrap();
        send.write_all(first).await.unwrap();
        if finish {
            send.finish().unwrap();
        }
        let (mut s_send, mut s_recv) = serving.accept_bi().await.unwrap();
        let (mut c, container) = tcp_pair().await;
        let pumped = tokio::spawn(async move {
            let quic = (Source::Quic(&mut s_recv), Sink::Quic(&mut s_send));
            pump(quic, ends(&mut c), &Bytes::default()).await
        });
        ((send, recv), container, pumped, (entry, serving, endpoints))
    }

    /// How the serving side's pump ended (within 10 s).
    async fn ended(pumped: tokio::task::JoinHandle<Way>) -> Way {
        tokio::time::timeout(Duration::from_secs(10), pumped)
            .await
            .expect("the serving side's pump ended")
            .unwrap()
    }

    /// The serving side of a tunnel whose container says nothing: once the
    /// client's side gives up (resets its stream, as `front` does at a
    /// timeout), the pump ends, and the container sees the end of its
    /// connection.
    #[tokio::test]
    async fn a_reset_from_the_peer_ends_both_ways_though_the_container_is_silent() {
        let ((mut send, mut recv), mut container, pumped, _quic) = serving(b"x", false).await;
        let mut one = [0u8; 1];
        container.read_exact(&mut one).await.unwrap();
        send.reset(0u32.into()).unwrap();
        recv.stop(0u32.into()).unwrap();
        let way = ended(pumped).await;
        assert_eq!(way, Way::Aborted);
        let mut rest = Vec::new();
        assert_eq!(container.read_to_end(&mut rest).await.unwrap(), 0);
    }

    /// A client that half-closed and then gave up (its side's idle timeout:
    /// `front` resets and stops the tunnel after the FIN went): the serving
    /// side ends though its container says nothing.
    #[tokio::test]
    async fn a_peer_that_stops_reading_after_a_half_close_ends_the_tunnel() {
        let ((_send, mut recv), mut container, pumped, _quic) = serving(b"x", true).await;
        let mut got = Vec::new();
        container.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"x", "the half-close reached the container");
        recv.stop(0u32.into()).unwrap();
        let way = ended(pumped).await;
        assert_eq!(way, Way::Ended);
    }

    /// A client that only half-closes is no abort: the reply still flows.
    #[tokio::test]
    async fn a_finished_stream_is_a_half_close_not_an_abort() {
        let ((_send, mut recv), mut container, pumped, _quic) = serving(b"ping", true).await;
        let mut got = Vec::new();
        container.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        container.write_all(b"pong").await.unwrap();
        container.shutdown().await.unwrap();
        let reply = recv.read_to_end(64).await.unwrap();
        assert_eq!(reply, b"pong");
        assert_eq!(pumped.await.unwrap(), Way::Ended);
    }

    /// A pumped pair: what the client and the server hold, and the pump.
    async fn pair(t: Timeouts) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Ended>) {
        let (client, mut a) = tcp_pair().await;
        let (mut c, server) = tcp_pair().await;
        let pumped = tokio::spawn(async move {
            pump_within(ends(&mut a), ends(&mut c), &Bytes::default(), t).await
        });
        (client, server, pumped)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_after_the_idle_timeout_and_traffic_keeps_it_open() {
        let idle = Duration::from_secs(10);
        let (mut client, mut server, pumped) = pair(Timeouts { idle, total: None }).await;
        let start = Instant::now();
        // A byte every 6 s, each way in turn, for a minute: never idle 10 s.
        for i in 0..10 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let mut one = [0u8; 1];
            if i % 2 == 0 {
                client.write_all(b"x").await.unwrap();
                server.read_exact(&mut one).await.unwrap();
            } else {
                server.write_all(b"y").await.unwrap();
                client.read_exact(&mut one).await.unwrap();
            }
        }
        assert!(!pumped.is_finished());
        let quiet = Instant::now();
        assert_eq!(pumped.await.unwrap(), Ended::Idle);
        assert_eq!(
            quiet.elapsed(),
            idle,
            "ended the moment it was idle for 10 s"
        );
        assert!(start.elapsed() >= Duration::from_secs(70));
        // Both sides see the end of the stream.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_ends_at_the_total_timeout() {
        let t = Timeouts {
            idle: Duration::from_secs(10),
            total: Some(Duration::from_secs(30)),
        };
        let (mut client, mut server, pumped) = pair(t).await;
        let start = Instant::now();
        let chatter = tokio::spawn(async move {
            let mut one = [0u8; 1];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"x").await.is_err()
                    || server.read_exact(&mut one).await.is_err()
                {
                    return;
                }
            }
        });
        assert_eq!(pumped.await.unwrap(), Ended::Total);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        chatter.await.unwrap();
    }
}
