//! RFC 3339 time stamps (UTC), as OCI image configs and `cabin logs -t` write them,
//! without a date crate: the civil date comes from Howard Hinnant's days-from-civil
//! algorithm.

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

/// The current time, to the second.
pub fn now() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        * 1_000_000_000;
    rfc3339(nanos, false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = now();
        assert!(
            t.len() == 20 && t.starts_with("20") && &t[10..11] == "T",
            "{t}"
        );
    }
}
