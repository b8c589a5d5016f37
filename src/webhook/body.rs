//! Reading a webhook body: one JSON object, or an array of objects parsed one element at a time, so a
//! large array never exists as one value tree: each object is handed on and dropped before the next
//! one is parsed. The answers are those of parsing the whole body first: a body that is not well-formed
//! JSON is malformed whatever its elements are, and only then is a non-object element reported.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde_json::Value;

/// Why a body is refused (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("malformed JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("expected a JSON object or an array of objects, got {0}")]
    NotObjects(&'static str),
    #[error("element {index} is {kind}, not an object")]
    NotAnObject { index: usize, kind: &'static str },
}

/// How a walk over a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// Every object was handed on; this many.
    All(usize),
    /// The callback asked to stop.
    Stopped,
}

/// Hands every object of `body` to `each` with its index, in order; `each` returns `false` to stop.
/// `each` may have seen objects of a body that turns out malformed or to hold a non-object later on:
/// act on what it saw only after this returned `Ok(Walked::All(_))`.
pub fn for_each_object(body: &[u8], each: &mut dyn FnMut(usize, Value) -> bool) -> Result<Walked, BodyError> {
    // JSON's whitespace, as serde_json skips it.
    let first = body.iter().find(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'));
    if first != Some(&b'[') {
        return match serde_json::from_slice(body)? {
            object @ Value::Object(_) => Ok(if each(0, object) { Walked::All(1) } else { Walked::Stopped }),
            other => Err(BodyError::NotObjects(kind(&other))),
        };
    }
    let mut walk = Walk { each, count: 0, not_object: None, stopped: false };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::Deserializer::deserialize_seq(&mut de, Elements(&mut walk)).and_then(|()| de.end());
    if walk.stopped {
        return Ok(Walked::Stopped);
    }
    parsed?;
    match walk.not_object {
        Some((index, kind)) => Err(BodyError::NotAnObject { index, kind }),
        None => Ok(Walked::All(walk.count)),
    }
}

struct Walk<'f> {
    each: &'f mut dyn FnMut(usize, Value) -> bool,
    count: usize,
    not_object: Option<(usize, &'static str)>,
    stopped: bool,
}

struct Elements<'a, 'f>(&'a mut Walk<'f>);

impl<'de> Visitor<'de> for Elements<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.0;
        // Every element is parsed as a value, also after a non-object one: the body must be
        // well-formed JSON (numbers in range too) as a whole, as when it was parsed whole.
        while let Some(value) = seq.next_element::<Value>()? {
            let index = walk.count;
            walk.count += 1;
            if walk.not_object.is_some() {
                continue;
            }
            if !value.is_object() {
                walk.not_object = Some((index, kind(&value)));
            } else if !(walk.each)(index, value) {
                walk.stopped = true;
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How bodies were read before: parsed whole.
    fn parse_whole(body: &[u8]) -> Result<Vec<Value>, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
        let objects = match value {
            Value::Array(items) => items,
            object @ Value::Object(_) => vec![object],
            other => {
                return Err(format!("expected a JSON object or an array of objects, got {}", kind(&other)))
            }
        };
        if let Some(i) = objects.iter().position(|o| !o.is_object()) {
            return Err(format!("element {i} is {}, not an object", kind(&objects[i])));
        }
        Ok(objects)
    }

    fn walk(body: &[u8]) -> Result<Vec<Value>, String> {
        let mut seen = Vec::new();
        let walked = for_each_object(body, &mut |index, object| {
            assert_eq!(index, seen.len());
            seen.push(object);
            true
        })
        .map_err(|e| e.to_string())?;
        assert_eq!(walked, Walked::All(seen.len()));
        Ok(seen)
    }

    #[test]
    fn answers_as_parsing_the_whole_body() {
        let bodies: &[&str] = &[
            r#"{"id": 1}"#,
            r#"  [{"id": 1}, {"id": 2, "a": [1, {"b": null}]}]  "#,
            "[]",
            " \n\t\r[{}]",
            r#"[{"id": 1}, 5]"#,
            r#"[{"id": 1}, "x", {"id": 3}]"#,
            r#"[{"id": 1}, [], {"#,
            r#"[{"id": 1}, 7, 1e999]"#,
            r#"[{"id": 1}, null,]"#,
            r#"[{"id": 1}] x"#,
            r#"[{"id": 1}]]"#,
            r#"[{"id": "\ud800"}]"#,
            r#"[{"id": 1, "id": 2}]"#,
            "5",
            "\"text\"",
            "null",
            "",
            "   ",
            "[",
            "\u{c}[{}]",
            "{} {}",
            r#"{"a": 1"#,
            r#"[{"n": 12345678901234567890123}, {"f": -0.0}, {"e": 1.5e300}]"#,
        ];
        for body in bodies {
            assert_eq!(walk(body.as_bytes()), parse_whole(body.as_bytes()), "body {body:?}");
        }
        let invalid_utf8 = b"[{\"a\": \"\xff\"}]";
        assert_eq!(walk(invalid_utf8), parse_whole(invalid_utf8));
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        assert_eq!(walk(deep.as_bytes()), parse_whole(deep.as_bytes()));
    }

    #[test]
    fn stops_when_asked() {
        let mut seen = 0;
        let walked = for_each_object(br#"[{"a": 1}, {"a": 2}, {"a": 3}]"#, &mut |_, _| {
            seen += 1;
            seen < 2
        });
        assert_eq!((walked.unwrap(), seen), (Walked::Stopped, 2));
    }
}
