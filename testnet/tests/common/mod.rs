//! Setup shared by the testnet scenarios.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use mesh_testnet::{Testnet, TestnetOptions, expect};

/// Three agents of `topology` that all see each other alive, with their
/// topologies published.
pub async fn three_agents(label: &str, topology: &str) -> Result<Testnet> {
    let net = Testnet::up(TestnetOptions::for_test(label).nodes(3).topology(topology))
        .await
        .context("starting a 3-agent testnet")?;
    let all = net.nodes();
    net.wait_views(
        "all see all",
        Duration::from_secs(20),
        &all,
        expect::alive_with_topology(&all),
    )
    .await?;
    Ok(net)
}
