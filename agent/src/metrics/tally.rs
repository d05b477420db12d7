//! The few counters /metrics has that no state holds already: how many
//! times the supervisor took each decision since meshd started, and what
//! this host's image pulls brought. The supervisor owns a [`Tally`] (no
//! atomics, no sharing: one task bumps it) and hands out a copy with its
//! task counts at each scrape; [`PullCounts`] is shared by every pull.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the container start time buckets, in seconds: a
/// container usually starts in 0.1 to 1 s; Docker under load takes longer.
const START_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Decisions counted since start; each field only grows.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Attempts started here: a task placed on this node, first run or retry.
    pub attempts_started: u64,
    /// Attempts that ended and were queued here again to retry.
    pub retries: u64,
    /// Tasks a peer offered (placement or a move) that this node took.
    pub offers_taken: u64,
    /// Offers this node refused (busy, draining, Docker away, …).
    pub offers_refused: u64,
    /// Tasks of a dead node this node re-placed, as their keeper.
    pub replacements: u64,
    /// How long the runtime took to create and start each task's
    /// container (its pull not included). A clone shares the counts.
    pub container_start: Histogram,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            attempts_started: 0,
            retries: 0,
            offers_taken: 0,
            offers_refused: 0,
            replacements: 0,
            container_start: Histogram::new(START_BUCKETS),
        }
    }
}

impl Tally {
    /// A task's container started after `took`.
    pub fn container_started(&mut self, took: Duration) {
        self.container_start.observe(took.as_secs_f64());
    }

    /// Counts an offer's answer.
    pub fn offer<T, E>(&mut self, answer: &Result<T, E>) {
        match answer {
            Ok(_) => self.offers_taken += 1,
            Err(_) => self.offers_refused += 1,
        }
    }
}

/// This host's image pulls since start, bumped by `images::Pulls` (each
/// pull is its own task, hence atomics) and read at scrape time.
#[derive(Debug, Default)]
pub struct PullCounts {
    succeeded: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

/// What [`PullCounts`] held at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    pub succeeded: u64,
    pub failed: u64,
    /// Layer bytes received, from registries and peers.
    pub bytes: u64,
}

impl PullCounts {
    /// A pull ended, well or not.
    pub fn ended(&self, ok: bool) {
        let n = if ok { &self.succeeded } else { &self.failed };
        n.fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn read(&self) -> Pulled {
        Pulled {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The calls this node made to peers, by kind (`Request::name`) and
/// outcome: `ok`, `failed` (the peer answered with an error) or
/// `no_answer` (unreachable, refused, timed out). Shared by every clone of
/// `Mesh`, which counts at its one `call`.
#[derive(Debug, Default)]
pub struct RpcCounts(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl RpcCounts {
    pub fn count(&self, kind: &'static str, outcome: &'static str) {
        // A poisoned lock only means a thread panicked; the map is intact.
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *calls.entry((kind, outcome)).or_default() += 1;
    }

    pub fn read(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Bytes a pull received since it last reported `seen` (a progress that
/// went back, a new source starting over, counts nothing until it passes
/// what was seen).
pub fn new_bytes(seen: &mut u64, now: u64) -> u64 {
    let new = now.saturating_sub(*seen);
    *seen = (*seen).max(now);
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_count_by_answer() {
        let mut t = Tally::default();
        t.offer::<(), ()>(&Ok(()));
        t.offer::<(), ()>(&Err(()));
        t.offer::<(), ()>(&Err(()));
        assert_eq!((t.offers_taken, t.offers_refused), (1, 2));
    }

    #[test]
    fn calls_count_by_kind_and_outcome() {
        let calls = RpcCounts::default();
        calls.count("offer", "ok");
        calls.count("offer", "ok");
        calls.count("list", "no_answer");
        let read = calls.read();
        assert_eq!(read[&("offer", "ok")], 2);
        assert_eq!(read[&("list", "no_answer")], 1);
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn bytes_count_once_even_when_a_pull_starts_over() {
        let mut seen = 0;
        let steps = [10, 40, 40, 5, 30, 60].map(|now| new_bytes(&mut seen, now));
        assert_eq!(steps, [10, 30, 0, 0, 0, 20]);
        let counts = PullCounts::default();
        counts.ended(true);
        counts.ended(false);
        counts.received(steps.iter().sum());
        assert_eq!(
            counts.read(),
            Pulled {
                succeeded: 1,
                failed: 1,
                bytes: 60
            }
        );
    }
}
