//! The pure core of Ganger: identifiers, the topology and task models, the
//! core allocator, the task queue, the HTTP API and wire types.
//!
//! Nothing here opens a socket, reads a clock or touches Docker: callers pass
//! `now` in (milliseconds since the Unix epoch) and carry out what the
//! functions decide. That keeps every decision unit-testable.

pub mod alloc;
pub mod api;
pub mod attempts;
pub mod audit;
pub mod auth;
pub mod build_info;
pub mod confirm;
pub mod cores;
pub mod cpuset;
pub mod digest_codec;
pub mod disclaim;
pub mod events;
pub mod failover;
pub mod gossip;
pub mod ids;
pub mod image;
pub mod labels;
pub mod lease;
pub mod listing;
pub mod load;
#[cfg(feature = "pki")]
pub mod pki;
pub mod placement;
pub mod queue;
pub mod resources;
pub mod retention;
pub mod rpc;
pub mod service;
pub mod task;
#[cfg(feature = "pki")]
pub mod token;
pub mod topology;
pub mod wire;

pub use alloc::{Allocation, CoreAllocator};
pub use cpuset::CpuSet;
pub use ids::{NodeId, ServiceName, TaskId, UserName};
pub use resources::{CoreCount, MemoryBytes};
pub use task::{TaskRecord, TaskSpec, TaskState};
pub use topology::Topology;
