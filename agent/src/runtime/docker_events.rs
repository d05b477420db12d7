//! The host's image events through Docker (`GET /events`, type `image`):
//! whoever pulls, loads, imports, tags, untags, removes or prunes an image,
//! the agent hears of it at once, so what it publishes follows.

use std::collections::HashMap;

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;

use super::docker::DockerRuntime;
use super::{ImageEvents, RuntimeError};

/// The image events that change what the host holds or under which names
/// (`push` and `save` change nothing).
const CHANGES: [&str; 7] = ["pull", "load", "import", "tag", "untag", "delete", "prune"];

impl DockerRuntime {
    pub(super) async fn watch_images(&self) -> Result<ImageEvents, RuntimeError> {
        let docker = self.client().await?;
        // The stream's request only goes out on its first poll: ask now
        // whether Docker answers, so that the caller knows it is watching,
        // and for Docker's time, so that changes between this answer and
        // the request are told too (Docker keeps its recent events).
        let info = docker.info().await.map_err(|e| RuntimeError::Unavailable {
            endpoint: self.endpoint_name().to_owned(),
            cause: e.to_string(),
        })?;
        let options = EventsOptions {
            since: info.system_time.as_deref().and_then(since_of),
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["image".to_owned()]),
                (
                    "event".to_owned(),
                    CHANGES.iter().map(|a| (*a).to_owned()).collect(),
                ),
            ])),
            ..Default::default()
        };
        let endpoint = self.endpoint_name().to_owned();
        Ok(docker
            .events(Some(options))
            .map(move |event| {
                event.map(|_| ()).map_err(|e| RuntimeError::Unavailable {
                    endpoint: endpoint.clone(),
                    cause: format!("the image event stream broke: {e}"),
                })
            })
            .boxed())
    }
}

/// Docker's time as it writes it (RFC 3339 with up to nine decimals, as Go
/// formats `time.RFC3339Nano`) in the form the events API takes for
/// `since`: `SECONDS.NANOSECONDS` since the epoch.
fn since_of(rfc3339: &str) -> Option<String> {
    let (date, rest) = rfc3339.split_once('T')?;
    let (clock, offset) = match rest.strip_suffix('Z') {
        Some(clock) => (clock, 0),
        None => {
            let at = rest.rfind(['+', '-'])?;
            let (clock, zone) = rest.split_at(at);
            let (hours, minutes) = zone.get(1..)?.split_once(':')?;
            let offset = number(hours, 0..24)? * 3600 + number(minutes, 0..60)? * 60;
            (
                clock,
                if zone.starts_with('-') {
                    -offset
                } else {
                    offset
                },
            )
        }
    };
    let mut ymd = date.splitn(3, '-');
    let year = number(ymd.next()?, 0..10_000)?;
    let month = number(ymd.next()?, 1..13)?;
    let day = number(ymd.next()?, 1..32)?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.splitn(3, ':');
    let hour = number(hms.next()?, 0..24)?;
    let minute = number(hms.next()?, 0..60)?;
    // 60: a leap second.
    let second = number(hms.next()?, 0..61)?;
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = format!("{fraction:0<9}").parse().ok()?;
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(format!("{seconds}.{nanos:09}"))
}

/// A decimal number of digits only, within `range`.
fn number(s: &str, range: std::ops::Range<i64>) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| range.contains(n))
}

/// Days from 1970-01-01 to the given day of the proleptic Gregorian
/// calendar (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    // Months counted from March, so that February is last.
    let march_based = (month + 9) % 12;
    let day_of_year = (153 * march_based + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::since_of;

    #[test]
    fn docker_time_becomes_seconds_and_nanoseconds_since_the_epoch() {
        let cases = [
            ("1970-01-01T00:00:00Z", "0.000000000"),
            ("2000-03-01T00:00:00Z", "951868800.000000000"),
            // `date -u -d 2026-12-01T10:33:07Z +%s`
            ("2026-12-01T10:33:07.123456789Z", "1796121187.123456789"),
            ("2026-12-01T10:33:07.5Z", "1796121187.500000000"),
            ("2026-12-01T11:33:07.5+01:00", "1796121187.500000000"),
            ("2026-12-01T05:03:07.5-05:30", "1796121187.500000000"),
            ("2024-02-29T23:59:59Z", "1709251199.000000000"),
        ];
        for (docker, since) in cases {
            assert_eq!(since_of(docker).as_deref(), Some(since), "{docker}");
        }
    }

    #[test]
    fn anything_else_is_no_time() {
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T10:33:07",
            "2026-13-01T10:33:07Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:33:07.1234567890Z",
            "2026-12-01T10:33:07.-1Z",
            "2026-12-01T10:33:07+0100",
            "2026-12-+1T10:33:07Z",
        ] {
            assert_eq!(since_of(bad), None, "{bad}");
        }
    }
}
