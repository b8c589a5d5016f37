//! Turning items into SQL: value encoding, statement text, and the order of statements in a batch.
//!
//! Every statement takes one `text[]` parameter per column and expands them with `unnest`, casting
//! each column to the table's own type (`x."c0"::bigint`), so a statement's text depends only on the
//! table and the set of columns, never on the data, and is prepared once per connection. Values
//! become text the way the column's input function reads them: strings as they are, numbers and
//! booleans as their JSON text, objects as JSON text; `json`/`jsonb` columns get every value as JSON
//! text (a JSON string stays a JSON string); array columns get a PostgreSQL array literal built from a
//! JSON array; `bytea` columns read base64 (the form the PostgreSQL source writes) through
//! `decode(..., 'base64')`. JSON `null` is SQL `NULL`.

use super::schema::{quote_ident, ColumnInfo, TablePlan};
use crate::targets::Item;
use serde_json::Value;

/// How a column's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The column's text input: strings as is, other scalars as JSON text.
    Text,
    /// `json`/`jsonb`: every value as JSON text.
    Json,
    /// A PostgreSQL array literal from a JSON array.
    Array,
    /// base64 text, decoded by the server.
    Bytea,
}

/// A table as the target writes it: the plan's columns, with the real column types.
#[derive(Debug, Clone)]
pub struct Table {
    pub plan: TablePlan,
    pub qualified: String,
    pub columns: Vec<Column>,
    /// Indices in `columns` of the key columns, in key order.
    pub key: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub quoted: String,
    /// The column's type as `format_type` prints it (usable in a cast).
    pub sql_type: String,
    pub encoding: Encoding,
}

impl Table {
    /// Combines a plan with the catalog's view of its columns (every planned column must exist).
    pub fn new(plan: TablePlan, real: &[ColumnInfo]) -> Table {
        const BYTEA: u32 = 17;
        const JSON: u32 = 114;
        const JSONB: u32 = 3802;
        let columns: Vec<Column> = plan
            .columns
            .iter()
            .map(|spec| {
                let info = real.iter().find(|c| c.name == spec.name);
                let (sql_type, encoding) = match info {
                    Some(c) if c.type_oid == JSON || c.type_oid == JSONB => {
                        (c.sql_type.clone(), Encoding::Json)
                    }
                    Some(c) if c.type_oid == BYTEA => (c.sql_type.clone(), Encoding::Bytea),
                    Some(c) if c.category == 'A' => (c.sql_type.clone(), Encoding::Array),
                    Some(c) => (c.sql_type.clone(), Encoding::Text),
                    None => (spec.json.sql_type().to_owned(), Encoding::Text),
                };
                Column { name: spec.name.clone(), quoted: quote_ident(&spec.name), sql_type, encoding }
            })
            .collect();
        let key = plan
            .key
            .iter()
            .map(|k| columns.iter().position(|c| &c.name == k).expect("key columns are planned"))
            .collect();
        Table { qualified: plan.qualified(), plan, columns, key }
    }

    fn is_key(&self, column: usize) -> bool {
        self.key.contains(&column)
    }

    /// `SELECT <typed columns> FROM unnest($1::text[], ...) AS x(...)`, for `cols`.
    fn source(&self, cols: &[usize]) -> String {
        let mut exprs = Vec::with_capacity(cols.len());
        let mut params = Vec::with_capacity(cols.len());
        let mut aliases = Vec::with_capacity(cols.len());
        for (i, &c) in cols.iter().enumerate() {
            let column = &self.columns[c];
            let raw = format!("x.\"c{i}\"");
            let expr = match column.encoding {
                Encoding::Bytea => format!("decode({raw}, 'base64')"),
                _ if column.sql_type == "text" => raw,
                _ => format!("{raw}::{}", column.sql_type),
            };
            exprs.push(format!("{expr} AS {}", column.quoted));
            params.push(format!("${}::text[]", i + 1));
            aliases.push(format!("\"c{i}\""));
        }
        format!("SELECT {} FROM unnest({}) AS x({})", exprs.join(", "), params.join(", "), aliases.join(", "))
    }

    fn names(&self, cols: &[usize]) -> String {
        cols.iter().map(|&c| self.columns[c].quoted.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn key_match(&self, left: &str, right: &str) -> String {
        self.key
            .iter()
            .map(|&k| format!("{left}.{q} = {right}.{q}", q = self.columns[k].quoted))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn set_list(&self, cols: &[usize], from: &str) -> Vec<String> {
        cols.iter()
            .filter(|&&c| !self.is_key(c))
            .map(|&c| format!("{q} = {from}.{q}", q = self.columns[c].quoted))
            .collect()
    }

    /// A plain `INSERT` (fails on an existing key).
    pub fn insert_sql(&self, cols: &[usize]) -> String {
        format!("INSERT INTO {} ({}) {}", self.qualified, self.names(cols), self.source(cols))
    }

    /// `UPDATE` of the rows whose key is given; `None` when `cols` holds only key columns.
    pub fn update_sql(&self, cols: &[usize]) -> Option<String> {
        let set = self.set_list(cols, "s");
        if set.is_empty() {
            return None;
        }
        Some(format!(
            "UPDATE {} AS remix_t SET {} FROM ({}) AS s WHERE {}",
            self.qualified,
            set.join(", "),
            self.source(cols),
            self.key_match("remix_t", "s")
        ))
    }

    /// `INSERT` of the rows whose key the table lacks (an upsert on the key for safety).
    pub fn insert_missing_sql(&self, cols: &[usize]) -> String {
        let set = self.set_list(cols, "EXCLUDED");
        let keys: Vec<&str> = self.key.iter().map(|&k| self.columns[k].quoted.as_str()).collect();
        let action =
            if set.is_empty() { "NOTHING".to_owned() } else { format!("UPDATE SET {}", set.join(", ")) };
        format!(
            "INSERT INTO {t} ({names}) SELECT * FROM ({source}) AS s WHERE NOT EXISTS \
             (SELECT 1 FROM {t} AS remix_e WHERE {matching}) ON CONFLICT ({keys}) DO {action}",
            t = self.qualified,
            names = self.names(cols),
            source = self.source(cols),
            matching = self.key_match("remix_e", "s"),
            keys = keys.join(", "),
        )
    }

    /// `COPY ... FROM STDIN` (text format) writing `cols`, when those columns can take their values
    /// as COPY text (every encoding but base64 `bytea`, which the statements decode with a function).
    pub fn copy_sql(&self, cols: &[usize]) -> Option<String> {
        let copyable = cols.iter().all(|&c| self.columns[c].encoding != Encoding::Bytea);
        copyable.then(|| format!("COPY {} ({}) FROM STDIN", self.qualified, self.names(cols)))
    }

    pub fn delete_sql(&self) -> String {
        format!(
            "DELETE FROM {} AS remix_t USING ({}) AS s WHERE {}",
            self.qualified,
            self.source(&self.key),
            self.key_match("remix_t", "s")
        )
    }

    pub fn truncate_sql(&self) -> String {
        format!("TRUNCATE {}", self.qualified)
    }

    /// The columns an upsert writes: every column but those the item leaves unchanged.
    pub fn upsert_columns(&self, item: &Item) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&c| self.is_key(c) || !item.unchanged.iter().any(|u| u == &self.columns[c].name))
            .collect()
    }

    /// One `text[]` per column of `cols`, a value per item (from `data`, keys also from `key`).
    /// One `text[]` parameter per column in `cols`, one element per item.
    pub fn params(&self, cols: &[usize], items: &[&Item]) -> Vec<TextColumn> {
        cols.iter()
            .map(|&c| {
                let column = &self.columns[c];
                let mut out = TextColumn::with_capacity(items.len());
                for item in items {
                    let value = item
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&column.name))
                        .or_else(|| item.key.get(&column.name));
                    out.push(value, column.encoding);
                }
                out
            })
            .collect()
    }

    /// One `text[]` parameter per key column, one element per item.
    pub fn key_params(&self, items: &[&Item]) -> Vec<TextColumn> {
        self.key
            .iter()
            .map(|&c| {
                let column = &self.columns[c];
                let mut out = TextColumn::with_capacity(items.len());
                for item in items {
                    out.push(item.key.get(&column.name), column.encoding);
                }
                out
            })
            .collect()
    }
}

/// A `text[]` parameter: the elements' text in one buffer, so encoding a batch allocates per column,
/// not per value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TextColumn {
    text: String,
    /// Each element's end in `text`, `None` for SQL `NULL`.
    ends: Vec<Option<usize>>,
}

impl TextColumn {
    pub fn with_capacity(elements: usize) -> TextColumn {
        TextColumn { text: String::with_capacity(elements * 16), ends: Vec::with_capacity(elements) }
    }

    /// Appends a value (a missing one is `NULL`).
    pub fn push(&mut self, value: Option<&Value>, encoding: Encoding) {
        let is_null = match value {
            Some(value) => !encode_into(value, encoding, &mut self.text),
            None => true,
        };
        self.ends.push((!is_null).then_some(self.text.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The text of element `i`, `None` for `NULL`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = self.ends[i]?;
        let start = self.ends[..i].iter().rev().find_map(|e| *e).unwrap_or(0);
        Some(&self.text[start..end])
    }

    fn elements(&self) -> impl Iterator<Item = Option<&str>> {
        let mut start = 0;
        self.ends.iter().map(move |end| {
            let end = (*end)?;
            let element = &self.text[start..end];
            start = end;
            Some(element)
        })
    }
}

/// The rows of `columns` (one element each per row) as COPY text: tab-separated, one line per row,
/// `\N` for `NULL`, backslash, tab, newline and carriage return escaped.
pub fn copy_text(columns: &[TextColumn]) -> Vec<u8> {
    let rows = columns.first().map_or(0, TextColumn::len);
    let text_bytes: usize = columns.iter().map(|c| c.text.len()).sum();
    let mut out = Vec::with_capacity(text_bytes + rows * (columns.len() + 1) + text_bytes / 64);
    let mut elements: Vec<_> = columns.iter().map(TextColumn::elements).collect();
    for _ in 0..rows {
        for (i, column) in elements.iter_mut().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match column.next().expect("every column has an element per row") {
                None => out.extend_from_slice(b"\\N"),
                Some(text) => copy_escape(text, &mut out),
            }
        }
        out.push(b'\n');
    }
    out
}

fn copy_escape(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

impl tokio_postgres::types::ToSql for TextColumn {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres_protocol::types::{array_to_sql, ArrayDimension};
        use tokio_postgres::types::{IsNull, Kind};
        let Kind::Array(member) = ty.kind() else {
            return Err("a text column binds to an array type".into());
        };
        let len = i32::try_from(self.len()).map_err(|_| "too many elements for one array")?;
        let dimension = ArrayDimension { len, lower_bound: 1 };
        let serialize = |element: Option<&str>, out: &mut bytes::BytesMut| match element {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            }
            None => Ok(postgres_protocol::IsNull::Yes),
        };
        array_to_sql(Some(dimension), member.oid(), self.elements(), serialize, out)?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::TEXT_ARRAY
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Appends a value as its column's input text to `out`; `false` (nothing appended) for `NULL`.
pub fn encode_into(value: &Value, encoding: Encoding, out: &mut String) -> bool {
    use std::fmt::Write as _;
    match (value, encoding) {
        (Value::Null, _) => return false,
        (Value::String(s), Encoding::Text | Encoding::Bytea | Encoding::Array) => out.push_str(s),
        (Value::Array(items), Encoding::Array) => array_literal(items, out),
        (Value::Number(n), Encoding::Text | Encoding::Array | Encoding::Bytea) => {
            write!(out, "{n}").expect("writing to a String")
        }
        (Value::Bool(b), Encoding::Text | Encoding::Array | Encoding::Bytea) => {
            out.push_str(if *b { "true" } else { "false" })
        }
        (other, _) => write!(out, "{other}").expect("writing to a String"),
    }
    true
}

fn array_literal(items: &[Value], out: &mut String) {
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => array_literal(inner, out),
            Value::String(s) => quote_element(s, out),
            other => quote_element(&other.to_string(), out),
        }
    }
    out.push('}');
}

fn quote_element(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Op;
    use crate::targets::postgres::schema::{ColumnSpec, JsonType};
    use serde_json::json;

    /// A value as its column's input text, `None` for `NULL`.
    fn encode(value: &Value, encoding: Encoding) -> Option<String> {
        let mut out = String::new();
        encode_into(value, encoding, &mut out).then_some(out)
    }

    fn table() -> Table {
        let plan = TablePlan {
            model: "order".into(),
            schema: "analytics".into(),
            table: "orders".into(),
            columns: vec![
                ColumnSpec { name: "order_id".into(), json: JsonType::Integer, nullable: false },
                ColumnSpec { name: "note".into(), json: JsonType::String, nullable: true },
                ColumnSpec { name: "doc".into(), json: JsonType::Json, nullable: true },
                ColumnSpec { name: "tags".into(), json: JsonType::Json, nullable: true },
                ColumnSpec { name: "blob".into(), json: JsonType::String, nullable: true },
            ],
            key: vec!["order_id".into()],
        };
        let info = |name: &str, sql_type: &str, type_oid: u32, category: char| ColumnInfo {
            name: name.into(),
            sql_type: sql_type.into(),
            type_oid,
            category,
            not_null: false,
            has_default: false,
            generated: false,
        };
        let real = vec![
            info("order_id", "bigint", 20, 'N'),
            info("note", "text", 25, 'S'),
            info("doc", "jsonb", 3802, 'U'),
            info("tags", "text[]", 1009, 'A'),
            info("blob", "bytea", 17, 'U'),
        ];
        Table::new(plan, &real)
    }

    #[test]
    fn statements_quote_identifiers_and_bind_every_value() {
        let t = table();
        assert_eq!(
            t.insert_sql(&[0, 1]),
            "INSERT INTO \"analytics\".\"orders\" (\"order_id\", \"note\") SELECT x.\"c0\"::bigint AS \
             \"order_id\", x.\"c1\" AS \"note\" FROM unnest($1::text[], $2::text[]) AS x(\"c0\", \"c1\")"
        );
        assert_eq!(
            t.update_sql(&[0, 4]).unwrap(),
            "UPDATE \"analytics\".\"orders\" AS remix_t SET \"blob\" = s.\"blob\" FROM (SELECT \
             x.\"c0\"::bigint AS \"order_id\", decode(x.\"c1\", 'base64') AS \"blob\" FROM \
             unnest($1::text[], $2::text[]) AS x(\"c0\", \"c1\")) AS s WHERE remix_t.\"order_id\" = \
             s.\"order_id\""
        );
        assert_eq!(t.update_sql(&[0]), None);
        assert!(t.insert_missing_sql(&[0]).ends_with("ON CONFLICT (\"order_id\") DO NOTHING"));
        assert!(t
            .insert_missing_sql(&[0, 2])
            .ends_with("ON CONFLICT (\"order_id\") DO UPDATE SET \"doc\" = EXCLUDED.\"doc\""));
        assert_eq!(
            t.delete_sql(),
            "DELETE FROM \"analytics\".\"orders\" AS remix_t USING (SELECT x.\"c0\"::bigint AS \
             \"order_id\" FROM unnest($1::text[]) AS x(\"c0\")) AS s WHERE remix_t.\"order_id\" = \
             s.\"order_id\""
        );
        assert_eq!(t.truncate_sql(), "TRUNCATE \"analytics\".\"orders\"");
    }

    #[test]
    fn values_are_encoded_for_their_column() {
        let t = table();
        let item = Item {
            offset: 1,
            timestamp_ms: 0,
            model: "order".into(),
            op: Op::Upsert,
            key: json!({"order_id": 7}),
            data: json!({"order_id": 7, "note": 12.5, "doc": "text", "tags": ["a\"b", null, "c\\d"], "blob": "AAE="})
                .as_object()
                .cloned(),
            unchanged: vec!["doc".into()],
        };
        let cols = t.upsert_columns(&item);
        assert_eq!(cols, [0, 1, 3, 4]);
        let params = t.params(&cols, &[&item]);
        let values: Vec<Option<&str>> = params.iter().map(|p| p.get(0)).collect();
        assert_eq!(values, [Some("7"), Some("12.5"), Some(r#"{"a\"b",NULL,"c\\d"}"#), Some("AAE=")]);
        assert_eq!(encode(&json!("text"), Encoding::Json).as_deref(), Some("\"text\""));
        assert_eq!(encode(&json!({"a": [1]}), Encoding::Text).as_deref(), Some(r#"{"a":[1]}"#));
        assert_eq!(encode(&json!(true), Encoding::Text).as_deref(), Some("true"));
        assert_eq!(encode(&json!(null), Encoding::Json), None);
        assert_eq!(
            encode(&json!([[1, 2], [3, 4]]), Encoding::Array).as_deref(),
            Some(r#"{{"1","2"},{"3","4"}}"#)
        );
        let keys = t.key_params(&[&item]);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].get(0), Some("7"));
    }

    #[test]
    fn copy_text_escapes_and_marks_nulls() {
        let mut a = TextColumn::with_capacity(3);
        let mut b = TextColumn::with_capacity(3);
        for (x, y) in
            [(json!(1), json!("tab\there")), (json!(2), json!(null)), (json!(3), json!("a\\b\nc\rd\\."))]
        {
            a.push(Some(&x), Encoding::Text);
            b.push(Some(&y), Encoding::Text);
        }
        let text = String::from_utf8(copy_text(&[a, b])).unwrap();
        assert_eq!(text, "1\ttab\\there\n2\t\\N\n3\ta\\\\b\\nc\\rd\\\\.\n");
        let t = table();
        assert_eq!(
            t.copy_sql(&[0, 1]).as_deref(),
            Some(r#"COPY "analytics"."orders" ("order_id", "note") FROM STDIN"#)
        );
        assert_eq!(t.copy_sql(&[0, 4]), None, "bytea from base64 needs decode()");
    }
}
