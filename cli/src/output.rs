//! Where meshctl's commands write: stdout for answers, stderr for remarks,
//! and the clock that task ages are shown against. The only place that
//! touches either.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::run::Error;

/// Writes to stdout; a closed pipe ends the output quietly.
pub(crate) fn print(text: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<(), Error> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// A remark for the person at the terminal, on stderr.
pub(crate) fn note(text: &str) {
    // Nothing better to do if stderr is gone.
    let _ = writeln!(io::stderr(), "{text}");
}

/// A status line on stderr that changes in place: on a terminal each new
/// line overwrites the last (cut to the terminal's width, since a line that
/// wraps cannot be overwritten whole); elsewhere (a log file, CI) each
/// change is a line of its own. Unchanged lines are not written again.
pub(crate) struct StatusLine {
    last: std::cell::RefCell<String>,
    terminal: bool,
}

impl StatusLine {
    pub(crate) fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            last: std::cell::RefCell::new(String::new()),
            terminal: io::stderr().is_terminal(),
        }
    }

    pub(crate) fn show(&self, line: &str) {
        let mut last = self.last.borrow_mut();
        if *last == line {
            return;
        }
        let mut err = io::stderr().lock();
        // Nothing better to do if stderr is gone.
        let _ = if self.terminal {
            let shown = fit(line, terminal_width());
            write!(err, "\r\x1b[K{shown}").and_then(|()| err.flush())
        } else {
            writeln!(err, "{line}")
        };
        line.clone_into(&mut last);
    }

    /// Ends the line on a terminal, so what follows starts on its own.
    pub(crate) fn done(&self) {
        if self.terminal && !self.last.borrow().is_empty() {
            let _ = writeln!(io::stderr());
        }
    }
}

/// The width of the terminal on stderr, if it says.
fn terminal_width() -> Option<usize> {
    let size = rustix::termios::tcgetwinsize(io::stderr()).ok()?;
    (size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// `line` cut to fit `width` columns (one less, so the cursor stays on the
/// line), ending in `…` when cut. Counts characters, not display widths.
fn fit(line: &str, width: Option<usize>) -> std::borrow::Cow<'_, str> {
    let Some(room) = width.map(|w| w.saturating_sub(1)) else {
        return line.into();
    };
    if line.chars().count() <= room {
        return line.into();
    }
    let mut cut: String = line.chars().take(room.saturating_sub(1)).collect();
    cut.push('…');
    cut.into()
}

pub(crate) fn now_ms() -> u64 {
    // A clock before 1970 is a broken host; ages then read as "0s".
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn a_status_line_is_cut_to_the_terminal_width() {
        assert_eq!(fit("t1: running on n2", None), "t1: running on n2");
        assert_eq!(fit("t1: running on n2", Some(80)), "t1: running on n2");
        assert_eq!(fit("t1: running on n2", Some(10)), "t1: runn…");
        assert_eq!(fit("t1: running on n2", Some(10)).chars().count(), 9);
        assert_eq!(fit("abc", Some(4)), "abc");
        assert_eq!(fit("abcd", Some(4)), "ab…");
        assert_eq!(fit("ab", Some(1)), "…");
        assert_eq!(fit("ab", Some(0)), "…");
    }
}
