//! Sizes and displays written as Lume writes them.

/// Lume's size strings: a number with an optional `tb|gb|mb|kb|b` suffix (any case,
/// 1024-based), a bare number meaning GB, decimals allowed ("8.0GB").
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {s:?}: use a number with TB, GB, MB, KB or B (a bare number means GB), e.g. 8GB")
    };
    let t = s.trim().to_ascii_lowercase();
    let (num, mult): (&str, u64) = [
        ("tb", 1u64 << 40),
        ("gb", 1 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((t.as_str(), 1 << 30));
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    let bytes = n * mult as f64;
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// A display `WIDTHxHEIGHT`.
pub fn parse_display(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("invalid display {s:?}: use WIDTHxHEIGHT, e.g. 1024x768");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(320..=8192).contains(&w) || !(200..=8192).contains(&h) {
        return Err(format!(
            "invalid display {s:?}: width 320 to 8192 and height 200 to 8192"
        ));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_lume_parses_them() {
        assert_eq!(parse_size("8GB").unwrap(), 8 << 30);
        assert_eq!(parse_size("8gb").unwrap(), 8 << 30);
        assert_eq!(parse_size("8").unwrap(), 8 << 30);
        assert_eq!(parse_size("8.0GB").unwrap(), 8 << 30);
        assert_eq!(parse_size("8192MB").unwrap(), 8 << 30);
        assert_eq!(parse_size("1.5tb").unwrap(), 3 << 39);
        assert_eq!(parse_size("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_size("100b").unwrap(), 100);
        for bad in ["", "GB", "8 GiB", "-1GB", "eight", "nanGB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_parse() {
        assert_eq!(parse_display("1024x768").unwrap(), (1024, 768));
        for bad in ["1024", "x768", "10x10", "1024X768", "99999x768"] {
            assert!(parse_display(bad).is_err(), "{bad}");
        }
    }
}
