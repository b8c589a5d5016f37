//! `${VAR}` / `${VAR:-default}` substitution on the raw config text, before YAML parsing.
//!
//! - `${VAR}`: the variable's value; an error (naming the variable and line) when it is unset.
//! - `${VAR:-default}`: the default when the variable is unset or empty; the default may itself
//!   hold references (`${A:-${B:-x}}`), expanded only when used.
//! - `$${` is a literal `${`.
//! - YAML comments (a `#` at the start of a line or after a blank, outside quotes) are left alone,
//!   so a commented-out line never needs its variables.
//!
//! Substituted text is not re-scanned and is inserted as-is: quote values that may hold YAML
//! syntax (`: `, ` #`, leading `*`), e.g. `dsn: "${REMIX_PG_SOURCE}"`.

/// One problem found while substituting, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterpError {
    pub line: usize,
    pub message: String,
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Substitutes every reference; unset variables without a default become empty text and are
/// reported, so the caller can still parse the result and report more problems at once.
pub(crate) fn interpolate(text: &str, env: Env<'_>) -> (String, Vec<InterpError>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut messages = Vec::new();
        expand_line(line, env, &mut out, &mut messages);
        errors.extend(messages.into_iter().map(|message| InterpError { line: index + 1, message }));
    }
    (out, errors)
}

/// Whether a quote after this previous significant byte opens a quoted scalar.
fn opens_scalar(prev: Option<u8>) -> bool {
    matches!(prev, None | Some(b':' | b'-' | b'[' | b'{' | b',' | b'?'))
}

fn expand_line(line: &str, env: Env<'_>, out: &mut String, errors: &mut Vec<String>) {
    let b = line.as_bytes();
    let (mut i, mut copied) = (0, 0);
    let mut quote: Option<u8> = None;
    let mut prev: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if b[i..].starts_with(b"$${") {
            out.push_str(&line[copied..i]);
            out.push_str("${");
            i += 3;
            copied = i;
            continue;
        }
        if b[i..].starts_with(b"${") {
            out.push_str(&line[copied..i]);
            let exp = expand(line, i, env);
            out.push_str(&exp.value);
            errors.extend(exp.errors);
            i = exp.end;
            copied = i;
            prev = Some(b'}');
            continue;
        }
        match quote {
            Some(b'"') if c == b'\\' => i += 1,
            Some(b'\'') if c == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()) => break,
            None if (c == b'"' || c == b'\'') && opens_scalar(prev) => quote = Some(c),
            None => {}
        }
        if quote.is_none() && !c.is_ascii_whitespace() {
            prev = Some(c);
        }
        i += 1;
    }
    out.push_str(&line[copied..]);
}

struct Expansion {
    value: String,
    end: usize,
    errors: Vec<String>,
}

/// Expands the reference starting at `start` (which points at `${`).
fn expand(line: &str, start: usize, env: Env<'_>) -> Expansion {
    let b = line.as_bytes();
    let name_start = start + 2;
    let mut j = name_start;
    while j < b.len() && (b[j] == b'_' || b[j].is_ascii_alphanumeric()) {
        j += 1;
    }
    let name = &line[name_start..j];
    let fail = |end: usize, msg: String| Expansion { value: String::new(), end, errors: vec![msg] };
    if name.is_empty() || b[name_start].is_ascii_digit() {
        return fail(j, "invalid variable reference: expected a name after '${'".into());
    }
    if b.get(j) == Some(&b'}') {
        return match env(name) {
            Some(value) => Expansion { value, end: j + 1, errors: Vec::new() },
            None => fail(
                j + 1,
                format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
            ),
        };
    }
    if !b[j..].starts_with(b":-") {
        return fail(j, format!("invalid variable reference '${{{name}': expected '}}' or ':-default}}'"));
    }
    let default = expand_default(line, j + 2, env);
    let mut exp = match env(name).filter(|v| !v.is_empty()) {
        Some(value) => Expansion { value, end: default.end, errors: Vec::new() },
        None => default,
    };
    if !line[..exp.end].ends_with('}') {
        exp.errors.push(format!("unclosed '${{{name}:-': missing '}}'"));
    }
    exp
}

/// Expands default text up to its closing `}`; `end` is just past that brace (or the line end).
fn expand_default(line: &str, start: usize, env: Env<'_>) -> Expansion {
    let b = line.as_bytes();
    let mut value = String::new();
    let mut errors = Vec::new();
    let (mut i, mut copied) = (start, start);
    while i < b.len() {
        if b[i..].starts_with(b"$${") {
            value.push_str(&line[copied..i]);
            value.push_str("${");
            i += 3;
            copied = i;
        } else if b[i..].starts_with(b"${") {
            value.push_str(&line[copied..i]);
            let inner = expand(line, i, env);
            value.push_str(&inner.value);
            errors.extend(inner.errors);
            i = inner.end;
            copied = i;
        } else if b[i] == b'}' {
            value.push_str(&line[copied..i]);
            return Expansion { value, end: i + 1, errors };
        } else if b[i] == b'\n' {
            break;
        } else {
            i += 1;
        }
    }
    value.push_str(&line[copied..i]);
    Expansion { value, end: i, errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "PORT" => Some("5432".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> (String, Vec<InterpError>) {
        interpolate(text, &env)
    }

    #[test]
    fn substitutions() {
        let cases = [
            ("a: ${HOST}", "a: db.local"),
            ("a: ${UNSET:-fallback}", "a: fallback"),
            ("a: ${HOST:-fallback}", "a: db.local"),
            ("a: ${EMPTY:-fallback}", "a: fallback"),
            ("a: ${EMPTY}", "a: "),
            ("a: ${UNSET:-}", "a: "),
            ("dsn: postgres://u@${HOST}:${PORT}/db", "dsn: postgres://u@db.local:5432/db"),
            ("a: \"${UNSET:-127.0.0.1:9701}\"", "a: \"127.0.0.1:9701\""),
            ("a: ${UNSET:-${HOST}}", "a: db.local"),
            ("a: ${UNSET:-${ALSO_UNSET:-deep}}!", "a: deep!"),
            ("a: ${HOST:-${ALSO_UNSET}}", "a: db.local"),
            ("a: $${HOST}", "a: ${HOST}"),
            ("a: ${UNSET:-$${x}}", "a: ${x}"),
            ("a: $HOST and $", "a: $HOST and $"),
            ("a: x # ${UNSET} in a comment", "a: x # ${UNSET} in a comment"),
            ("# ${UNSET}", "# ${UNSET}"),
            ("a: \"x # ${HOST}\"", "a: \"x # db.local\""),
            ("a: 'it''s # ${HOST}'", "a: 'it''s # db.local'"),
            ("a: O'Brien # ${UNSET}", "a: O'Brien # ${UNSET}"),
            ("a: x#${HOST}", "a: x#db.local"),
            ("a: é${HOST}é", "a: édb.localé"),
        ];
        for (input, want) in cases {
            let (out, errs) = run(input);
            assert_eq!(errs, [], "{input}");
            assert_eq!(out, want, "{input}");
        }
    }

    #[test]
    fn multi_line_text_keeps_lines() {
        let (out, errs) = run("a: ${HOST}\n\nb: ${PORT}\n");
        assert!(errs.is_empty());
        assert_eq!(out, "a: db.local\n\nb: 5432\n");
    }

    #[test]
    fn errors_name_variable_and_line() {
        let (out, errs) = run("a: 1\nb: ${MISSING_ONE}\nc: ${MISSING_TWO} ${HOST}\n");
        assert_eq!(out, "a: 1\nb: \nc:  db.local\n");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].line, 2);
        assert!(errs[0].message.contains("MISSING_ONE is not set"), "{}", errs[0].message);
        assert_eq!(errs[1].line, 3);
        assert!(errs[1].message.contains("MISSING_TWO"));
    }

    #[test]
    fn malformed_references() {
        for (input, want) in [
            ("a: ${}", "expected a name"),
            ("a: ${1X}", "expected a name"),
            ("a: ${HOST", "expected '}' or ':-default}'"),
            ("a: ${HOST:-x", "unclosed '${HOST:-'"),
            ("a: ${HO ST}", "expected '}'"),
            ("a: ${UNSET:-${NOPE}}", "NOPE is not set"),
        ] {
            let (_, errs) = run(input);
            assert_eq!(errs.len(), 1, "{input}: {errs:?}");
            assert!(errs[0].message.contains(want), "{input}: {}", errs[0].message);
        }
    }
}
