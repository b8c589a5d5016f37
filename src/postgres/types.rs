//! PostgreSQL text output → JSON, per type OID. This is the documented JSON form of a replicated row:
//!
//! - `bool` (16): `true` / `false`.
//! - `int2` (21), `int4` (23), `int8` (20), `oid` (26): an integer number (exact: all fit in `i64`).
//! - `float4` (700), `float8` (701): a number in its shortest round-trip form; `NaN`, `Infinity` and
//!   `-Infinity` become the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
//! - `numeric` (1700): a **string** holding the exact decimal text (`"12345678901234567890.1234"`,
//!   `"12.50"`, `"NaN"`, `"Infinity"`), so no precision is lost; map the field with `type: number` or
//!   `integer` to convert it.
//! - `text` (25), `varchar` (1043), `bpchar` (1042, blank-padded as stored), `name` (19), `"char"` (18):
//!   a string.
//! - `uuid` (2950): a string, lower-case hyphenated.
//! - `date` (1082): `"YYYY-MM-DD"`; `"infinity"`, `"-infinity"` and BC dates (`"0044-03-15 BC"`) as
//!   PostgreSQL prints them.
//! - `time` (1083), `timetz` (1266): the string as PostgreSQL prints it (`"10:00:00.123456"`,
//!   `"10:00:00+02"`).
//! - `timestamp` (1114): RFC 3339, taken as UTC: `"2026-11-24T10:00:00.123456Z"` (the fraction is omitted
//!   when zero, else 6 digits).
//! - `timestamptz` (1184): RFC 3339 converted to UTC whatever the session `TimeZone` (any `+HH`, `+HH:MM`
//!   or `+HH:MM:SS` offset): `"2026-11-24T08:00:00.500000Z"`.
//! - `interval` (1186): the string as PostgreSQL prints it under the session `IntervalStyle` (`"P1DT2H"`
//!   for `iso_8601`, `"1 day 02:00:00"` for `postgres`).
//! - `json` (114), `jsonb` (3802): the parsed JSON value, embedded (JSON numbers: integers exact, others
//!   as `f64`).
//! - `bytea` (17): a string, standard base64 with padding.
//! - arrays of the above (`_bool` 1000, `_int2` 1005, `_int4` 1007, `_int8` 1016, `_text` 1009,
//!   `_varchar` 1015, `_float4` 1021, `_float8` 1022, `_numeric` 1231, `_uuid` 2951, `_date` 1182,
//!   `_timestamp` 1115, `_timestamptz` 1185, `_json` 199, `_jsonb` 3807, `_bytea` 1001, and `_oid`,
//!   `_bpchar`, `_name`, `_char`, `_time`, `_timetz`, `_interval`): a JSON array (nested for several
//!   dimensions; lower bounds dropped), elements converted as above, `NULL` → `null`.
//! - anything else (enums, domains, ranges, custom types): the text output as a string.
//!
//! Timestamps of BC years stay PostgreSQL's text (RFC 3339 has no BC); `"infinity"` and `"-infinity"` stay
//! as they are. The replication session must use `DateStyle=ISO` (the default) and `bytea_output=hex`
//! (the default; the `escape` form is accepted too). A domain's column carries the domain's OID; the
//! [`Message::Type`](super::pgoutput::Message::Type) sent for it names the base type, which
//! [`builtin_type_oid`] maps to a built-in OID so the column converts like its base type.

use super::pgoutput::{Relation, Tuple, TupleValue};
use serde_json::{Map, Number, Value};

pub const BOOL: u32 = 16;
pub const BYTEA: u32 = 17;
pub const CHAR: u32 = 18;
pub const NAME: u32 = 19;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const OID: u32 = 26;
pub const JSON: u32 = 114;
pub const FLOAT4: u32 = 700;
pub const FLOAT8: u32 = 701;
pub const BPCHAR: u32 = 1042;
pub const VARCHAR: u32 = 1043;
pub const DATE: u32 = 1082;
pub const TIME: u32 = 1083;
pub const TIMESTAMP: u32 = 1114;
pub const TIMESTAMPTZ: u32 = 1184;
pub const INTERVAL: u32 = 1186;
pub const TIMETZ: u32 = 1266;
pub const NUMERIC: u32 = 1700;
pub const UUID: u32 = 2950;
pub const JSONB: u32 = 3802;

/// Nesting limit of array literals (PostgreSQL's MAXDIM).
const MAX_ARRAY_DIMS: usize = 6;

/// The element type of a supported array type.
pub fn array_element_type(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1000 => BOOL,
        1001 => BYTEA,
        1002 => CHAR,
        1003 => NAME,
        1005 => INT2,
        1007 => INT4,
        1009 => TEXT,
        1014 => BPCHAR,
        1015 => VARCHAR,
        1016 => INT8,
        1021 => FLOAT4,
        1022 => FLOAT8,
        1028 => OID,
        199 => JSON,
        1115 => TIMESTAMP,
        1182 => DATE,
        1183 => TIME,
        1185 => TIMESTAMPTZ,
        1187 => INTERVAL,
        1231 => NUMERIC,
        1270 => TIMETZ,
        2951 => UUID,
        3807 => JSONB,
        _ => return None,
    })
}

/// The OID of a supported built-in type named by a pgoutput Type message (`namespace` is empty for
/// `pg_catalog`), e.g. the base type of a domain. `None` for anything else.
pub fn builtin_type_oid(namespace: &str, name: &str) -> Option<u32> {
    if !namespace.is_empty() && namespace != "pg_catalog" {
        return None;
    }
    Some(match name {
        "bool" => BOOL,
        "bytea" => BYTEA,
        "char" => CHAR,
        "name" => NAME,
        "int8" => INT8,
        "int2" => INT2,
        "int4" => INT4,
        "text" => TEXT,
        "oid" => OID,
        "json" => JSON,
        "float4" => FLOAT4,
        "float8" => FLOAT8,
        "bpchar" => BPCHAR,
        "varchar" => VARCHAR,
        "date" => DATE,
        "time" => TIME,
        "timestamp" => TIMESTAMP,
        "timestamptz" => TIMESTAMPTZ,
        "interval" => INTERVAL,
        "timetz" => TIMETZ,
        "numeric" => NUMERIC,
        "uuid" => UUID,
        "jsonb" => JSONB,
        _ => return None,
    })
}

/// A value PostgreSQL sent in a form this module cannot convert; the message names the type, the text
/// and, inside arrays and rows, the element or column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TextError(pub String);

/// Converts one value in PostgreSQL's text output form to its documented JSON form (see the module docs).
pub fn text_to_json(type_oid: u32, text: &str) -> Result<Value, TextError> {
    if let Some(element) = array_element_type(type_oid) {
        return array(element, text);
    }
    let bad = |what: &str| TextError(format!("invalid {what} text {text:?}"));
    Ok(match type_oid {
        BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(bad("bool")),
        },
        INT2 | INT4 | INT8 | OID => Value::from(text.parse::<i64>().map_err(|_| bad("integer"))?),
        FLOAT4 | FLOAT8 => match text {
            "NaN" | "Infinity" | "-Infinity" => Value::String(text.to_owned()),
            _ => {
                // Rust also accepts "inf"/"nan" spellings PostgreSQL never prints; from_f64 refuses them.
                let f = text.parse::<f64>().map_err(|_| bad("float"))?;
                Value::Number(Number::from_f64(f).ok_or_else(|| bad("float"))?)
            }
        },
        DATE => {
            if !is_special(text) && !text.ends_with(" BC") {
                parse_date(text.as_bytes()).ok_or_else(|| bad("date (DateStyle must be ISO)"))?;
            }
            Value::String(text.to_owned())
        }
        TIMESTAMP => {
            Value::String(timestamp(text, false).ok_or_else(|| bad("timestamp (DateStyle must be ISO)"))?)
        }
        TIMESTAMPTZ => {
            Value::String(timestamp(text, true).ok_or_else(|| bad("timestamptz (DateStyle must be ISO)"))?)
        }
        JSON | JSONB => {
            serde_json::from_str(text).map_err(|e| TextError(format!("invalid json text: {e}")))?
        }
        BYTEA => Value::String(base64(&bytea(text).ok_or_else(|| bad("bytea"))?)),
        // numeric (exact decimal text), text-like types, uuid, time, timetz, interval, unknown types.
        _ => Value::String(text.to_owned()),
    })
}

/// A row as a JSON object keyed by column name, plus the names of the columns whose unchanged TOAST value
/// was not sent (omitted from the object, never written as null).
pub fn tuple_to_object(
    relation: &Relation,
    tuple: &Tuple,
) -> Result<(Map<String, Value>, Vec<String>), TextError> {
    if tuple.0.len() != relation.columns.len() {
        return Err(TextError(format!(
            "tuple has {} values but relation {}.{} has {} columns",
            tuple.0.len(),
            relation.namespace,
            relation.name,
            relation.columns.len()
        )));
    }
    let mut object = Map::new();
    let mut unchanged = Vec::new();
    for (column, value) in relation.columns.iter().zip(&tuple.0) {
        match value {
            TupleValue::Null => {
                object.insert(column.name.clone(), Value::Null);
            }
            TupleValue::Unchanged => unchanged.push(column.name.clone()),
            TupleValue::Text(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    TextError(format!("column {:?}: text value is not valid UTF-8", column.name))
                })?;
                let json = text_to_json(column.type_oid, text)
                    .map_err(|e| TextError(format!("column {:?}: {e}", column.name)))?;
                object.insert(column.name.clone(), json);
            }
            TupleValue::Binary(_) => {
                return Err(TextError(format!("column {:?}: binary tuple data not requested", column.name)));
            }
        }
    }
    Ok((object, unchanged))
}

fn is_special(text: &str) -> bool {
    text == "infinity" || text == "-infinity"
}

/// Parses `digits` as a number, `None` unless all ASCII digits and 1..=`max` of them.
fn digits(b: &[u8], max: usize) -> Option<i64> {
    if b.is_empty() || b.len() > max || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// `YYYY-MM-DD` (4 or more year digits) → (year, month, day).
fn parse_date(b: &[u8]) -> Option<(i64, i64, i64)> {
    let dash = b.iter().position(|&c| c == b'-')?;
    if dash < 4 || b.len() != dash + 6 || b[dash + 3] != b'-' {
        return None;
    }
    let year = digits(&b[..dash], 9)?;
    let month = digits(&b[dash + 1..dash + 3], 2)?;
    let day = digits(&b[dash + 4..], 2)?;
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some((year, month, day))
}

/// `YYYY-MM-DD HH:MM:SS[.f{1,6}]` then, when `with_zone`, `±HH[:MM[:SS]]` → RFC 3339 in UTC. Special values
/// and BC timestamps are returned as they are.
fn timestamp(text: &str, with_zone: bool) -> Option<String> {
    if is_special(text) || text.ends_with(" BC") {
        return Some(text.to_owned());
    }
    let b = text.as_bytes();
    let space = b.iter().position(|&c| c == b' ')?;
    let (year, month, day) = parse_date(&b[..space])?;
    let t = &b[space + 1..];
    if t.len() < 8 || t[2] != b':' || t[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(&t[..2], 2)?, digits(&t[3..5], 2)?, digits(&t[6..8], 2)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &t[8..];
    let mut micros = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        micros = digits(&frac[..n], 6)? * 10i64.pow(6 - n as u32);
        rest = &frac[n..];
    }
    let mut offset = 0;
    if with_zone {
        let sign = match rest.first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let mut parts = rest[1..].split(|&c| c == b':');
        let h = digits(parts.next()?, 2)?;
        let m = parts.next().map_or(Some(0), |p| digits(p, 2))?;
        let s = parts.next().map_or(Some(0), |p| digits(p, 2))?;
        if parts.next().is_some() || m > 59 || s > 59 {
            return None;
        }
        offset = sign * (h * 3600 + m * 60 + s);
    } else if !rest.is_empty() {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    if year < 0 {
        return Some(text.to_owned());
    }
    let s = seconds.rem_euclid(86_400);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out.push('Z');
    Some(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date ([`crate::time::days_from_civil`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    crate::time::days_from_civil(y, m as u32, d as u32)
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let (y, m, d) = crate::time::civil_from_days(z);
    (y, m.into(), d.into())
}

/// bytea text output (`\x0a0b` hex form, or the legacy escape form) → bytes.
fn bytea(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if let Some(hex) = b.strip_prefix(b"\\x") {
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        return hex.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4)?;
            if !oct.iter().all(|c| (b'0'..=b'7').contains(c)) || oct[0] > b'3' {
                return None;
            }
            out.push(oct.iter().fold(0u8, |n, c| n * 8 + (c - b'0')));
            i += 4;
        }
    }
    Some(out)
}

/// Standard base64 (RFC 4648 alphabet) with `=` padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = u32::from(chunk[0]) << 16
            | u32::from(chunk.get(1).copied().unwrap_or(0)) << 8
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Parses an array literal (`{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`) and converts
/// its elements by `element` type.
fn array(element: u32, text: &str) -> Result<Value, TextError> {
    let mut p = ArrayParser { b: text.as_bytes(), pos: 0, element, index: 0 };
    p.skip_ws();
    if p.peek() == Some(b'[') {
        // Dimension decoration, present when a lower bound is not 1: `[0:2]` or `[1:2][0:1]`, then `=`.
        let eq =
            p.b.iter().position(|&c| c == b'=').ok_or_else(|| p.error("dimension decoration without '='"))?;
        if !p.b[p.pos..eq].iter().all(|c| c.is_ascii_digit() || b"[]:-+ ".contains(c)) {
            return Err(p.error("malformed dimension decoration"));
        }
        p.pos = eq + 1;
        p.skip_ws();
    }
    let value = p.array(1)?;
    p.skip_ws();
    if p.pos != p.b.len() {
        return Err(p.error("junk after the array"));
    }
    Ok(value)
}

struct ArrayParser<'a> {
    b: &'a [u8],
    pos: usize,
    element: u32,
    /// Elements seen so far, for error messages.
    index: usize,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> TextError {
        TextError(format!("invalid array literal: {what} at byte {}", self.pos))
    }

    fn array(&mut self, depth: usize) -> Result<Value, TextError> {
        if depth > MAX_ARRAY_DIMS {
            return Err(self.error("too many dimensions"));
        }
        if self.peek() != Some(b'{') {
            return Err(self.error("expected '{'"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let item = match self.peek() {
                Some(b'{') => self.array(depth + 1)?,
                Some(b'"') => {
                    let text = self.quoted()?;
                    self.convert(&text)?
                }
                _ => match self.unquoted()? {
                    None => Value::Null,
                    Some(text) => self.convert(&text)?,
                },
            };
            items.push(item);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn convert(&mut self, text: &str) -> Result<Value, TextError> {
        self.index += 1;
        text_to_json(self.element, text).map_err(|e| TextError(format!("array element {}: {e}", self.index)))
    }

    /// A double-quoted element, the opening quote at `pos`; backslash escapes the next byte.
    fn quoted(&mut self) -> Result<String, TextError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted element")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    out.push(*self.b.get(self.pos + 1).ok_or_else(|| self.error("dangling backslash"))?);
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        // Only ASCII backslashes were removed, so the bytes are still UTF-8.
        String::from_utf8(out).map_err(|_| self.error("element is not UTF-8"))
    }

    /// An unquoted element up to ',' or '}' (trailing whitespace dropped); `None` for `NULL`.
    fn unquoted(&mut self) -> Result<Option<String>, TextError> {
        let mut out = Vec::new();
        let mut kept = 0; // length without trailing unescaped whitespace
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated array")),
                Some(b',' | b'}') => break,
                Some(b'{' | b'"') => return Err(self.error("unexpected '{' or '\"' in an unquoted element")),
                Some(b'\\') => {
                    out.push(*self.b.get(self.pos + 1).ok_or_else(|| self.error("dangling backslash"))?);
                    self.pos += 2;
                    kept = out.len();
                    escaped = true;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                    if !c.is_ascii_whitespace() {
                        kept = out.len();
                    }
                }
            }
        }
        out.truncate(kept);
        if out.is_empty() {
            return Err(self.error("empty unquoted element"));
        }
        if !escaped && out.eq_ignore_ascii_case(b"NULL") {
            return Ok(None);
        }
        String::from_utf8(out).map(Some).map_err(|_| self.error("element is not UTF-8"))
    }
}

#[cfg(test)]
#[path = "tests/types.rs"]
pub(super) mod tests;
