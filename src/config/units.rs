//! Sizes (`64KiB`, `128MiB`, `1GiB`, `500MB`, plain bytes) and durations (`10s`, `5m`, `1h30m`, `7d`).

use std::time::Duration;

/// A value that is not a size or a duration; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Parses a size: a whole number of bytes, optionally followed by a unit. Binary units (KiB, MiB,
/// GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB) powers of 1000, B is bytes; unit
/// case is ignored and a blank between number and unit is allowed.
pub fn parse_size(text: &str) -> Result<u64, InvalidValue> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = (&t[..split], t[split..].trim_start());
    let expected = || {
        InvalidValue(format!(
            "invalid size '{text}' (expected bytes or a number with KiB, MiB, GiB, TiB, KB, MB, GB)"
        ))
    };
    if digits.is_empty() {
        return Err(expected());
    }
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(expected()),
    };
    let n: u64 = digits.parse().map_err(|_| InvalidValue(format!("size '{text}' is too large")))?;
    n.checked_mul(factor).ok_or_else(|| InvalidValue(format!("size '{text}' is too large")))
}

/// Parses a duration: one or more `<number><unit>` parts with units ms, s, m, h, d (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    let expected =
        || InvalidValue(format!("invalid duration '{text}' (expected e.g. 500ms, 10s, 5m, 12h, 7d)"));
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(expected)?;
        let n: u64 = rest[..split].parse().map_err(|_| expected())?;
        let after = &rest[split..];
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let part = match &after[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(expected()),
        };
        total =
            total.checked_add(part).ok_or_else(|| InvalidValue(format!("duration '{text}' is too large")))?;
        rest = &after[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("65536", 65_536),
            ("64KiB", 65_536),
            ("64kib", 65_536),
            ("128MiB", 128 << 20),
            ("1GiB", 1 << 30),
            ("50GiB", 50 << 30),
            ("2TiB", 2 << 40),
            ("10 MiB", 10 << 20),
            ("500MB", 500_000_000),
            ("1KB", 1000),
            ("7B", 7),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "MiB", "1.5GiB", "-1", "12 parsecs", "64Ki", "99999999999999999999", "20000000TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("30m", Duration::from_secs(1800)),
            ("12h", Duration::from_secs(43_200)),
            ("7d", Duration::from_secs(604_800)),
            ("1h30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "10", "s", "10 s", "1.5h", "3w", "-1s", "10sec"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
