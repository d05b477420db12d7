//! Times as people write them, for `meshctl events`: event times shown in
//! UTC (`2026-12-01T12:00:00.123Z`), and `--since` read as a span back from
//! now (`90s`, `10m`, `2h`, `1d`) or a UTC time (`2026-12-01T12:00:00Z`,
//! seconds optional), without a time library.

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        ms % 1000
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time: give a span back from now (90s, 10m, 2h, 1d) or a UTC time (2026-12-01T12:00:00Z)"
)]
pub struct BadTime(pub String);

/// `--since`: a span back from `now_ms`, or a UTC time; in ms since the
/// Unix epoch.
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, BadTime> {
    let bad = || BadTime(s.to_owned());
    let t = s.trim();
    if let Some(unit) = t.chars().last().filter(|c| c.is_ascii_alphabetic())
        && t.len() > 1
        && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
    {
        let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let unit_ms: u64 = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(bad()),
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)));
    }
    parse_utc(t).ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM[:SS]Z` (a space for the T, and no Z, are taken too).
fn parse_utc(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let da: u32 = d.next()?.parse().ok()?;
    let mut c = time.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let mi: i64 = c.next()?.parse().ok()?;
    let s: i64 = c.next().map_or(Some(0), |s| s.parse().ok())?;
    let valid = d.next().is_none()
        && c.next().is_none()
        && (1..=12).contains(&mo)
        && (1..=31).contains(&da)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..61).contains(&s)
        && y >= 1970;
    if !valid {
        return None;
    }
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_times() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_764_590_400_123), "2025-12-01T12:00:00.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            parse_since("2025-12-01T12:00:00Z", 0),
            Ok(1_764_590_400_000)
        );
        assert_eq!(parse_since("2025-12-01 12:00", 0), Ok(1_764_590_400_000));
    }

    #[test]
    fn spans_back_from_now() {
        let now = 10_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since("10m", now), Ok(now - 600_000));
        assert_eq!(parse_since("1d", now), Ok(0), "saturates at the epoch");
        for bad in [
            "",
            "m",
            "10x",
            "-5m",
            "yesterday",
            "2025-13-01T00:00Z",
            "2025-12-01",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn what_is_shown_reads_back(secs in 0u64..8_000_000_000) {
            let shown = format_utc(secs * 1000);
            let z = shown.replace(".000Z", "Z");
            prop_assert_eq!(parse_since(&z, 0), Ok(secs * 1000));
        }
    }
}
