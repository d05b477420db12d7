//! `meshd`, the Ganger agent, as a library: everything the binary does is
//! here so that tests can start agents in-process.

pub mod agent;
pub mod api;
pub mod clock;
pub mod config;
pub mod disk;
pub mod events;
pub mod images;
pub mod limits;
pub mod logs;
pub mod mesh;
pub mod metrics;
pub mod repeat;
pub mod runtime;
pub mod services;
pub mod store;
pub mod supervisor;
pub mod tasks;
pub mod topology;

pub use agent::{AgentError, RunningAgent, run, start, start_with_runtime};
pub use config::{Args, Config};
