//! Where a run's time went: CPU time used host-wide and by the agents, read
//! from /proc (Linux; elsewhere the numbers are simply absent).

use std::time::Duration;

/// CPU time used host-wide and by the agents (processes named `meshd`,
/// visible from the host although they run in containers). Host-wide counts
/// everything, anything else running on the machine included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuUse {
    pub host: Duration,
    pub meshd: Duration,
}

/// [`CpuUse`] since boot; `None` where /proc cannot tell.
pub(super) fn cpu_now() -> Option<CpuUse> {
    let host = busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mut meshd = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        // Processes come and go while we read: skip what is gone.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("meshd", ticks)) = pid_ticks(&stat) {
            meshd += ticks;
        }
    }
    Some(CpuUse {
        host: ticks(host),
        meshd: ticks(meshd),
    })
}

/// The CPU used since `earlier` (from [`cpu_now`]).
pub(super) fn cpu_since(earlier: Option<CpuUse>) -> Option<CpuUse> {
    let (earlier, now) = (earlier?, cpu_now()?);
    Some(CpuUse {
        host: now.host.saturating_sub(earlier.host),
        meshd: now.meshd.saturating_sub(earlier.meshd),
    })
}

/// /proc counts in USER_HZ, which Linux fixes at 100 per second.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// Busy ticks of all CPUs from /proc/stat: user, nice, system, irq,
/// softirq and steal (not idle or iowait).
fn busy_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// A process's name and user+system ticks from its /proc/PID/stat (the
/// name is in parentheses and may hold spaces and parentheses).
fn pid_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name come fields 3 on; utime and stime are fields 14 and 15.
    let mut rest = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 5 50 9000 7 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 50 + 1 + 2 + 3));
        assert_eq!(busy_ticks("intr 1 2"), None);
        let pid = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 4 0 0 20 0 1 0";
        assert_eq!(pid_ticks(pid), Some(("my (odd) name", 21)));
        assert_eq!(pid_ticks("4242 (meshd) S 1"), None);
    }
}
