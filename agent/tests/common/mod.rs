//! The one harness of the agent's integration tests: in-process agents
//! ([`cluster`]), their API through meshctl's client ([`api`]), waiting on
//! what can be observed instead of sleeping ([`wait`]), the real Docker
//! engine ([`docker`]), a second engine of its own ([`engine`]) and
//! loopback addresses ([`net`]).

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod cluster;
pub mod docker;
pub mod engine;
pub mod net;
pub mod quic;
pub mod registry;
pub mod services;
pub mod services_docker;
pub mod wait;

pub use api::{Api, Refusal, refusal};
pub use cluster::{AUDIT_LOG, Setup, TestAgent, unique, unique_node, wait_formed};
pub use docker::{NodeContainers, docker, remove_node_containers, require_docker, run_sleeper};
pub use net::{free_addr, own_loopback};
pub use wait::{hold_for, wait_until};

use mesh_protocol::api::SubmitRequest;

/// The test service image (`scripts/images` builds it).
pub const IMAGE: &str = "mesh-testsvc:latest";

pub fn sleep_task(cores: u32, secs: &str) -> SubmitRequest {
    task(cores, &["sleep", secs])
}

pub fn task(cores: u32, cmd: &[&str]) -> SubmitRequest {
    SubmitRequest {
        image: IMAGE.into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        cores: Some(cores),
        ..Default::default()
    }
}
