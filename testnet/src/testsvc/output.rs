//! Lines for the container log. Writing never panics: a closed stdout or
//! stderr (`docker run` detached with no reader) must not kill a server.

use std::fmt;
use std::io::{self, Write};

/// Writes one line to stdout and flushes it, ignoring failures.
pub fn out(line: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Writes one line to stderr, ignoring failures.
pub fn err(line: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
