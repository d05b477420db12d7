//! The harness's waiting steps themselves, on tokio's paused clock (no
//! agent and no socket here, so virtual time is safe): `wait_until` gives
//! the probe's value or fails with what it saw last, `hold_for` fails at the
//! first look that does not hold.

#![allow(clippy::unwrap_used)]

mod common;

use std::cell::Cell;
use std::time::Duration;

use common::*;

/// One more call of a probe; how many so far.
fn count(calls: &Cell<u32>) -> u32 {
    calls.set(calls.get() + 1);
    calls.get()
}

#[tokio::test(start_paused = true)]
async fn wait_until_returns_what_the_probe_found() {
    let calls = Cell::new(0);
    let found = wait_until("the third call", Duration::from_secs(10), || async {
        let n = count(&calls);
        if n >= 3 { Ok(n) } else { Err(n) }
    })
    .await;
    assert_eq!(found, 3);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "waiting for: the impossible; last seen: 1")]
async fn wait_until_fails_with_the_last_observation() {
    wait_until("the impossible", Duration::from_secs(1), || async {
        Err::<(), _>(1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn hold_for_keeps_asking_for_the_whole_time() {
    let calls = Cell::new(0);
    let started = tokio::time::Instant::now();
    hold_for("always", Duration::from_secs(2), || async {
        count(&calls);
        true
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(calls.get() > 10, "asked {} times", calls.get());
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "stopped holding after 500ms of 2s: a quiet counter; seen: 6")]
async fn hold_for_fails_at_the_first_look_that_does_not_hold() {
    let calls = Cell::new(0);
    hold_for("a quiet counter", Duration::from_secs(2), || async {
        let n = count(&calls);
        if n <= 5 { Ok(()) } else { Err(n) }
    })
    .await;
}
