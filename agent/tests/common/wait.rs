//! Waiting on what a test can observe, instead of sleeping: `wait_until`
//! polls a probe until it holds, `hold_for` checks that one keeps holding.
//! Both fail the test with what the probe last saw.
//!
//! Time is tokio's: under a paused clock the budget is virtual time.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a probe is asked again.
const POLL: Duration = Duration::from_millis(100);

/// What one look at the system found: done (with a value), or not yet
/// (with what was seen, for the failure message).
pub trait Observation {
    type Done;
    fn into_result(self) -> Result<Self::Done, String>;
}

impl Observation for bool {
    type Done = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition did not hold".into())
        }
    }
}

impl<T, E: Debug> Observation for Result<T, E> {
    type Done = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:#?}"))
    }
}

/// Asks `probe` until it is done and returns its value; fails the test
/// after `budget`, saying what the probe saw last.
pub async fn wait_until<F, Fut, O>(what: &str, budget: Duration, mut probe: F) -> O::Done
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Observation,
{
    let deadline = Instant::now() + budget;
    loop {
        let seen = match probe().await.into_result() {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {budget:?} waiting for: {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks `probe` for `duration` and fails the test the first time it does
/// not hold: "nothing happens for a while", checked all along.
pub async fn hold_for<F, Fut, O>(what: &str, duration: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Observation,
{
    let started = Instant::now();
    let end = started + duration;
    loop {
        if let Err(seen) = probe().await.into_result() {
            panic!(
                "stopped holding after {:?} of {duration:?}: {what}; seen: {seen}",
                started.elapsed()
            );
        }
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
