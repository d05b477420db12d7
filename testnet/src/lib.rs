//! Ganger's test network: many `meshd` agents on one machine.
//!
//! [`Testnet`] starts N agents as containers of the `meshd:testnet` image
//! (built by `scripts/images`) on a Docker network of their own, each with
//! its own address, hostname, node certificate from the testnet's CA, data
//! directory and synthetic topology, all sharing the host's Docker socket and
//! one network alias, `mesh`. It then kills, restarts, partitions and heals
//! them, and tears everything down. `scripts/testnet` drives it from the
//! command line (the `mesh-testnet` binary); tests use it as a library and
//! read as steps:
//!
//! ```no_run
//! # async fn scenario() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use mesh_testnet::{Testnet, TestnetOptions, expect};
//!
//! let net = Testnet::up(TestnetOptions::for_test("kill").nodes(5)).await?;
//! let all = net.nodes();
//! net.wait_views("all see all", Duration::from_secs(10), &all, expect::alive_with_topology(&all)).await?;
//! net.kill("n5").await?;
//! net.wait_views("n5 is dead", Duration::from_secs(10), &all[..4], expect::dead(&["n5"])).await?;
//! net.down().await?; // or just drop it: a test's testnet is removed on drop, panics included
//! # Ok(())
//! # }
//! ```
//!
//! The crate also holds [`testsvc`], the library behind the std-only
//! `mesh-testsvc` binary (the `mesh-testsvc:latest` image). Everything else
//! sits behind the default `harness` feature, so that `mesh-testsvc` builds
//! with no dependencies.

pub mod testsvc;

#[cfg(feature = "harness")]
mod agent;
#[cfg(feature = "harness")]
pub mod bench;
#[cfg(feature = "harness")]
mod certs;
#[cfg(feature = "harness")]
pub mod chaos;
#[cfg(feature = "harness")]
pub mod docker;
#[cfg(feature = "harness")]
pub mod engine;
#[cfg(feature = "harness")]
mod error;
#[cfg(feature = "harness")]
pub mod expect;
#[cfg(feature = "harness")]
mod leftovers;
#[cfg(feature = "harness")]
mod name;
#[cfg(feature = "harness")]
mod net;
#[cfg(feature = "harness")]
mod options;
#[cfg(feature = "harness")]
pub mod sim;
#[cfg(feature = "harness")]
mod sockproxy;
#[cfg(feature = "harness")]
mod state;
#[cfg(feature = "harness")]
mod status;
#[cfg(feature = "harness")]
mod steps;
#[cfg(feature = "harness")]
mod subnet;
#[cfg(feature = "harness")]
mod teardown;

#[cfg(feature = "harness")]
pub use crate::{
    agent::{API_PORT, GOSSIP_PORT, LABEL_NODE, LABEL_TESTNET, MESH_ALIAS},
    error::{StepError, TestnetError},
    leftovers::{LEFTOVERS_DIR, Leftover, Leftovers, Retried},
    name::{NameError, TestnetName},
    net::Testnet,
    options::{
        DEFAULT_GOSSIP_INTERVAL, DEFAULT_IMAGE, DEFAULT_READY_TIMEOUT, DEFAULT_TOPOLOGY,
        TestnetOptions, default_state_dir, default_state_root,
    },
    state::{NodeRecord, State},
    status::{NodeState, NodeStatus, table},
    steps::{POLL_INTERVAL, SCENARIO_LIMIT, hold_for, scenario, wait_until},
    subnet::MAX_AGENTS,
    teardown::{NetworkFate, Removed},
};
