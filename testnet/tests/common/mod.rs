//! Setup shared by the testnet scenarios.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use mesh_testnet::{Testnet, TestnetOptions, expect};

/// Three agents of `topology` that all see each other alive, with their
/// topologies published.
pub async fn three_agents(label: &str, topology: &str) -> Result<Testnet> {
    up_all_alive(TestnetOptions::for_test(label).nodes(3).topology(topology)).await
}

/// The testnet `options` describe, once all its agents see each other
/// alive with their topologies published.
pub async fn up_all_alive(options: TestnetOptions) -> Result<Testnet> {
    let net = Testnet::up(options).await.context("starting a testnet")?;
    let all = net.nodes();
    net.wait_views(
        "all see all",
        Duration::from_secs(30),
        &all,
        expect::alive_with_topology(&all),
    )
    .await?;
    Ok(net)
}

pub mod engines;

/// Debian's `docker-registry` on a loopback port, shared with the agent's
/// tests (it pushes through the host's engine).
#[path = "../../../agent/tests/common/registry.rs"]
pub mod registry;

/// Asks `probe` until it answers `Ok` and returns its value; fails the test
/// after `budget` with what it last answered (the form `registry` calls).
pub async fn wait_until<F, Fut, T, E>(what: &str, budget: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {budget:?} waiting for: {what}; last seen: {seen:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
