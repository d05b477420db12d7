//! The loads of [`super::services`] one at a time against any server at an
//! address (a container, HAProxy, an agent's service port), for benchmarks
//! that bring their own agents (`scripts/bench-loopback`) and for profiling
//! one path alone (`perf record` on an agent meanwhile).

use std::net::SocketAddr;
use std::time::Duration;

use super::BenchError;
use super::services;

/// How long any one round may take.
const ROUND_LIMIT: Duration = Duration::from_secs(600);
/// How long one short request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// How long opening one held connection may take.
const HOLD_LIMIT: Duration = Duration::from_secs(5);
/// Held connections being opened at once.
const HOLD_IN_FLIGHT: usize = 64;

/// Requests per second of `rounds` runs of the persistent small-request
/// load: `conns` connections, then `per_conn` exchanges of 64 bytes on each.
pub async fn exchanges(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    rounds: usize,
) -> Result<Vec<f64>, BenchError> {
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let took = services::exchanges(addr, conns, per_conn, ROUND_LIMIT).await?;
        rates.push((conns * per_conn) as f64 / took.as_secs_f64().max(1e-9));
    }
    Ok(rates)
}

/// Requests per second of `rounds` runs of `n` short requests, `c` at a
/// time, each on a new connection (64 bytes echoed).
pub async fn requests(
    addr: SocketAddr,
    n: usize,
    c: usize,
    rounds: usize,
) -> Result<Vec<f64>, BenchError> {
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (took, _) = services::requests(addr, n, c, REQUEST_LIMIT).await?;
        rates.push(n as f64 / took.as_secs_f64().max(1e-9));
    }
    Ok(rates)
}

/// MB/s (10^6 bytes) of `rounds` downloads of the whole answer of a
/// `source` server that sends `bytes`.
pub async fn downloads(
    addr: SocketAddr,
    bytes: u64,
    rounds: usize,
) -> Result<Vec<f64>, BenchError> {
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let took = services::download(addr, bytes, ROUND_LIMIT).await?;
        rates.push(bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9));
    }
    Ok(rates)
}

/// Opens up to `n` connections to an echo server, each echoing once, and
/// calls `holding` with how many are open (and why fewer, if so) while it
/// holds them; closes them after.
pub async fn hold<F: std::future::Future<Output = ()>>(
    addr: SocketAddr,
    n: usize,
    holding: impl FnOnce(usize, Option<String>) -> F,
) {
    let held = services::hold(addr, n, HOLD_IN_FLIGHT, HOLD_LIMIT).await;
    holding(held.streams.len(), held.stopped.clone()).await;
    drop(held);
}
