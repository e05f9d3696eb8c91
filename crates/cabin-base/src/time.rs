//! The time as cabin records and shows it: Unix seconds in records, RFC 3339 (UTC) in
//! OCI image configs, logs and Lume's log lines. No date crate: the civil date comes
//! from Howard Hinnant's days-from-civil algorithm.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 on a clock set before 1970).
pub fn now_unix() -> u64 {
    now_unix_nanos() / 1_000_000_000
}

/// Nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// `unix_nanos` as `YYYY-MM-DDTHH:MM:SSZ`, with nanoseconds when `fraction`.
pub fn rfc3339(unix_nanos: u64, fraction: bool) -> String {
    let secs = (unix_nanos / 1_000_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if fraction {
        format!(
            "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{:09}Z",
            unix_nanos % 1_000_000_000
        )
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|offset)` as Unix seconds (the fraction and offset
/// are dropped: OCI configs write UTC); None when it is not such a time.
pub fn unix_seconds(rfc3339: &str) -> Option<u64> {
    let b = rfc3339.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let p = |a: usize, e: usize| rfc3339.get(a..e).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = (p(0, 4)?, p(5, 7)?, p(8, 10)?);
    let (h, mi, s) = (p(11, 13)?, p(14, 16)?, p(17, 19)?);
    // Days from the civil date (the inverse of `rfc3339`'s).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + h * 3600 + mi * 60 + s).ok()
}

/// The current time, to the second.
pub fn now_rfc3339() -> String {
    rfc3339(now_unix() * 1_000_000_000, false)
}

/// A duration such as `90`, `10m`, `2h` or `1d` (docker's `--since`), in seconds.
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| DurationError(s.to_string()))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(DurationError(s.to_string())),
    };
    n.checked_mul(unit)
        .ok_or_else(|| DurationError(s.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use a number of seconds, or one with s, m, h or d (e.g. 10m)")]
pub struct DurationError(pub String);

/// A duration as docker's `--health-interval` and friends take it (Go's form): one or
/// more numbers, perhaps with a fraction, each with its unit (ms, s, m, h), as `500ms`,
/// `1.5s` or `1m30s`.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let bad = || DurationError(s.to_string());
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        let after = &rest[n_end..];
        let u_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let unit = match &after[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * unit;
        rest = &after[u_end..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_with_their_units() {
        use std::time::Duration;
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "5", "1x", "s", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_read_back_as_they_were_written() {
        for secs in [0u64, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let text = rfc3339(secs * 1_000_000_000 + 5, true);
            assert_eq!(unix_seconds(&text), Some(secs), "{text}");
        }
        assert_eq!(unix_seconds("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(unix_seconds(""), None);
        assert_eq!(unix_seconds("garbage that is long enough"), None);
    }

    #[test]
    fn known_instants_format_as_rfc3339() {
        assert_eq!(rfc3339(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_000_000_123_456_789, true),
            "2026-11-18T11:06:40.123456789Z"
        );
        // A leap day.
        assert_eq!(
            rfc3339(1_709_164_800 * 1_000_000_000, false),
            "2024-02-29T00:00:00Z"
        );
        let t = now_rfc3339();
        assert!(
            t.len() == 20 && t.starts_with("20") && &t[10..11] == "T",
            "{t}"
        );
    }

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86400));
        for bad in ["", "10x", "m", "-1", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
