//! The client side of the service benchmarks: what a program using a
//! service does against an address (the container itself, HAProxy, or an
//! agent's listener), timed from this process.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::bench::BenchError;

/// What a first-byte probe sends to an echo server, which sends it back.
const PING: &[u8; 32] = b"mesh-testnet bench: first byte?\n";
/// One short request's size, each way.
const REQUEST: usize = 64;
/// How much one read of a transfer takes at most.
const READ_BUF: usize = 256 * 1024;
/// How long one attempt to reach a container still starting may take.
const ATTEMPT: Duration = Duration::from_secs(1);
/// The pause between such attempts.
const RETRY: Duration = Duration::from_millis(1);

fn io_error(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io {
        what,
        target: addr.to_string(),
        source,
    }
}

/// `work`, or a [`BenchError::Measure`] once `limit` has passed.
async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    work: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| BenchError::Measure(format!("{} took over {limit:?}", what())))?
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, BenchError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(io_error("connect to", addr))?;
    stream
        .set_nodelay(true)
        .map_err(io_error("set TCP_NODELAY on a connection to", addr))?;
    Ok(stream)
}

fn check_echo(addr: SocketAddr, sent: &[u8], got: &[u8]) -> Result<(), BenchError> {
    if sent == got {
        Ok(())
    } else {
        Err(BenchError::Measure(format!(
            "{addr} echoed {:?} to {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(sent)
        )))
    }
}

/// One echo exchange on a fresh connection: connect, send [`PING`], read it
/// back. Returns the connection and when the reply's first byte arrived.
async fn ping(addr: SocketAddr) -> Result<(TcpStream, Instant), BenchError> {
    let mut stream = connect(addr).await?;
    stream
        .write_all(PING)
        .await
        .map_err(io_error("write to", addr))?;
    let mut reply = [0u8; PING.len()];
    stream
        .read_exact(&mut reply[..1])
        .await
        .map_err(io_error("read from", addr))?;
    let first = Instant::now();
    stream
        .read_exact(&mut reply[1..])
        .await
        .map_err(io_error("read from", addr))?;
    check_echo(addr, PING, &reply)?;
    Ok((stream, first))
}

/// The time from connecting to an echo server to the first byte of its
/// reply to a small request; the connection is closed after the whole
/// reply (which, for a per-connection service, removes its container).
pub(super) async fn first_byte(addr: SocketAddr, limit: Duration) -> Result<Duration, BenchError> {
    within(limit, || format!("an echo from {addr}"), async {
        let start = Instant::now();
        let (_stream, first) = ping(addr).await?;
        Ok(first - start)
    })
    .await
}

/// The time from `since` to the first echoed byte from a container that is
/// still starting: connects again every millisecond until one attempt gets
/// its echo back.
pub(super) async fn first_byte_once_up(
    addr: SocketAddr,
    since: Instant,
    limit: Duration,
) -> Result<Duration, BenchError> {
    within(limit, || format!("an echo from {addr} (starting)"), async {
        loop {
            if let Ok(Ok((_stream, first))) = tokio::time::timeout(ATTEMPT, ping(addr)).await {
                return Ok(first - since);
            }
            tokio::time::sleep(RETRY).await;
        }
    })
    .await
}

/// Reads a `source` server's whole answer of `expect` bytes; returns the
/// time from connecting to its end.
pub(crate) async fn download(
    addr: SocketAddr,
    expect: u64,
    limit: Duration,
) -> Result<Duration, BenchError> {
    within(limit, || format!("{expect} bytes from {addr}"), async {
        let start = Instant::now();
        let mut stream = connect(addr).await?;
        let mut buf = vec![0u8; READ_BUF];
        let mut got = 0u64;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) => return Err(io_error("read from", addr)(e)),
            }
        }
        let took = start.elapsed();
        if got != expect {
            return Err(BenchError::Measure(format!(
                "{addr} sent {got} bytes instead of {expect}"
            )));
        }
        Ok(took)
    })
    .await
}

/// `n` short requests to an echo server, `c` at a time, each on a
/// connection of its own (connect, [`REQUEST`] bytes each way, close).
/// Returns the time for all and each request's time.
pub(crate) async fn requests(
    addr: SocketAddr,
    n: usize,
    c: usize,
    limit: Duration,
) -> Result<(Duration, Vec<Duration>), BenchError> {
    let start = Instant::now();
    let each: Vec<Duration> = stream::iter(0..n)
        .map(|i| one_request(addr, i, limit))
        .buffer_unordered(c)
        .try_collect()
        .await?;
    Ok((start.elapsed(), each))
}

async fn one_request(addr: SocketAddr, i: usize, limit: Duration) -> Result<Duration, BenchError> {
    within(limit, || format!("a request to {addr}"), async {
        let start = Instant::now();
        let mut stream = connect(addr).await?;
        // Truncation intended: any byte pattern will do.
        let request: Vec<u8> = (0..REQUEST).map(|j| (i + j) as u8).collect();
        stream
            .write_all(&request)
            .await
            .map_err(io_error("write to", addr))?;
        let mut reply = vec![0u8; REQUEST];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(io_error("read from", addr))?;
        check_echo(addr, &request, &reply)?;
        Ok(start.elapsed())
    })
    .await
}

/// `conns` connections to an echo server opened first (untimed), then
/// `per_conn` exchanges on each, all connections at once: [`REQUEST`] bytes
/// written, the same read back, again, as a client of a key-value store
/// does over long-lived connections. Returns the time of all exchanges.
pub(crate) async fn exchanges(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    limit: Duration,
) -> Result<Duration, BenchError> {
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        streams.push(connect(addr).await?);
    }
    within(
        limit,
        || format!("{conns} x {per_conn} exchanges with {addr}"),
        async {
            let start = Instant::now();
            streams
                .into_iter()
                .enumerate()
                .map(|(c, mut stream)| async move {
                    let mut request = [0u8; REQUEST];
                    let mut reply = [0u8; REQUEST];
                    for i in 0..per_conn {
                        // Truncation intended: any byte pattern will do.
                        request
                            .iter_mut()
                            .enumerate()
                            .for_each(|(j, b)| *b = (c + i + j) as u8);
                        stream
                            .write_all(&request)
                            .await
                            .map_err(io_error("write to", addr))?;
                        stream
                            .read_exact(&mut reply)
                            .await
                            .map_err(io_error("read from", addr))?;
                        check_echo(addr, &request, &reply)?;
                    }
                    Ok::<_, BenchError>(())
                })
                .collect::<FuturesUnordered<_>>()
                .try_collect::<Vec<()>>()
                .await?;
            Ok(start.elapsed())
        },
    )
    .await
}

/// Connections held open, each having echoed once.
#[derive(Debug)]
pub(crate) struct Held {
    pub streams: Vec<TcpStream>,
    /// Why fewer than asked are open: the first connection that failed
    /// (no more were started after it).
    pub stopped: Option<String>,
}

/// Opens up to `n` connections to an echo server, `in_flight` at a time,
/// each echoing once within `limit`; stops opening at the first failure.
pub(crate) async fn hold(addr: SocketAddr, n: usize, in_flight: usize, limit: Duration) -> Held {
    let mut streams = Vec::with_capacity(n);
    let mut pending = FuturesUnordered::new();
    let mut started = 0;
    let mut stopped = None;
    loop {
        while stopped.is_none() && started < n && pending.len() < in_flight {
            started += 1;
            pending.push(within(
                limit,
                move || format!("an echo from {addr}"),
                async move { Ok(ping(addr).await?.0) },
            ));
        }
        match pending.next().await {
            None => break,
            Some(Ok(stream)) => streams.push(stream),
            Some(Err(e)) => {
                if stopped.is_none() {
                    stopped = Some(format!(
                        "connection {} of {n} failed ({e}) with {} open",
                        started - pending.len(),
                        streams.len()
                    ));
                }
            }
        }
    }
    Held { streams, stopped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An echo server on a loopback port 0, serving until the test ends.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn probes_measure_an_echo_server() {
        let addr = echo_server().await;
        let limit = Duration::from_secs(10);
        assert!(first_byte(addr, limit).await.unwrap() < limit);
        let (all, each) = requests(addr, 20, 4, limit).await.unwrap();
        assert_eq!(each.len(), 20);
        assert!(each.iter().all(|d| *d <= all));
        let held = hold(addr, 30, 8, limit).await;
        assert_eq!(held.streams.len(), 30);
        assert!(held.stopped.is_none());
        assert!(exchanges(addr, 5, 50, limit).await.unwrap() < limit);
    }

    #[tokio::test]
    async fn a_wrong_echo_or_length_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = s.write_all(&[b'x'; 40]).await;
                    let _ = s.shutdown().await;
                    // Read what the client sent, so closing sends no reset.
                    let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
                });
            }
        });
        let limit = Duration::from_secs(10);
        assert!(matches!(
            first_byte(addr, limit).await,
            Err(BenchError::Measure(_))
        ));
        assert!(matches!(
            download(addr, 41, limit).await,
            Err(BenchError::Measure(_))
        ));
        let held = hold(addr, 5, 2, limit).await;
        assert!(held.streams.is_empty());
        assert!(held.stopped.is_some());
        // 40 bytes then the end: short of one exchange's 64.
        assert!(exchanges(addr, 2, 3, limit).await.is_err());
    }
}
