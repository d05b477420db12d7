//! Moves a connection's bytes both ways between two streams, counting
//! them, and keeps half-close: when one side stops sending, the other
//! side's write half is shut down and the reply still flows back.
//! `pump_within` also ends a connection that has been idle (no byte either
//! way) for the service's idle timeout, or open for its total timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::stats::Bytes;

/// Each direction starts with a small buffer (idle connections are cheap:
/// thousands may be open) and grows to the large one once a read fills it.
const SMALL: usize = 4 * 1024;
const LARGE: usize = 128 * 1024;

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

async fn one_way<R, W>(mut from: R, mut to: W, counter: &AtomicU64, activity: Option<&Activity>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; SMALL];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(a) = activity {
                    a.touch();
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if n == buf.len() && buf.len() < LARGE {
                    buf.resize(LARGE, 0);
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Pumps until both directions end. `client` is the client's side
/// (`bytes.inbound` counts what it sends), `server` the container's.
pub async fn pump<CR, CW, SR, SW>(
    (client_read, client_write): (CR, CW),
    (server_read, server_write): (SR, SW),
    bytes: &Bytes,
) where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    tokio::join!(
        one_way(client_read, server_write, &bytes.inbound, None),
        one_way(server_read, client_write, &bytes.outbound, None),
    );
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
    /// No byte either way for the idle timeout.
    Idle,
    /// Open for the total timeout.
    Total,
}

/// As `pump`, but ends the connection (dropping both streams, which closes
/// them) once it has been idle for `t.idle` or open for `t.total`.
pub async fn pump_within<CR, CW, SR, SW>(
    (client_read, client_write): (CR, CW),
    (server_read, server_write): (SR, SW),
    bytes: &Bytes,
    t: Timeouts,
) -> Ended
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let both = async {
        tokio::join!(
            one_way(client_read, server_write, &bytes.inbound, Some(&activity)),
            one_way(server_read, client_write, &bytes.outbound, Some(&activity)),
        )
    };
    let idle = async {
        loop {
            let due = activity.last() + t.idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    let total = async {
        match t.total {
            Some(total) => tokio::time::sleep_until(activity.start + total).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = both => Ended::Closed,
        _ = idle => Ended::Idle,
        _ = total => Ended::Total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_close_keeps_the_reply() {
        // client <-> (a, b) pump (c, d) <-> server
        let (mut client, a) = tokio::io::duplex(1024);
        let (c, mut server) = tokio::io::duplex(1024);
        let bytes = Bytes::default();
        let (ar, aw) = tokio::io::split(a);
        let (cr, cw) = tokio::io::split(c);
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
        let (_, reply, _) =
            tokio::join!(pump((ar, aw), (cr, cw), &bytes), client_side, server_side);
        assert_eq!(reply, b"pingping");
        assert_eq!(bytes.inbound.load(Ordering::Relaxed), 4);
        assert_eq!(bytes.outbound.load(Ordering::Relaxed), 8);
    }

    /// A pumped pair: what the client and the server hold, and the pump.
    fn pair(
        t: Timeouts,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Ended>,
    ) {
        let (client, a) = tokio::io::duplex(1024);
        let (c, server) = tokio::io::duplex(1024);
        let pumped = tokio::spawn(async move {
            pump_within(
                tokio::io::split(a),
                tokio::io::split(c),
                &Bytes::default(),
                t,
            )
            .await
        });
        (client, server, pumped)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_after_the_idle_timeout_and_traffic_keeps_it_open() {
        let idle = Duration::from_secs(10);
        let (mut client, mut server, pumped) = pair(Timeouts { idle, total: None });
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
        let (mut client, mut server, pumped) = pair(t);
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
