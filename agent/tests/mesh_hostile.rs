//! Hostile traffic at the mesh's QUIC port, agents in-process on loopback
//! (the in-memory runtime): connection floods, stalled handshakes, and
//! peers that try to make an agent hold memory. Whatever they send, peers
//! keep joining and calling.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::quic::{Attempts, Flood};
use common::*;

fn setup() -> Setup {
    Setup::memory("h")
}

/// Both agents list each other alive.
async fn wait_joined(a: &TestAgent, b: &TestAgent) {
    let mut expect = vec![a.id.to_string(), b.id.to_string()];
    expect.sort();
    wait_until(
        "the joining agent and the attacked one see each other",
        Duration::from_secs(15),
        || async {
            for n in [a, b] {
                let alive = n.alive().await;
                if alive != expect {
                    return Err((n.id.clone(), alive));
                }
            }
            Ok(())
        },
    )
    .await;
}

fn quic_addr(a: &TestAgent) -> SocketAddr {
    a.gossip().parse().unwrap()
}

#[tokio::test]
async fn a_flood_of_spoofed_initials_does_not_stop_a_peer_joining() {
    let setup = setup();
    let target = setup.start(&[]).await;
    let to = quic_addr(&target);
    // Far more attempts than there are handshake slots, and more every
    // 50 ms (about 1,000 a second) while the peer joins; the flood reads
    // nothing back, as a spoofed source cannot.
    let mut attempts = Attempts::from(IpAddr::from([127, 0, 0, 1]));
    attempts.spoofed(to, 200);
    let _flood = Flood::start(attempts, Duration::from_millis(50), move |a| {
        a.spoofed(to, 50)
    });
    let joiner = setup.start(&[target.gossip()]).await;
    wait_joined(&target, &joiner).await;
}

#[tokio::test]
async fn stalled_handshakes_from_one_source_do_not_stop_a_peer_joining() {
    let setup = setup();
    let target = setup.start(&[]).await;
    let to = quic_addr(&target);
    // A source that proves its address (it follows the Retry), then never
    // finishes a handshake, more than once per slot.
    // (Off the test's runtime thread, which runs the agent.)
    let attempts = tokio::task::spawn_blocking(move || {
        let mut attempts = Attempts::from(IpAddr::from([127, 0, 0, 9]));
        attempts.validated_then_silent(to, 100);
        attempts
    })
    .await
    .unwrap();
    let _flood = Flood::start(attempts, Duration::from_millis(50), move |a| {
        a.validated_then_silent(to, 20);
    });
    let joiner = setup.start(&[target.gossip()]).await;
    wait_joined(&target, &joiner).await;
    let (refused, _) = target.mesh().refusals();
    assert!(refused > 0, "the staller's extra attempts were refused");
}
