//! Images on this host: registry credentials, pulls, images shared with
//! peers (asked for, fetched, served), what the host holds as published to
//! the mesh, and image GC (the ledger of what this agent pulled and used,
//! and the removal of idle images past `--image-gc`).

mod auth;
mod events;
mod fetch;
pub mod gc;
mod ledger_file;
mod notes;
pub mod peers;
pub mod publish;
mod pulls;
pub mod serve;

pub use auth::{AuthError, RegistryAuth};
pub use gc::{GcSettings, ImageGc, NamedImages};
pub use ledger_file::LedgerFile;
pub use notes::{ImageNotes, Note, NoteInbox};
pub use peers::{Asked, FetchError, Holder, ImagePeers, MeshPeers};
pub use pulls::{EnsureError, Pulls};
