//! RFC 3339 timestamps and ISO dates without a date-time crate.
//!
//! Instants are milliseconds since the Unix epoch (UTC). Calendar arithmetic uses the proleptic
//! Gregorian calendar (`days_from_civil` / `civil_from_days`, after Howard Hinnant's algorithms).

/// A date or time that is not RFC 3339, or out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(pub String);

const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Formats a log timestamp (milliseconds since the epoch) for people and `--json`; a time outside
/// years 0000-9999 (never written by Remix) prints as the raw number.
pub fn format_ms(ms: u64) -> String {
    i64::try_from(ms).ok().and_then(|ms| format_rfc3339(ms).ok()).unwrap_or_else(|| ms.to_string())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &str, what: &str) -> Result<u32, TimeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimeError(format!("expected digits for the {what}")));
    }
    s.parse().map_err(|_| TimeError(format!("invalid {what}")))
}

/// Parses `YYYY-MM-DD` (exactly that form) and checks the calendar.
pub(crate) fn parse_date(s: &str) -> Result<(i64, u32, u32), TimeError> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(TimeError("expected YYYY-MM-DD".into()));
    }
    let year = i64::from(digits(&s[0..4], "year")?);
    let month = digits(&s[5..7], "month")?;
    let day = digits(&s[8..10], "day")?;
    if !(1..=12).contains(&month) {
        return Err(TimeError(format!("month {month} is out of range")));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(TimeError(format!("day {day} is out of range for {year:04}-{month:02}")));
    }
    Ok((year, month, day))
}

/// Parses the time of day `HH:MM:SS[.fraction]`; returns milliseconds since midnight (leap second
/// 60 rolls over into the next minute) and the rest of the input (the offset).
fn parse_time(s: &str) -> Result<(i64, &str), TimeError> {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..8].is_ascii() || b[2] != b':' || b[5] != b':' {
        return Err(TimeError("expected a time HH:MM:SS".into()));
    }
    let hour = digits(&s[0..2], "hour")?;
    let minute = digits(&s[3..5], "minute")?;
    let second = digits(&s[6..8], "second")?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimeError("time of day is out of range".into()));
    }
    let mut rest = &s[8..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Err(TimeError("expected digits after the decimal point".into()));
        }
        let ms: String = frac[..len].chars().chain("000".chars()).take(3).collect();
        millis = i64::from(digits(&ms, "fraction")?);
        rest = &frac[len..];
    }
    let secs = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok((secs * 1000 + millis, rest))
}

/// Parses a UTC offset: `Z`, `+HH:MM`, `+HHMM` or `+HH`; empty means UTC. Returns minutes east.
fn parse_offset(s: &str) -> Result<i64, TimeError> {
    if s.is_empty() || s.eq_ignore_ascii_case("z") {
        return Ok(0);
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(TimeError(format!("unexpected text {s:?} after the time"))),
    };
    let body = &s[1..];
    if !body.is_ascii() {
        return Err(TimeError(format!("invalid UTC offset {s:?}")));
    }
    let (h, m) = match body.len() {
        2 => (body, "00"),
        4 => (&body[..2], &body[2..]),
        5 if body.as_bytes()[2] == b':' => (&body[..2], &body[3..]),
        _ => return Err(TimeError(format!("invalid UTC offset {s:?}"))),
    };
    let (h, m) = (digits(h, "offset hours")?, digits(m, "offset minutes")?);
    if h > 23 || m > 59 {
        return Err(TimeError(format!("UTC offset {s:?} is out of range")));
    }
    Ok(sign * (i64::from(h) * 60 + i64::from(m)))
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch (sub-millisecond digits are
/// truncated). Accepts `T`, `t` or a space between date and time, and, leniently, `+HH`/`+HHMM`
/// offsets (PostgreSQL's text form); a timestamp without an offset is taken as UTC.
pub fn parse_rfc3339(s: &str) -> Result<i64, TimeError> {
    if s.len() < 19 || !s.is_char_boundary(10) {
        return Err(TimeError("expected an RFC 3339 timestamp like 2026-11-24T10:00:00Z".into()));
    }
    let (year, month, day) = parse_date(&s[..10])?;
    if !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return Err(TimeError("expected 'T' between date and time".into()));
    }
    let (time_ms, rest) = parse_time(&s[11..])?;
    let offset_min = parse_offset(rest)?;
    Ok(days_from_civil(year, month, day) * MS_PER_DAY + time_ms - offset_min * 60_000)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(ms: i64) -> Result<String, TimeError> {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(TimeError(format!("year {year} is outside 0000-9999")));
    }
    let (secs, millis) = (in_day / 1000, in_day % 1000);
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// Formats the UTC calendar date of an instant as `YYYY-MM-DD`.
pub fn format_date(ms: i64) -> Result<String, TimeError> {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    if !(0..=9999).contains(&year) {
        return Err(TimeError(format!("year {year} is outside 0000-9999")));
    }
    Ok(format!("{year:04}-{month:02}-{day:02}"))
}

/// Converts an epoch number to milliseconds, choosing the unit by magnitude:
/// `|n| < 1e11` seconds (up to year 5138), `< 1e14` milliseconds, `< 1e17` microseconds,
/// otherwise nanoseconds. Fractions of the unit are kept down to the millisecond.
pub fn epoch_to_millis(n: f64) -> Result<i64, TimeError> {
    if !n.is_finite() {
        return Err(TimeError("not a finite number".into()));
    }
    let abs = n.abs();
    let ms = if abs < 1e11 {
        n * 1000.0
    } else if abs < 1e14 {
        n
    } else if abs < 1e17 {
        n / 1000.0
    } else {
        n / 1_000_000.0
    };
    let ms = ms.floor();
    if ms.abs() > 2.5e14 {
        return Err(TimeError("epoch value is out of range".into()));
    }
    Ok(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-719_468, -1, 0, 1, 59, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn rfc3339_parse_and_format() {
        let cases = [
            ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00.000Z"),
            ("2026-11-24t10:00:00.5z", "2026-11-24T10:00:00.500Z"),
            ("2026-11-24T10:00:00.123456789+02:00", "2026-11-24T08:00:00.123Z"),
            ("2026-11-24 10:00:00-0130", "2026-11-24T11:30:00.000Z"),
            ("2026-11-24 10:00:00.1+00", "2026-11-24T10:00:00.100Z"),
            ("2026-11-24T10:00:00", "2026-11-24T10:00:00.000Z"),
            ("2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z"),
            ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
            ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00.000Z"),
        ];
        for (input, want) in cases {
            let ms = parse_rfc3339(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(format_rfc3339(ms).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rfc3339_rejects() {
        for bad in [
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24X10:00:00Z",
            "2026-11-24T10:00:00.Z",
            "2026-11-24T10:00:00+2:00",
            "2026-11-24T10:00:00 UTC",
            "nonsense-at-least-19",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn never_panics_on_odd_text() {
        for s in [
            "00:00:\u{20ac}Z",
            "2026-11-24T10:00:\u{20ac}",
            "2026-11-24T10:00:00+\u{20ac}a",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
            assert!(parse_date(s).is_err(), "{s}");
        }
        assert!(parse_time("00:00:\u{20ac}Z").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2024-02-29"), Ok((2024, 2, 29)));
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("2023-04-31").is_err());
        assert!(parse_date("2023-4-1").is_err());
        assert_eq!(format_date(0).unwrap(), "1970-01-01");
        assert_eq!(format_date(-1).unwrap(), "1969-12-31");
    }

    #[test]
    fn epoch_units_by_magnitude() {
        let want = 1_795_514_400_000; // 2026-11-24T10:00:00Z
        assert_eq!(epoch_to_millis(1_795_514_400.0), Ok(want));
        assert_eq!(epoch_to_millis(1_795_514_400_000.0), Ok(want));
        assert_eq!(epoch_to_millis(1_795_514_400_000_000.0), Ok(want));
        assert_eq!(epoch_to_millis(1_795_514_400_000_000_000.0), Ok(want));
        assert_eq!(epoch_to_millis(1.5), Ok(1500));
        assert!(epoch_to_millis(f64::NAN).is_err());
        assert_eq!(format_rfc3339(want).unwrap(), "2026-11-24T10:00:00.000Z");
    }
}
