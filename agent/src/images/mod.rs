//! Images on this host: registry credentials, pulls, and image GC (the
//! ledger of what this agent pulled and used, and the removal of idle
//! images past `--image-gc`).

mod auth;
pub mod gc;
mod ledger_file;
mod notes;
mod pulls;

pub use auth::{AuthError, RegistryAuth};
pub use gc::{GcSettings, ImageGc, NamedImages};
pub use ledger_file::LedgerFile;
pub use notes::{ImageNotes, Note, NoteInbox};
pub use pulls::{EnsureError, Pulls};
