//! Host CPU use, from the kernel's `/proc/stat` counters, for the `load`
//! gossip value.

/// Busy and total jiffies from the `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // Saturating: whatever the file says, no overflow.
    let total = fields
        .iter()
        .take(8)
        .fold(0u64, |a, &b| a.saturating_add(b));
    // idle + iowait
    let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
    Some((total.saturating_sub(idle), total))
}

/// CPU use between two samples, 0..=100.
pub fn percent(before: (u64, u64), after: (u64, u64)) -> u32 {
    let busy = after.0.saturating_sub(before.0);
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0;
    }
    let busy = u128::from(busy.min(total));
    let total = u128::from(total);
    ((busy * 100 + total / 2) / total).min(100) as u32
}

/// Remembers the last sample so each call reports use since the previous one.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    pub fn sample(&mut self) -> u32 {
        let Some(now) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_proc_stat)
        else {
            return 0;
        };
        let pct = self.last.map(|before| percent(before, now)).unwrap_or(0);
        self.last = Some(now);
        pct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes() {
        let a = parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, (200, 1000));
        let b = parse_proc_stat("cpu  150 0 150 900 0 0 0 0 0 0\n").unwrap();
        assert_eq!(percent(a, b), 50);
        assert_eq!(percent(a, a), 0);
        assert!(parse_proc_stat("garbage").is_none());
        assert!(parse_proc_stat("cpu  x y").is_none());
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let max = u64::MAX;
        let line = format!("cpu  {max} {max} {max} {max} {max} 0 0 0\n");
        let (busy, total) = parse_proc_stat(&line).unwrap();
        assert_eq!(total, u64::MAX);
        assert!(busy <= total);
        assert_eq!(percent((0, 0), (u64::MAX, u64::MAX)), 100);
    }
}
