//! Images on this host: registry credentials and pulls.

mod auth;
mod pulls;

pub use auth::{AuthError, RegistryAuth};
pub use pulls::{EnsureError, Pulls};
