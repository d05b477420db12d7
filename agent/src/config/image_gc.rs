//! `--image-gc SIZE`, `--image-gc-idle DURATION`, `--image-gc-all`: image
//! GC's settings, checked once.

use std::time::Duration;

use super::{ConfigError, parse_bytes, parse_duration_ms};
use crate::images::GcSettings;

/// The smallest bound taken: below it GC would remove every idle image.
const MIN_BYTES: u64 = 1 << 20;

/// The settings from the layered values (None: GC off).
pub(super) fn settings(
    size: Option<String>,
    idle: Option<String>,
    all: bool,
) -> Result<Option<GcSettings>, ConfigError> {
    let Some(size) = size else {
        return if idle.is_some() || all {
            Err(ConfigError::ImageGcOff)
        } else {
            Ok(None)
        };
    };
    let max_bytes = parse_bytes(&size)
        .filter(|&n| n >= MIN_BYTES)
        .ok_or(ConfigError::ImageGc(size))?;
    let mut gc = GcSettings::new(max_bytes);
    if let Some(d) = idle {
        gc.min_idle =
            Duration::from_millis(parse_duration_ms(&d).ok_or(ConfigError::ImageGcIdle(d))?);
    }
    gc.all = all;
    Ok(Some(gc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_and_bad_ones_say_which_flag() {
        let gc = settings(Some("10GiB".into()), Some("30m".into()), true)
            .unwrap()
            .unwrap();
        assert_eq!(gc.max_bytes, 10 << 30);
        assert_eq!(gc.min_idle, Duration::from_secs(1800));
        assert!(gc.all);
        let default = settings(Some("2T".into()), None, false).unwrap().unwrap();
        assert_eq!(default.min_idle, crate::images::gc::DEFAULT_MIN_IDLE);
        assert!(!default.all);
        assert_eq!(settings(None, None, false).unwrap(), None);
        let e = settings(Some("lots".into()), None, false).unwrap_err();
        assert!(e.to_string().contains("--image-gc \"lots\""), "{e}");
        assert!(settings(Some("10K".into()), None, false).is_err());
        let e = settings(Some("1G".into()), Some("soon".into()), false).unwrap_err();
        assert!(e.to_string().contains("--image-gc-idle"), "{e}");
        assert!(matches!(
            settings(None, None, true),
            Err(ConfigError::ImageGcOff)
        ));
    }
}
