//! Images on this host: registry credentials, pulls, and images shared
//! with peers (asked for, fetched, served).

mod auth;
mod fetch;
pub mod peers;
mod pulls;
pub mod serve;

pub use auth::{AuthError, RegistryAuth};
pub use peers::{FetchError, Holder, ImagePeers, MeshPeers};
pub use pulls::{EnsureError, Pulls};
