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
use crate::runtime::delivery::{FieldValue, Item};
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

    /// Calls `visit` with each item's values for `cols`, in order: the item's `data` field of that
    /// name, else its `key` field, else `None` (`NULL`).
    ///
    /// Row by row: each item's fields are visited once and found among the columns by binary search,
    /// so an item's map is read while it is in cache (column by column, a batch of 10,000 items made
    /// every lookup a cache miss).
    fn each_row<'i>(
        &self,
        cols: &[usize],
        items: &[&'i Item],
        mut visit: impl FnMut(&[Option<FieldValue<'i>>]),
    ) {
        let mut by_name: Vec<(&str, usize)> =
            cols.iter().enumerate().map(|(j, &c)| (self.columns[c].name.as_str(), j)).collect();
        by_name.sort_unstable();
        let mut row: Vec<Option<FieldValue<'i>>> = vec![None; cols.len()];
        for item in items {
            row.fill(None);
            if let Some(data) = &item.data {
                data.for_each(|field, value| {
                    if let Ok(i) = by_name.binary_search_by(|(name, _)| (*name).cmp(field)) {
                        row[by_name[i].1] = Some(value);
                    }
                });
            }
            for (j, &c) in cols.iter().enumerate() {
                if row[j].is_none() {
                    row[j] = item.key.get(&self.columns[c].name).map(FieldValue::Parsed);
                }
            }
            visit(&row);
        }
    }

    /// One `text[]` parameter per column in `cols`, one element per item (see [`Table::each_row`]).
    pub fn params(&self, cols: &[usize], items: &[&Item]) -> Vec<TextColumn> {
        let mut out: Vec<TextColumn> = cols.iter().map(|_| TextColumn::with_capacity(items.len())).collect();
        self.each_row(cols, items, |row| {
            for ((column, &c), value) in out.iter_mut().zip(cols).zip(row) {
                column.push(*value, self.columns[c].encoding);
            }
        });
        out
    }

    /// The items' values for `cols` as COPY text: tab-separated, one line per row, `\N` for `NULL`,
    /// backslash, tab, newline and carriage return escaped; written row by row, without the `text[]`
    /// parameters in between.
    pub fn copy_rows(&self, cols: &[usize], items: &[&Item]) -> Vec<u8> {
        let mut out = Vec::with_capacity(items.len() * cols.len() * 16);
        let mut text = String::new();
        self.each_row(cols, items, |row| {
            for (j, (&c, value)) in cols.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push(b'\t');
                }
                text.clear();
                match value {
                    Some(value) if encode_field(*value, self.columns[c].encoding, &mut text) => {
                        copy_escape(&text, &mut out)
                    }
                    _ => out.extend_from_slice(b"\\N"),
                }
            }
            out.push(b'\n');
        });
        out
    }

    /// One `text[]` parameter per key column, one element per item.
    pub fn key_params(&self, items: &[&Item]) -> Vec<TextColumn> {
        self.key
            .iter()
            .map(|&c| {
                let column = &self.columns[c];
                let mut out = TextColumn::with_capacity(items.len());
                for item in items {
                    out.push(item.key.get(&column.name).map(FieldValue::Parsed), column.encoding);
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
    pub fn push(&mut self, value: Option<FieldValue<'_>>, encoding: Encoding) {
        let is_null = match value {
            Some(value) => !encode_field(value, encoding, &mut self.text),
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

/// [`encode_into`] for a field as an item holds it. Raw JSON text gives the same text as its parsed
/// value would (it is serde_json's own output, see [`crate::runtime::delivery::Fields`]): strings are unescaped
/// (copied when they hold no escape), anything else is copied as it is, and only an array for an
/// array column is parsed.
pub fn encode_field(value: FieldValue<'_>, encoding: Encoding, out: &mut String) -> bool {
    let raw = match value {
        FieldValue::Parsed(value) => return encode_into(value, encoding, out),
        FieldValue::Raw(raw) => raw.get().trim(),
    };
    match (raw.as_bytes().first(), encoding) {
        (None | Some(b'n'), _) => return false,
        (Some(b'"'), Encoding::Json) => out.push_str(raw),
        (Some(b'"'), _) => {
            let inner = &raw[1..raw.len() - 1];
            if inner.contains('\\') {
                let text: String = serde_json::from_str(raw).expect("a logged string parses");
                out.push_str(&text);
            } else {
                out.push_str(inner);
            }
        }
        (Some(b'['), Encoding::Array) => {
            let value: Value = serde_json::from_str(raw).expect("a logged array parses");
            return encode_into(&value, encoding, out);
        }
        _ => out.push_str(raw),
    }
    true
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
    use crate::postgres::target::schema::{ColumnSpec, JsonType};
    use crate::record::Op;
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
            source: "s".into(),
            op: Op::Upsert,
            key: json!({"order_id": 7}),
            data: json!({"order_id": 7, "note": 12.5, "doc": "text", "tags": ["a\"b", null, "c\\d"], "blob": "AAE="})
                .as_object()
                .cloned().map(crate::runtime::delivery::Fields::Map),
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
    fn raw_fields_encode_as_their_parsed_values() {
        use crate::runtime::delivery::Fields;
        let object = json!({
            "int": 1, "neg": i64::MIN, "big": u64::MAX, "float": 12.5, "huge": 1e20, "tiny": 1.0e-7,
            "plain": "text", "escaped": "tab\t \"quote\" \\ \u{1} é", "empty": "", "null": null,
            "yes": true, "list": [1, "x", null, [2], {"k": "v"}], "doc": {"z": 1, "a": [true, "q\""]},
            "we\"ird\\name": 3
        });
        let map = object.as_object().unwrap().clone();
        let text = serde_json::to_string(&map).unwrap();
        let parsed = Fields::Map(map);
        let raw = Fields::Raw(serde_json::value::RawValue::from_string(text.clone()).unwrap());
        assert_eq!(serde_json::to_string(&raw).unwrap(), text, "written back byte for byte");
        assert_eq!(raw, parsed);
        let fields = |f: &Fields| {
            let mut all = Vec::new();
            f.for_each(|name, value| {
                let encoded: Vec<Option<String>> =
                    [Encoding::Text, Encoding::Json, Encoding::Array, Encoding::Bytea]
                        .into_iter()
                        .map(|encoding| {
                            let mut out = String::new();
                            encode_field(value, encoding, &mut out).then_some(out)
                        })
                        .collect();
                all.push((name.to_owned(), encoded));
            });
            all
        };
        let (from_raw, from_parsed) = (fields(&raw), fields(&parsed));
        assert_eq!(from_raw.len(), 14);
        assert_eq!(from_raw, from_parsed);
    }

    #[test]
    fn copy_rows_escape_and_mark_nulls() {
        let t = table();
        let item = |id: i64, note: serde_json::Value| Item {
            offset: 1,
            timestamp_ms: 0,
            model: "order".into(),
            source: "s".into(),
            op: Op::Upsert,
            key: json!({"order_id": id}),
            // The key comes from `key` when `data` lacks it.
            data: json!({"note": note}).as_object().cloned().map(crate::runtime::delivery::Fields::Map),
            unchanged: Vec::new(),
        };
        let items = [item(1, json!("tab\there")), item(2, json!(null)), item(3, json!("a\\b\nc\rd\\."))];
        let refs: Vec<&Item> = items.iter().collect();
        let text = String::from_utf8(t.copy_rows(&[0, 1], &refs)).unwrap();
        assert_eq!(text, "1\ttab\\there\n2\t\\N\n3\ta\\\\b\\nc\\rd\\\\.\n");
        // The same values as `text[]` parameters.
        let params = t.params(&[0, 1], &refs);
        assert_eq!(params[1].get(0), Some("tab\there"));
        assert_eq!(params[1].get(1), None);
        assert_eq!(params[0].get(2), Some("3"));
        let t = table();
        assert_eq!(
            t.copy_sql(&[0, 1]).as_deref(),
            Some(r#"COPY "analytics"."orders" ("order_id", "note") FROM STDIN"#)
        );
        assert_eq!(t.copy_sql(&[0, 4]), None, "bytea from base64 needs decode()");
    }
}
