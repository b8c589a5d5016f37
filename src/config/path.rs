//! Config paths (`targets[1].models.order.fields.amount`) and a best-effort lookup of the line a
//! path's key is written on.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the config document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath::default()
    }

    pub fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    pub fn idx(&self, index: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }
}

fn is_plain(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if !is_plain(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

/// Where the next segment is searched: from `(line, col)` up to `end` (exclusive line).
struct Region {
    line: usize,
    col: usize,
    end: usize,
}

struct Hit {
    line: usize,
    col_after: usize,
    indent: usize,
}

/// The 1-based line of the deepest segment of `path` found in `text`, following block structure
/// (flow collections on one line are searched too). `None` when not even the first key is found.
pub fn locate(text: &str, path: &KeyPath) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut region = Region { line: 0, col: 0, end: lines.len() };
    let mut found = None;
    for seg in &path.0 {
        let hit = match seg {
            Seg::Key(k) => find_key(&lines, &region, k),
            Seg::Index(i) => find_item(&lines, &region, *i),
        };
        let Some(hit) = hit else { break };
        found = Some(hit.line + 1);
        region = Region { line: hit.line, col: hit.col_after, end: block_end(&lines, hit.line, hit.indent) };
    }
    found
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

fn block_end(lines: &[&str], line: usize, indent: usize) -> usize {
    (line + 1..lines.len())
        .find(|&l| is_content(lines[l]) && indent_of(lines[l]) <= indent)
        .unwrap_or(lines.len())
}

/// Occurrences of `key:` (plain or quoted) in one line from `from`: (start col, col after colon).
fn key_matches(line: &str, key: &str, from: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for form in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
        let mut start = from;
        while let Some(pos) = line.get(start..).and_then(|s| s.find(&form)).map(|p| p + start) {
            start = pos + form.len();
            let before = line[..pos].trim_end().chars().last();
            let after = line[start..].trim_start();
            let boundary = matches!(before, None | Some('{' | ',' | '-' | '?')) || line[..pos].ends_with(' ');
            if boundary && after.starts_with(':') {
                let colon = line.len() - after.len() + 1;
                out.push((pos, colon));
            }
        }
    }
    out.sort_unstable();
    out
}

fn find_key(lines: &[&str], r: &Region, key: &str) -> Option<Hit> {
    let first = lines.get(r.line)?;
    if let Some(&(_, after)) = key_matches(first, key, r.col).first() {
        return Some(Hit { line: r.line, col_after: after, indent: indent_of(first) });
    }
    let mut inline: Option<Hit> = None;
    let mut best: Option<Hit> = None;
    for (l, text) in lines.iter().enumerate().take(r.end).skip(r.line + 1) {
        if !is_content(text) {
            continue;
        }
        for (col, after) in key_matches(text, key, 0) {
            let lead = text[..col].trim_start_matches([' ', '-']).is_empty();
            let hit = Hit { line: l, col_after: after, indent: if lead { col } else { indent_of(text) } };
            if lead && best.as_ref().is_none_or(|b| col < b.indent) {
                best = Some(hit);
            } else if inline.is_none() {
                inline = Some(hit);
            }
        }
    }
    best.or(inline)
}

fn find_item(lines: &[&str], r: &Region, index: usize) -> Option<Hit> {
    let mut dash_indent = None;
    let mut count = 0;
    for (l, text) in lines.iter().enumerate().take(r.end).skip(r.line + 1) {
        let t = text.trim_start();
        if !is_content(text) || !(t == "-" || t.starts_with("- ")) {
            continue;
        }
        let indent = indent_of(text);
        if *dash_indent.get_or_insert(indent) != indent {
            continue;
        }
        if count == index {
            return Some(Hit { line: l, col_after: indent + 1, indent });
        }
        count += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segs: &[&str]) -> KeyPath {
        segs.iter().fold(KeyPath::root(), |p, s| match s.parse::<usize>() {
            Ok(i) => p.idx(i),
            Err(_) => p.key(s),
        })
    }

    #[test]
    fn display() {
        assert_eq!(
            path(&["targets", "1", "models", "order", "fields", "amount"]).to_string(),
            "targets[1].models.order.fields.amount"
        );
        assert_eq!(
            path(&["sources", "0", "tables", "public.orders"]).to_string(),
            "sources[0].tables[\"public.orders\"]"
        );
        assert_eq!(path(&["sources", "0", "routes", "/c"]).to_string(), "sources[0].routes[\"/c\"]");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    const DOC: &str = "\
data_dir: x
models:
  customer: { schema: a.json, key: [id] }
  order:
    schema: b.json
    key: [id]
sources:
  # a comment with name: here
  - name: hooks
    kind: webhook
    routes:
      /customers: { model: customer, fields: { id: id, email: contact.email } }
  - name: shop
    kind: postgres
    tables:
      \"public.orders\":
        model: order
        fields:
          id: id
targets:
  - { name: dataset, kind: jsonl, models: { customer: {} } }
";

    #[test]
    fn lines() {
        let cases: [(&[&str], Option<usize>); 12] = [
            (&["data_dir"], Some(1)),
            (&["models", "customer", "key"], Some(3)),
            (&["models", "order", "key"], Some(6)),
            (&["sources", "0", "name"], Some(9)),
            (&["sources", "0", "routes", "/customers", "fields", "email"], Some(12)),
            (&["sources", "1"], Some(13)),
            (&["sources", "1", "kind"], Some(14)),
            (&["sources", "1", "dsn"], Some(13)),
            (&["sources", "1", "tables", "public.orders", "fields", "id"], Some(19)),
            (&["targets", "0", "models", "customer"], Some(21)),
            (&["targets", "0", "kind"], Some(21)),
            (&["nope"], None),
        ];
        for (segs, want) in cases {
            assert_eq!(locate(DOC, &path(segs)), want, "{segs:?}");
        }
    }
}
