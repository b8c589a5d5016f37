//! MariaDB/MySQL values as JSON, the same whether a row comes from the snapshot (text protocol) or
//! the binary log (binary row images), so a row's record does not depend on the path that read it.
//!
//! Integers are numbers (`BIGINT UNSIGNED` above `i64::MAX` a string, since JSON readers lose
//! precision there); `DECIMAL` is a string (exact); `FLOAT` is the shortest decimal of the float,
//! `DOUBLE` a number; text is a string (`latin1` decoded as such, other charsets as UTF-8); `BINARY`,
//! `VARBINARY` and `BLOB` are base64; `DATE` is `YYYY-MM-DD`; `DATETIME` is `YYYY-MM-DDTHH:MM:SS` with
//! the column's fractional digits; `TIMESTAMP` the same in UTC with `Z`; `TIME` `[-]HH:MM:SS[.f]`;
//! `YEAR` a number; `ENUM` and `SET` their text; `JSON` the document; `BIT` a number; `NULL` null.

use base64::Engine as _;
use mysql_async::Value as Sql;
use serde_json::Value;

/// How a column's values become JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Int { bits: u32, unsigned: bool },
    Float,
    Double,
    Decimal,
    Text { latin1: bool, pad_trim: bool },
    Binary { pad_to: Option<usize> },
    Json,
    Date,
    DateTime { digits: usize },
    Timestamp { digits: usize },
    Time { digits: usize },
    Year,
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
}

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub name: String,
    pub kind: Kind,
}

impl Kind {
    /// From `DATA_TYPE`, `COLUMN_TYPE`, `DATETIME_PRECISION`, `CHARACTER_SET_NAME` and whether a
    /// `json_valid` check (MariaDB's JSON) guards the column.
    pub fn of(
        data_type: &str,
        column_type: &str,
        precision: Option<u64>,
        charset: Option<&str>,
        json: bool,
    ) -> Kind {
        let unsigned = column_type.contains("unsigned");
        let digits = precision.unwrap_or(0) as usize;
        let length = || {
            column_type
                .split_once('(')
                .and_then(|(_, rest)| rest.split(')').next())
                .and_then(|n| n.trim().parse::<usize>().ok())
        };
        match data_type {
            _ if json => Kind::Json,
            "json" => Kind::Json,
            "tinyint" => Kind::Int { bits: 8, unsigned },
            "smallint" => Kind::Int { bits: 16, unsigned },
            "mediumint" => Kind::Int { bits: 24, unsigned },
            "int" | "integer" => Kind::Int { bits: 32, unsigned },
            "bigint" => Kind::Int { bits: 64, unsigned },
            "float" => Kind::Float,
            "double" | "real" => Kind::Double,
            "decimal" | "numeric" => Kind::Decimal,
            "binary" => Kind::Binary { pad_to: length() },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary { pad_to: None },
            "date" => Kind::Date,
            "datetime" => Kind::DateTime { digits },
            "timestamp" => Kind::Timestamp { digits },
            "time" => Kind::Time { digits },
            "year" => Kind::Year,
            "enum" => Kind::Enum(members(column_type)),
            "set" => Kind::Set(members(column_type)),
            "bit" => Kind::Bit,
            _ => Kind::Text { latin1: charset == Some("latin1"), pad_trim: data_type == "char" },
        }
    }
}

/// `enum('a','b''c')` → `["a", "b'c"]`.
fn members(column_type: &str) -> Vec<String> {
    let Some(inner) = column_type.split_once('(').map(|(_, r)| r.strip_suffix(')').unwrap_or(r)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        member.push(next);
                    }
                }
                other => member.push(other),
            }
        }
        out.push(member);
    }
    out
}

fn text_of(bytes: &[u8], latin1: bool) -> String {
    if latin1 {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

fn int_json(i: i128) -> Value {
    if let Ok(v) = i64::try_from(i) {
        Value::from(v)
    } else {
        Value::String(i.to_string())
    }
}

fn float_json(f: f32) -> Value {
    let shortest: f64 = f.to_string().parse().unwrap_or(f64::from(f));
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

fn fraction(micros: u32, digits: usize) -> String {
    if digits == 0 {
        String::new()
    } else {
        format!(".{}", &format!("{micros:06}")[..digits.min(6)])
    }
}

/// A value of the text protocol (the snapshot's `SELECT`).
pub fn from_text(kind: &Kind, value: &Sql) -> Result<Value, crate::mysql::Refusal> {
    let bytes = match value {
        Sql::NULL => return Ok(Value::Null),
        Sql::Bytes(b) => b.as_slice(),
        other => return from_binary(kind, other.clone()),
    };
    let text = || String::from_utf8_lossy(bytes).into_owned();
    let number = |t: &str| t.parse::<i128>().map_err(|e| format!("not an integer: {t:?}: {e}"));
    Ok(match kind {
        Kind::Int { .. } | Kind::Year => int_json(number(&text())?),
        Kind::Float => float_json(text().parse::<f32>().map_err(|e| e.to_string())?),
        Kind::Double => {
            let f: f64 = text().parse().map_err(|e: std::num::ParseFloatError| e.to_string())?;
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        Kind::Decimal | Kind::Enum(_) | Kind::Set(_) => Value::String(text()),
        // The text protocol sends text in the connection's charset (utf8mb4).
        Kind::Text { pad_trim, .. } => {
            let s = text_of(bytes, false);
            Value::String(if *pad_trim { s.trim_end_matches(' ').to_owned() } else { s })
        }
        Kind::Binary { pad_to } => binary(bytes, *pad_to),
        Kind::Json => json_doc(&text()),
        Kind::Date => Value::String(text()),
        Kind::DateTime { digits } | Kind::Timestamp { digits } => {
            let t = text();
            let (head, frac) = t.split_once('.').unwrap_or((&t, ""));
            let frac =
                if *digits == 0 { String::new() } else { format!(".{:0<width$}", frac, width = *digits) };
            let z = if matches!(kind, Kind::Timestamp { .. }) { "Z" } else { "" };
            Value::String(format!(
                "{}T{}{frac}{z}",
                &head[..10.min(head.len())],
                head.get(11..).unwrap_or("")
            ))
        }
        Kind::Time { .. } => Value::String(text()),
        Kind::Bit => Value::from(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))),
    })
}

fn binary(bytes: &[u8], pad_to: Option<usize>) -> Value {
    let mut bytes = bytes.to_vec();
    if let Some(n) = pad_to {
        if bytes.len() < n {
            bytes.resize(n, 0);
        }
    }
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn json_doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A value of a binary log row image.
pub fn from_binary(kind: &Kind, value: Sql) -> Result<Value, crate::mysql::Refusal> {
    Ok(match (kind, value) {
        (_, Sql::NULL) => Value::Null,
        (Kind::Int { bits, unsigned }, Sql::Int(i)) => {
            let i = i128::from(i);
            if *unsigned && i < 0 {
                int_json(i + (1i128 << bits))
            } else {
                int_json(i)
            }
        }
        (Kind::Int { .. }, Sql::UInt(u)) => int_json(i128::from(u)),
        (Kind::Float, Sql::Float(f)) => float_json(f),
        (Kind::Float, Sql::Double(d)) => float_json(d as f32),
        (Kind::Double, Sql::Double(d)) => serde_json::Number::from_f64(d).map_or(Value::Null, Value::Number),
        (Kind::Double, Sql::Float(f)) => {
            serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        (Kind::Enum(members), Sql::Int(i)) => Value::String(
            usize::try_from(i - 1).ok().and_then(|i| members.get(i)).cloned().unwrap_or_default(),
        ),
        (Kind::Set(members), Sql::Bytes(mask)) => {
            let bits = mask.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            let chosen: Vec<&str> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, m)| m.as_str())
                .collect();
            Value::String(chosen.join(","))
        }
        (Kind::Set(members), Sql::Int(bits)) => {
            let chosen: Vec<&str> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, m)| m.as_str())
                .collect();
            Value::String(chosen.join(","))
        }
        (Kind::Date, Sql::Date(y, m, d, ..)) => Value::String(format!("{y:04}-{m:02}-{d:02}")),
        (Kind::DateTime { digits }, Sql::Date(y, m, d, h, i, s, us)) => {
            Value::String(format!("{y:04}-{m:02}-{d:02}T{h:02}:{i:02}:{s:02}{}", fraction(us, *digits)))
        }
        (Kind::Timestamp { digits }, Sql::Bytes(b)) => {
            let t = String::from_utf8_lossy(&b).into_owned();
            let (secs, micros) = t.split_once('.').unwrap_or((&t, "0"));
            let secs: i64 = secs.parse().map_err(|_| format!("bad timestamp {t:?}"))?;
            let micros: u32 = format!("{micros:0<6}")[..6].parse().unwrap_or(0);
            let base = crate::time::format_rfc3339(secs * 1000).map_err(|e| e.to_string())?;
            Value::String(format!("{}{}Z", &base[..19], fraction(micros, *digits)))
        }
        (Kind::Timestamp { digits }, Sql::Int(secs)) => {
            let base = crate::time::format_rfc3339(secs * 1000).map_err(|e| e.to_string())?;
            Value::String(format!("{}{}Z", &base[..19], fraction(0, *digits)))
        }
        (Kind::Time { digits }, Sql::Time(negative, days, h, m, s, us)) => Value::String(format!(
            "{}{:02}:{m:02}:{s:02}{}",
            if negative { "-" } else { "" },
            u32::from(h) + days * 24,
            fraction(us, *digits)
        )),
        (Kind::Bit, Sql::Bytes(b)) => Value::from(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))),
        (Kind::Year, Sql::Int(y)) => Value::from(y),
        // The binary log holds text in the column's charset.
        (Kind::Text { latin1, pad_trim }, Sql::Bytes(b)) => {
            let s = text_of(&b, *latin1);
            Value::String(if *pad_trim { s.trim_end_matches(' ').to_owned() } else { s })
        }
        (kind, Sql::Bytes(b)) => from_text(kind, &Sql::Bytes(b))?,
        (kind, other) => return Err(format!("unexpected value {other:?} for a {kind:?} column").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_paths_agree() {
        let t = |s: &str| Sql::Bytes(s.as_bytes().to_vec());
        let ubig = Kind::Int { bits: 64, unsigned: true };
        assert_eq!(from_text(&ubig, &t("18446744073709551615")).unwrap(), json!("18446744073709551615"));
        assert_eq!(from_binary(&ubig, Sql::Int(-1)).unwrap(), json!("18446744073709551615"));
        let utiny = Kind::Int { bits: 8, unsigned: true };
        assert_eq!(from_binary(&utiny, Sql::Int(-56)).unwrap(), json!(200));
        assert_eq!(
            from_text(&Kind::Float, &t("1.1")).unwrap(),
            from_binary(&Kind::Float, Sql::Float(1.1)).unwrap()
        );
        let dt = Kind::DateTime { digits: 3 };
        assert_eq!(from_text(&dt, &t("2026-01-02 03:04:05.120")).unwrap(), json!("2026-01-02T03:04:05.120"));
        assert_eq!(
            from_binary(&dt, Sql::Date(2026, 1, 2, 3, 4, 5, 120_000)).unwrap(),
            json!("2026-01-02T03:04:05.120")
        );
        let ts = Kind::Timestamp { digits: 6 };
        assert_eq!(
            from_text(&ts, &t("1970-01-02 00:00:00.000001")).unwrap(),
            json!("1970-01-02T00:00:00.000001Z")
        );
        assert_eq!(from_binary(&ts, t("86400.000001")).unwrap(), json!("1970-01-02T00:00:00.000001Z"));
        let e = Kind::of("enum", "enum('a','b''c')", None, None, false);
        assert_eq!(from_binary(&e, Sql::Int(2)).unwrap(), json!("b'c"));
        let s = Kind::of("set", "set('x','y','z')", None, None, false);
        assert_eq!(from_binary(&s, Sql::Bytes(vec![5])).unwrap(), json!("x,z"));
        assert_eq!(from_text(&Kind::Bit, &Sql::Bytes(vec![1, 0])).unwrap(), json!(256));
        let bin = Kind::of("binary", "binary(3)", None, None, false);
        assert_eq!(from_binary(&bin, Sql::Bytes(vec![1])).unwrap(), json!("AQAA"));
        let time = Kind::Time { digits: 0 };
        assert_eq!(from_binary(&time, Sql::Time(true, 1, 2, 3, 4, 0)).unwrap(), json!("-26:03:04"));
        let lat = Kind::of("varchar", "varchar(9)", None, Some("latin1"), false);
        assert_eq!(from_binary(&lat, Sql::Bytes(vec![0x63, 0xe9])).unwrap(), json!("cé"));
        assert_eq!(from_text(&lat, &t("cé")).unwrap(), json!("cé"));
        assert_eq!(from_text(&Kind::Json, &t(r#"{"a":1}"#)).unwrap(), json!({"a": 1}));
    }
}
