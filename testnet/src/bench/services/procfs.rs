//! What a process holds, read from /proc on this host: an agent's resident
//! memory and file descriptors (its container runs meshd as a host process,
//! and a FROM-scratch image has nothing to ask inside), and this process's
//! own descriptor limit.

use std::time::Duration;

use crate::bench::BenchError;
use crate::docker::Docker;

/// Resident memory and file descriptors of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUse {
    pub rss_kib: u64,
    pub fds: usize,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
}

/// [`ProcUse`] of the process `/proc/<pid>` (`pid` may be `self`).
pub(super) fn read(pid: &str) -> Result<ProcUse, BenchError> {
    let dir = format!("/proc/{pid}");
    let io = |what| {
        let target = dir.clone();
        move |source| BenchError::Io {
            what,
            target,
            source,
        }
    };
    let status = std::fs::read_to_string(format!("{dir}/status")).map_err(io("read"))?;
    let limits = std::fs::read_to_string(format!("{dir}/limits")).map_err(io("read"))?;
    let fds = std::fs::read_dir(format!("{dir}/fd"))
        .map_err(io("list the descriptors of"))?
        .count();
    let bad = |what: &str| BenchError::Measure(format!("{dir}: no {what} in what Linux shows"));
    Ok(ProcUse {
        rss_kib: vm_rss_kib(&status).ok_or_else(|| bad("VmRSS"))?,
        fds,
        max_fds: max_open_files(&limits).ok_or_else(|| bad("Max open files"))?,
    })
}

/// The CPU time the processes `pids` have used so far (all their threads,
/// user and system), in Linux's fixed 100 ticks a second.
pub(super) fn cpu_time(pids: &[String]) -> Result<Duration, BenchError> {
    let mut ticks = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            what: "read",
            target: path.clone(),
            source,
        })?;
        ticks += stat_ticks(&stat)
            .ok_or_else(|| BenchError::Measure(format!("{path}: no CPU times in {stat:?}")))?;
    }
    Ok(Duration::from_millis(ticks * 10))
}

/// utime + stime, fields 14 and 15 of /proc/PID/stat (after the name in
/// parentheses, which may hold spaces and parentheses).
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// TCP sockets in TIME_WAIT in the network namespace of process `pid`.
pub(super) fn time_wait(pid: &str) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/net/sockstat");
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: "read",
        target: path.clone(),
        source,
    })?;
    tw_of(&text).ok_or_else(|| BenchError::Measure(format!("{path}: no TCP tw count in {text:?}")))
}

/// `tw N` of the `TCP:` line of /proc/PID/net/sockstat.
fn tw_of(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "tw")?;
    words.next()?.parse().ok()
}

/// The host pid of a container's main process (meshd, in an agent's).
pub(super) async fn container_pid(docker: &Docker, container: &str) -> Result<String, BenchError> {
    let pid = docker
        .run(&["inspect", "--format", "{{.State.Pid}}", container])
        .await?;
    match pid.parse::<u32>() {
        Ok(p) if p > 0 => Ok(pid),
        _ => Err(BenchError::Measure(format!(
            "container {container} has no running process (pid {pid:?})"
        ))),
    }
}

/// `VmRSS:   12345 kB` in /proc/PID/status.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit of `Max open files  20000  20000  files` in
/// /proc/PID/limits (`unlimited` counts as the largest).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
    {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let status = "Name:\tmeshd\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let me = read("self").unwrap();
        assert!(me.rss_kib > 0 && me.fds > 0 && me.max_fds > 0, "{me:?}");
        assert!(cpu_time(&["self".to_owned()]).is_ok());
    }

    #[test]
    fn time_wait_is_read_from_the_tcp_line() {
        let text = "sockets: used 50\nTCP: inuse 9 orphan 0 tw 346 alloc 23 mem 151\nUDP: inuse 0 mem 87\n";
        assert_eq!(tw_of(text), Some(346));
        assert_eq!(tw_of("UDP: inuse 0 mem 87\n"), None);
        assert!(time_wait("self").is_ok());
    }

    #[test]
    fn cpu_ticks_follow_the_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 4 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some(21));
        assert_eq!(stat_ticks("4242 (meshd) S 1"), None);
    }
}
