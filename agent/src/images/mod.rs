//! Images on this host: registry credentials, pulls, and what the host
//! holds as published to the mesh.

mod auth;
pub mod publish;
mod pulls;

pub use auth::{AuthError, RegistryAuth};
pub use pulls::{EnsureError, Pulls};
