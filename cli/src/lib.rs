//! meshctl: the command-line client of a Ganger agent's HTTP+JSON control
//! API, and the maker of the mesh's TLS certificates (`meshctl tls`).
//! `main` parses the command line and calls [`run`]; everything else is
//! here so tests can reach it.

pub mod client;
pub mod commands;
pub mod node_url;
mod output;
pub mod render;
mod run;
pub mod tls;
pub mod token;

pub use commands::Cli;
pub use run::{Error, run};
