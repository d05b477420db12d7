//! What an engine needs of the host beyond Docker: `ip` (bridges and the
//! host's subnets), processes by pid (`/proc`, `kill`) and files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{EngineError, STOP_LIMIT};
use crate::subnet::Ipv4Net;

/// The IPv4 subnets of this host's interfaces (`ip -4 addr`): bridges of
/// other engines included, which Docker's own overlap check does not see.
pub fn host_subnets() -> Result<Vec<Ipv4Net>, EngineError> {
    let out = run("ip", &["-4", "-o", "addr", "show"])?;
    Ok(parse_ip_addr(&out))
}

/// Reads `ip -4 -o addr show` output: the `a.b.c.d/len` after `inet`.
fn parse_ip_addr(out: &str) -> Vec<Ipv4Net> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|&w| w == "inet")?;
            Ipv4Net::parse(words.next()?)
        })
        .collect()
}

pub(super) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs with `needle` in its command line (so that a
/// recycled pid is never signalled).
pub(super) fn runs_with(pid: u32, needle: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    String::from_utf8_lossy(&cmdline).contains(needle) && !is_gone(pid)
}

/// Whether `pid` has exited (a zombie of ours counts as exited).
pub(super) fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// SIGTERM, then SIGKILL if `pid` has not exited within [`STOP_LIMIT`].
pub(super) fn terminate(pid: u32) -> Result<(), EngineError> {
    let pid_arg = pid.to_string();
    if is_gone(pid) {
        return Ok(());
    }
    run("kill", &["-TERM", &pid_arg])?;
    let deadline = Instant::now() + STOP_LIMIT;
    while Instant::now() < deadline {
        if is_gone(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!(pid, "dockerd did not stop within {STOP_LIMIT:?}: killed");
    run("kill", &["-KILL", &pid_arg]).map(|_| ())
}

pub(super) fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub(super) fn run(program: &str, args: &[&str]) -> Result<String, EngineError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EngineError::Command {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(EngineError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn create_dir(path: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(path).map_err(|source| EngineError::Io {
        what: "create",
        path: path.to_owned(),
        source,
    })
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), EngineError> {
    std::fs::write(path, text).map_err(|source| EngineError::Io {
        what: "write",
        path: path.to_owned(),
        source,
    })
}

pub(super) fn remove_dir(path: &Path, what: &'static str) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        // Gone, or going under another cleanup.
        Err(_) if !path.exists() => Ok(()),
        Err(source) => Err(EngineError::Io {
            what,
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_subnets_from_ip_addr() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   5: mtd0    inet 10.252.7.1/24 brd 10.252.7.255 scope global mtd0\n";
        assert_eq!(
            parse_ip_addr(out),
            [
                Ipv4Net::parse("127.0.0.0/8").unwrap(),
                Ipv4Net::parse("10.252.7.0/24").unwrap()
            ]
        );
    }
}
