//! Failures that end `mesh-testsvc` with exit code 1. Per-connection errors
//! never get here: the server logs them and keeps serving.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug)]
pub enum TestsvcError {
    /// The listening socket could not be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// `count` could not append its line.
    AppendCount { path: PathBuf, source: io::Error },
}

impl fmt::Display for TestsvcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source} (is the port in use? choose another with --port)"
            ),
            Self::AppendCount { path, source } => write!(
                f,
                "cannot append to {}: {source} (is its directory mounted and writable?)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TestsvcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::AppendCount { source, .. } => Some(source),
        }
    }
}
