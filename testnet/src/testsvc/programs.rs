//! The modes that run and exit without serving: `sleep`, `print`, `burn` and
//! `count`. Output goes to the writers they are given, so tests can read it.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{self, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Pause between the lines of `print`.
pub const PRINT_PAUSE: Duration = Duration::from_millis(10);

/// Prints `sleeping SECONDS`, sleeps, prints `done`.
pub fn sleep(duration: Duration, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "sleeping {}", duration.as_secs_f64())?;
    out.flush()?;
    thread::sleep(duration);
    writeln!(out, "done")?;
    out.flush()
}

/// Prints lines `1..=count`, odd ones to `out` as `out i` and even ones to
/// `err` as `err i`, flushing each and pausing between them.
pub fn print_lines(
    count: u64,
    pause: Duration,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<()> {
    for i in 1..=count {
        if i > 1 {
            thread::sleep(pause);
        }
        if i % 2 == 1 {
            writeln!(out, "out {i}")?;
            out.flush()?;
        } else {
            writeln!(err, "err {i}")?;
            err.flush()?;
        }
    }
    Ok(())
}

/// Keeps one CPU busy for `duration`.
pub fn burn(duration: Duration) {
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < duration {
        for _ in 0..10_000 {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

/// Appends `line` to `path` (creating it) in one `write`, so concurrent
/// writers on a shared volume do not interleave within a line.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::process;

    use super::*;

    #[test]
    fn sleep_announces_start_and_end() {
        let mut out = Vec::new();
        sleep(Duration::from_millis(1), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "sleeping 0.001\ndone\n");
        let mut out = Vec::new();
        sleep(Duration::ZERO, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "sleeping 0\ndone\n");
    }

    #[test]
    fn print_alternates_streams() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print_lines(5, Duration::ZERO, &mut out, &mut err).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "out 1\nout 3\nout 5\n");
        assert_eq!(String::from_utf8(err).unwrap(), "err 2\nerr 4\n");
    }

    #[test]
    fn burn_returns_after_duration() {
        let start = Instant::now();
        burn(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn append_creates_then_appends() {
        let dir = std::env::temp_dir().join(format!("mesh-testsvc-count-{}", process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("count");
        append_line(&path, "a 1 0\n").unwrap();
        append_line(&path, "b 1 1\n").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text, "a 1 0\nb 1 1\n");
    }
}
