//! Sizes as people write them, in the two dialects cabin accepts, both 1024-based:
//! docker's (`512m`, `1g`, `1.5G`, a bare number is bytes: `--memory`, `--size`) and
//! Lume's (`8GB`, `8192MB`, a bare number is GB: VM memory and disks, as Lume's
//! clients send them). Displays (`1024x768`) are here too.

/// Which way of writing sizes a string follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `k`, `m`, `g`, `t` with an optional `b`; a bare number is bytes; above zero.
    Docker,
    /// `KB`, `MB`, `GB`, `TB` or `B` in any case; a bare number is GB; zero allowed.
    Lume,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}: use a number with an optional unit, e.g. 512m or 2g")]
    Docker(String),
    #[error("invalid size {0:?}: must be positive")]
    NotPositive(String),
    #[error("invalid size {0:?}: use a number with TB, GB, MB, KB or B (a bare number means GB), e.g. 8GB")]
    Lume(String),
    #[error("invalid display {0:?}: use WIDTHxHEIGHT, e.g. 1024x768")]
    Display(String),
    #[error("invalid display {0:?}: width 320 to 8192 and height 200 to 8192")]
    DisplayRange(String),
}

/// Parses `s` as `dialect` writes sizes; bytes.
pub fn parse_size(s: &str, dialect: Dialect) -> Result<u64, SizeError> {
    let t = s.trim().to_ascii_lowercase();
    match dialect {
        Dialect::Docker => {
            let bad = || SizeError::Docker(s.to_string());
            let t = t.strip_suffix('b').unwrap_or(&t);
            let (num, mult) = match t.chars().last() {
                Some('k') => (&t[..t.len() - 1], 1u64 << 10),
                Some('m') => (&t[..t.len() - 1], 1 << 20),
                Some('g') => (&t[..t.len() - 1], 1 << 30),
                Some('t') => (&t[..t.len() - 1], 1 << 40),
                _ => (t, 1),
            };
            let value: f64 = num.parse().map_err(|_| bad())?;
            if !value.is_finite() || value <= 0.0 {
                return Err(SizeError::NotPositive(s.to_string()));
            }
            let bytes = value * mult as f64;
            if bytes > u64::MAX as f64 / 2.0 {
                return Err(bad());
            }
            Ok(bytes as u64)
        }
        Dialect::Lume => {
            let bad = || SizeError::Lume(s.to_string());
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
    }
}

/// A display `WIDTHxHEIGHT`, 320x200 to 8192x8192.
pub fn parse_display(s: &str) -> Result<(u32, u32), SizeError> {
    let bad = || SizeError::Display(s.to_string());
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(320..=8192).contains(&w) || !(200..=8192).contains(&h) {
        return Err(SizeError::DisplayRange(s.to_string()));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_sizes_are_binary_case_insensitive_and_bare_numbers_are_bytes() {
        let p = |s| parse_size(s, Dialect::Docker);
        assert_eq!(p("512m").unwrap(), 512 << 20);
        assert_eq!(p("1G").unwrap(), 1 << 30);
        assert_eq!(p("1.5g").unwrap(), 3 << 29);
        assert_eq!(p("64kb").unwrap(), 64 << 10);
        assert_eq!(p("4096").unwrap(), 4096);
        for bad in ["", "m", "-1g", "lots", "0", "99999999999t"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(
            p("lots").unwrap_err().to_string(),
            "invalid size \"lots\": use a number with an optional unit, e.g. 512m or 2g"
        );
    }

    #[test]
    fn lume_sizes_parse_as_lume_parses_them() {
        let p = |s| parse_size(s, Dialect::Lume);
        assert_eq!(p("8GB").unwrap(), 8 << 30);
        assert_eq!(p("8gb").unwrap(), 8 << 30);
        assert_eq!(p("8").unwrap(), 8 << 30);
        assert_eq!(p("8.0GB").unwrap(), 8 << 30);
        assert_eq!(p("8192MB").unwrap(), 8 << 30);
        assert_eq!(p("1.5tb").unwrap(), 3 << 39);
        assert_eq!(p("512kb").unwrap(), 512 << 10);
        assert_eq!(p("100b").unwrap(), 100);
        for bad in ["", "GB", "8 GiB", "-1GB", "eight", "nanGB", "8g"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p("lots")
            .unwrap_err()
            .to_string()
            .starts_with("invalid size \"lots\""));
    }

    #[test]
    fn displays_parse() {
        assert_eq!(parse_display("1024x768").unwrap(), (1024, 768));
        for bad in ["1024", "x768", "10x10", "1024X768", "99999x768"] {
            assert!(parse_display(bad).is_err(), "{bad}");
        }
    }
}
