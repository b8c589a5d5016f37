//! Model values as bound parameters, by the column's type.
//!
//! JSON `null` is SQL `NULL`. Integer columns (and `BOOLEAN`, `BIT`) get integers (`true` is 1);
//! `DECIMAL` gets a number's exact text; `FLOAT`/`DOUBLE` doubles; JSON columns every value as JSON
//! text (a JSON string stays a JSON string); binary columns (`BLOB`, `VARBINARY`) read base64, the
//! form the `mysql` and `postgres` sources write; `DATETIME`/`TIMESTAMP` read RFC 3339 (converted
//! to UTC, fractional seconds kept); every other column gets strings as they are and other values as
//! their JSON text. Anything the server cannot take in strict mode is its error (out of range, too
//! long, ...).

use crate::runtime::delivery::FieldValue;
use base64::Engine as _;
use mysql_async::Value as Sql;
use serde_json::Value;

/// How a column's values are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Int,
    Float,
    Decimal,
    Text,
    Json,
    Binary,
    DateTime,
}

impl Encoding {
    /// The encoding for a column of `data_type` (`information_schema.COLUMNS.DATA_TYPE`).
    pub fn of(data_type: &str, json: bool) -> Encoding {
        match data_type {
            _ if json => Encoding::Json,
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit" => Encoding::Int,
            "float" | "double" | "real" => Encoding::Float,
            "decimal" | "numeric" => Encoding::Decimal,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Encoding::Binary,
            "datetime" | "timestamp" => Encoding::DateTime,
            _ => Encoding::Text,
        }
    }
}

/// A field's value as a parameter for a column of `encoding`; `Err` says why it cannot be one.
pub fn encode_field(value: Option<FieldValue<'_>>, encoding: Encoding) -> Result<Sql, crate::mysql::Refusal> {
    match value {
        None => Ok(Sql::NULL),
        Some(FieldValue::Parsed(v)) => encode(v, encoding),
        Some(FieldValue::Raw(raw)) => {
            let v: Value = serde_json::from_str(raw.get()).map_err(|e| format!("unreadable value: {e}"))?;
            encode(&v, encoding)
        }
    }
}

pub fn encode(value: &Value, encoding: Encoding) -> Result<Sql, crate::mysql::Refusal> {
    let text = |s: &str| Sql::Bytes(s.as_bytes().to_vec());
    Ok(match (value, encoding) {
        (Value::Null, _) => Sql::NULL,
        (_, Encoding::Json) => text(&value.to_string()),
        (Value::Bool(b), Encoding::Int | Encoding::Float | Encoding::Decimal) => Sql::Int(i64::from(*b)),
        (Value::Number(n), Encoding::Int | Encoding::Float) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Sql::Int(i),
            (None, Some(u)) => Sql::UInt(u),
            _ => Sql::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(s), Encoding::Binary) => Sql::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("a binary column takes base64 text: {e}"))?,
        ),
        (Value::String(s), Encoding::DateTime) => text(&datetime(s).unwrap_or_else(|| s.clone())),
        (Value::String(s), _) => text(s),
        (other, _) => text(&other.to_string()),
    })
}

/// RFC 3339 (`2026-01-02T03:04:05.123456+01:00`) as a UTC `DATETIME` literal (`2026-01-02
/// 02:04:05.123456`); `None` when it is not RFC 3339 (the server then judges the text itself).
pub fn datetime(s: &str) -> Option<String> {
    if s.len() < 19 || !s.is_char_boundary(19) || !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (head, rest) = s.split_at(19);
    let digits = rest.strip_prefix('.').map_or(0, |f| f.bytes().take_while(u8::is_ascii_digit).count());
    let fraction = if digits > 0 { &rest[1..1 + digits] } else { "" };
    let zone = &rest[if digits > 0 { 1 + digits } else { 0 }..];
    let fraction = &fraction[..fraction.len().min(6)];
    let utc = if zone.is_empty() || zone.eq_ignore_ascii_case("z") || zone == "+00:00" || zone == "-00:00" {
        format!("{} {}", &head[..10], &head[11..])
    } else {
        let ms = crate::time::parse_rfc3339(&format!("{head}{zone}")).ok()?;
        let text = crate::time::format_rfc3339(ms).ok()?;
        format!("{} {}", &text[..10], &text[11..19])
    };
    Some(if fraction.is_empty() { utc } else { format!("{utc}.{fraction}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_bind_by_column_type() {
        let b = |s: &str| Sql::Bytes(s.as_bytes().to_vec());
        assert_eq!(encode(&json!(7), Encoding::Int).unwrap(), Sql::Int(7));
        assert_eq!(encode(&json!(u64::MAX), Encoding::Int).unwrap(), Sql::UInt(u64::MAX));
        assert_eq!(encode(&json!(true), Encoding::Int).unwrap(), Sql::Int(1));
        assert_eq!(encode(&json!(2.5), Encoding::Float).unwrap(), Sql::Double(2.5));
        assert_eq!(encode(&json!(2.5), Encoding::Decimal).unwrap(), b("2.5"));
        assert_eq!(encode(&json!("x"), Encoding::Json).unwrap(), b("\"x\""));
        assert_eq!(encode(&json!({"a": [1]}), Encoding::Text).unwrap(), b(r#"{"a":[1]}"#));
        assert_eq!(encode(&json!("AAE="), Encoding::Binary).unwrap(), Sql::Bytes(vec![0, 1]));
        assert!(encode(&json!("not base64!"), Encoding::Binary).is_err());
        assert_eq!(encode(&json!(null), Encoding::Text).unwrap(), Sql::NULL);
        assert_eq!(
            encode(&json!("2026-01-02T03:04:05.123456Z"), Encoding::DateTime).unwrap(),
            b("2026-01-02 03:04:05.123456")
        );
    }

    #[test]
    fn datetimes_become_utc() {
        assert_eq!(datetime("2026-01-02T03:04:05Z").as_deref(), Some("2026-01-02 03:04:05"));
        assert_eq!(datetime("2026-01-02 03:04:05").as_deref(), Some("2026-01-02 03:04:05"));
        assert_eq!(datetime("2026-01-02T00:30:00.5+01:00").as_deref(), Some("2026-01-01 23:30:00.5"));
        assert_eq!(datetime("yesterday"), None);
    }
}
