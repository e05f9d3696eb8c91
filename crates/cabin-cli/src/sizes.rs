//! Docker-style size strings: "512m", "1g", "1.5G", "65536" (bytes), 1024-based.

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: use a number with an optional unit, e.g. 512m or 2g")
    })?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("invalid size {s:?}: must be positive"));
    }
    Ok((value * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "m", "-1g", "lots", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
