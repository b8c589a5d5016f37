//! What a model's table should look like, and what it does look like.
//!
//! [`plan`] derives a table's columns from the model's JSON Schema through the target's field
//! mapping: a column per mapped field (per schema property with an empty mapping), its JSON type (from
//! the mapping's cast, else from the schema at the field's source path), whether it may be NULL
//! (`required` and not nullable in the schema, or a key), and which columns are the key. [`create_sql`]
//! turns that into `CREATE TABLE IF NOT EXISTS`. [`inspect`] reads a real table from the catalog, and
//! [`check`] says what is wrong with it for this plan: missing table or columns, incompatible types,
//! a NOT NULL column nobody writes, no unique index on the key, missing privileges.
//!
//! Derived types: `integer` → `bigint`, `number` → `double precision`, `boolean` → `boolean`, `string`
//! → `text` (`timestamptz` with `format: date-time`, `date` with `format: date`, `uuid` with `format:
//! uuid`), objects, arrays, several types or no type → `jsonb`.

use crate::mapping::{Cast, FieldSource};
use crate::models::Model;
use serde_json::Value;
use std::collections::BTreeSet;

/// The JSON type a field carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Integer,
    Number,
    Boolean,
    String,
    Timestamp,
    Date,
    Uuid,
    /// Objects, arrays, several types, or no type at all.
    Json,
    /// Only ever `null`.
    Null,
}

impl JsonType {
    /// The column type `create_tables` gives it.
    pub fn sql_type(self) -> &'static str {
        match self {
            JsonType::Integer => "bigint",
            JsonType::Number => "double precision",
            JsonType::Boolean => "boolean",
            JsonType::String | JsonType::Null => "text",
            JsonType::Timestamp => "timestamp with time zone",
            JsonType::Date => "date",
            JsonType::Uuid => "uuid",
            JsonType::Json => "jsonb",
        }
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::String => "string",
            JsonType::Timestamp => "string (date-time)",
            JsonType::Date => "string (date)",
            JsonType::Uuid => "string (uuid)",
            JsonType::Json => "JSON (object, array or mixed)",
            JsonType::Null => "null",
        }
    }
}

/// One column the mapping writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub json: JsonType,
    /// Whether the value may be NULL (or absent): no NOT NULL in the derived DDL.
    pub nullable: bool,
}

/// The columns of one model's table and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub model: String,
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnSpec>,
    /// Key column names, in the model key's order.
    pub key: Vec<String>,
}

impl TablePlan {
    /// `schema.table` as written in the configuration (for messages).
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// A quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a model cannot be written through a table output.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("model '{model}': key field '{field}' is not mapped to a column of {table} (map it, e.g. `{field}: {field}`)")]
    KeyNotMapped { model: String, field: String, table: String },
}

/// Derives the table plan of `model` written through `output`.
pub fn plan(model: &Model, output: &crate::postgres::config::TableOutput) -> Result<TablePlan, PlanError> {
    let required: BTreeSet<&str> = model.required().into_iter().collect();
    let key_fields = model.key_fields();
    let mut columns = Vec::new();
    let mut key = vec![None; key_fields.len()];
    if output.mapping.is_identity() {
        for name in model.properties() {
            let (json, nullable) = schema_type(model.property_schema(name).unwrap_or(&Value::Null));
            let is_key = key_fields.iter().position(|k| k == name);
            if let Some(i) = is_key {
                key[i] = Some(name.to_owned());
            }
            let nullable = is_key.is_none() && (nullable || !required.contains(name));
            columns.push(ColumnSpec { name: name.to_owned(), json, nullable });
        }
    } else {
        for rule in output.mapping.rules() {
            let (json, nullable, key_index) = match &rule.source {
                FieldSource::Const(value) => (value_type(value), value.is_null(), None),
                FieldSource::Path { from, cast, .. } => {
                    let schema = schema_at(model, from.as_str());
                    let (schema_json, schema_nullable) = schema_type(schema.unwrap_or(&Value::Null));
                    let json = cast.map_or(schema_json, cast_type);
                    let single = from.as_str() == from.root();
                    let nullable = schema_nullable || !single || !required.contains(from.root());
                    let key_index = key_fields.iter().position(|k| single && k == from.root());
                    (json, nullable, key_index)
                }
            };
            let is_key = key_index.is_some_and(|i| key[i].is_none());
            if is_key {
                key[key_index.expect("is_key")] = Some(rule.name.clone());
            }
            columns.push(ColumnSpec { name: rule.name.clone(), json, nullable: nullable && !is_key });
        }
    }
    let mut keys = Vec::with_capacity(key.len());
    for (field, column) in key_fields.iter().zip(key) {
        match column {
            Some(column) => keys.push(column),
            None => {
                return Err(PlanError::KeyNotMapped {
                    model: model.name().to_owned(),
                    field: field.clone(),
                    table: format!("{}.{}", output.schema, output.table),
                })
            }
        }
    }
    Ok(TablePlan {
        model: model.name().to_owned(),
        schema: output.schema.clone(),
        table: output.table.clone(),
        columns,
        key: keys,
    })
}

/// `CREATE TABLE IF NOT EXISTS` for a plan.
pub fn create_sql(plan: &TablePlan) -> String {
    let mut lines: Vec<String> = plan
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{not_null}", quote_ident(&c.name), c.json.sql_type())
        })
        .collect();
    let key: Vec<String> = plan.key.iter().map(|k| quote_ident(k)).collect();
    lines.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!("CREATE TABLE IF NOT EXISTS {} (\n  {}\n)", plan.qualified(), lines.join(",\n  "))
}

/// The subschema at a dotted path (`contact.email`), through `properties` and `items`.
fn schema_at<'m>(model: &'m Model, path: &str) -> Option<&'m Value> {
    let mut segments = path.split('.');
    let mut schema = model.property_schema(segments.next()?)?;
    for segment in segments {
        schema = match (schema.get("properties").and_then(|p| p.get(segment)), schema.get("items")) {
            (Some(next), _) => next,
            (None, Some(items)) if segment.parse::<usize>().is_ok() => items,
            _ => return None,
        };
    }
    Some(schema)
}

fn cast_type(cast: Cast) -> JsonType {
    match cast {
        Cast::Integer => JsonType::Integer,
        Cast::Number => JsonType::Number,
        Cast::String => JsonType::String,
        Cast::Boolean => JsonType::Boolean,
        Cast::Timestamp => JsonType::Timestamp,
        Cast::Date => JsonType::Date,
        Cast::Json => JsonType::Json,
    }
}

fn value_type(value: &Value) -> JsonType {
    match value {
        Value::Null => JsonType::Null,
        Value::Bool(_) => JsonType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => JsonType::Integer,
        Value::Number(_) => JsonType::Number,
        Value::String(_) => JsonType::String,
        Value::Array(_) | Value::Object(_) => JsonType::Json,
    }
}

/// The JSON type a subschema allows, and whether it allows `null`.
pub fn schema_type(schema: &Value) -> (JsonType, bool) {
    let mut types = BTreeSet::new();
    collect_types(schema, &mut types, 0);
    let nullable = types.remove("null") || types.is_empty();
    let format = schema.get("format").and_then(Value::as_str);
    let json = match (types.len(), types.iter().next().copied()) {
        (0, _) => {
            if schema.as_object().is_some_and(|o| o.contains_key("type") || o.contains_key("enum")) {
                JsonType::Null
            } else {
                JsonType::Json
            }
        }
        (1, Some("integer")) => JsonType::Integer,
        (1, Some("number")) => JsonType::Number,
        (1, Some("boolean")) => JsonType::Boolean,
        (1, Some("string")) => match format {
            Some("date-time") => JsonType::Timestamp,
            Some("date") => JsonType::Date,
            Some("uuid") => JsonType::Uuid,
            _ => JsonType::String,
        },
        (2, _) if types.contains("integer") && types.contains("number") => JsonType::Number,
        _ => JsonType::Json,
    };
    (json, nullable)
}

fn collect_types<'s>(schema: &'s Value, types: &mut BTreeSet<&'s str>, depth: usize) {
    if depth > 8 {
        return;
    }
    match schema.get("type") {
        Some(Value::String(t)) => {
            types.insert(t);
        }
        Some(Value::Array(list)) => types.extend(list.iter().filter_map(Value::as_str)),
        _ => {
            let values = schema.get("enum").and_then(Value::as_array).cloned().unwrap_or_default();
            let values = values.iter().chain(schema.get("const"));
            for value in values {
                types.insert(match value_type(value) {
                    JsonType::Null => "null",
                    JsonType::Boolean => "boolean",
                    JsonType::Integer => "integer",
                    JsonType::Number => "number",
                    JsonType::String => "string",
                    _ => "object",
                });
            }
            for combinator in ["anyOf", "oneOf"] {
                for branch in schema.get(combinator).and_then(Value::as_array).into_iter().flatten() {
                    collect_types(branch, types, depth + 1);
                }
            }
        }
    }
}

/// A column of a real table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: usable in a cast.
    pub sql_type: String,
    pub type_oid: u32,
    /// `pg_type.typcategory` (`N` numeric, `S` string, `B` boolean, `D` date/time, `A` array, ...).
    pub category: char,
    pub not_null: bool,
    /// A default, an identity or a generated expression: it need not be written.
    pub has_default: bool,
    pub generated: bool,
}

/// A real table, as far as a target cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    /// The column sets of its usable unique indexes (non-partial, no expressions, not deferrable).
    pub unique: Vec<BTreeSet<String>>,
    pub can_insert: bool,
    pub can_update: bool,
    pub can_delete: bool,
    pub can_truncate: bool,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads a table from the catalog; `None` when it does not exist.
pub async fn inspect(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Option<TableInfo>, tokio_postgres::Error> {
    let sql = "SELECT c.oid, has_table_privilege(c.oid, 'INSERT'), has_table_privilege(c.oid, 'UPDATE'), \
               has_table_privilege(c.oid, 'DELETE'), has_table_privilege(c.oid, 'TRUNCATE') \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";
    let Some(row) = client.query_opt(sql, &[&schema, &table]).await? else { return Ok(None) };
    let oid: u32 = row.get(0);
    let columns = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, t.typcategory::text, \
             a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', a.attgenerated <> '' \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| ColumnInfo {
            name: r.get(0),
            sql_type: r.get(1),
            type_oid: r.get(2),
            category: r.get::<_, String>(3).chars().next().unwrap_or('X'),
            not_null: r.get(4),
            has_default: r.get(5),
            generated: r.get(6),
        })
        .collect();
    let unique = client
        .query(
            "SELECT array_agg(a.attname::text) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indpred IS NULL \
             AND i.indexprs IS NULL GROUP BY i.indexrelid",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, Vec<String>>(0).into_iter().collect())
        .collect();
    Ok(Some(TableInfo {
        columns,
        unique,
        can_insert: row.get(1),
        can_update: row.get(2),
        can_delete: row.get(3),
        can_truncate: row.get(4),
    }))
}

/// One thing wrong with a table, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub fix: Option<String>,
}

/// What is wrong with `info` for `plan` (nothing: empty). `truncate`: whether truncates are applied.
pub fn check(plan: &TablePlan, info: &TableInfo, truncate: bool) -> Vec<Problem> {
    let name = plan.display_name();
    let qualified = plan.qualified();
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for spec in &plan.columns {
        let Some(column) = info.column(&spec.name) else {
            missing.push(spec);
            continue;
        };
        if column.generated {
            problems.push(Problem {
                message: format!("column {name}.{} is generated and cannot be written", spec.name),
                fix: Some("remove it from the mapping".into()),
            });
        } else if !compatible(spec.json, column) {
            problems.push(Problem {
                message: format!(
                    "column {name}.{} is {}, which cannot hold the model's {} values",
                    spec.name,
                    column.sql_type,
                    spec.json.name()
                ),
                fix: Some(format!(
                    "ALTER TABLE {qualified} ALTER COLUMN {} TYPE {} USING {}::{};",
                    quote_ident(&spec.name),
                    spec.json.sql_type(),
                    quote_ident(&spec.name),
                    spec.json.sql_type()
                )),
            });
        }
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|c| c.name.as_str()).collect();
        let adds: Vec<String> = missing
            .iter()
            .map(|c| format!("ADD COLUMN {} {}", quote_ident(&c.name), c.json.sql_type()))
            .collect();
        problems.push(Problem {
            message: format!("table {name} has no column {}", names.join(", ")),
            fix: Some(format!("ALTER TABLE {qualified} {};", adds.join(", "))),
        });
    }
    let mapped: BTreeSet<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
    for column in &info.columns {
        if column.not_null && !column.has_default && !mapped.contains(column.name.as_str()) {
            problems.push(Problem {
                message: format!(
                    "column {name}.{} is NOT NULL without a default, and the mapping does not write it",
                    column.name
                ),
                fix: Some(format!(
                    "map a field to it, or ALTER TABLE {qualified} ALTER COLUMN {} DROP NOT NULL;",
                    quote_ident(&column.name)
                )),
            });
        }
    }
    let key: BTreeSet<String> = plan.key.iter().cloned().collect();
    if !info.unique.contains(&key) {
        let cols: Vec<String> = plan.key.iter().map(|k| quote_ident(k)).collect();
        problems.push(Problem {
            message: format!(
                "table {name} has no primary key or unique index on exactly ({}), the model key",
                plan.key.join(", ")
            ),
            fix: Some(format!("ALTER TABLE {qualified} ADD PRIMARY KEY ({});", cols.join(", "))),
        });
    }
    let mut lacking = Vec::new();
    for (needed, has) in [
        ("INSERT", info.can_insert),
        ("UPDATE", info.can_update),
        ("DELETE", info.can_delete),
        ("TRUNCATE", info.can_truncate || !truncate),
    ] {
        if !has {
            lacking.push(needed);
        }
    }
    if !lacking.is_empty() {
        problems.push(Problem {
            message: format!("no {} privilege on {name}", lacking.join(", ")),
            fix: Some(format!("GRANT {} ON {qualified} TO <the target's role>;", lacking.join(", "))),
        });
    }
    problems
}

/// Whether values of `json` type can be written to `column` (through its text input).
fn compatible(json: JsonType, column: &ColumnInfo) -> bool {
    const BYTEA: u32 = 17;
    const JSON: u32 = 114;
    const JSONB: u32 = 3802;
    const UUID: u32 = 2950;
    if matches!(column.type_oid, JSON | JSONB) || json == JsonType::Null {
        return true;
    }
    match column.category {
        // Strings (text, varchar, char) take anything: numbers as their text, objects as JSON text.
        'S' => true,
        'N' => matches!(json, JsonType::Integer | JsonType::Number | JsonType::String),
        'B' => json == JsonType::Boolean,
        'D' => matches!(json, JsonType::String | JsonType::Timestamp | JsonType::Date),
        'A' => json == JsonType::Json || json == JsonType::String,
        'E' => json == JsonType::String,
        // Interval, network addresses, geometry, bit strings, user types: their text form.
        'T' | 'I' | 'G' | 'V' => json == JsonType::String,
        _ if column.type_oid == UUID => matches!(json, JsonType::String | JsonType::Uuid),
        _ if column.type_oid == BYTEA => json == JsonType::String,
        _ => !matches!(json, JsonType::Json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;
    use crate::postgres::config::TableOutput;
    use serde_json::json;

    fn model() -> Model {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "email": {"type": "string", "format": "email"},
                "name": {"type": ["string", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "score": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "contact": {"type": "object", "properties": {"phone": {"type": "string"}}},
                "status": {"enum": ["a", "b"]},
                "price": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "any": {}
            },
            "required": ["id", "email", "created_at", "status"]
        });
        Model::new("customer", schema, &["id".into()]).unwrap()
    }

    fn output(fields: serde_json::Value) -> TableOutput {
        TableOutput {
            schema: "analytics".into(),
            table: "customers".into(),
            mapping: Mapping::compile(&fields).unwrap(),
        }
    }

    fn col(name: &str, json: JsonType, nullable: bool) -> ColumnSpec {
        ColumnSpec { name: name.into(), json, nullable }
    }

    #[test]
    fn identity_mapping_takes_every_property() {
        let plan = plan(&model(), &output(json!(null))).unwrap();
        assert_eq!(plan.key, ["id"]);
        assert_eq!(
            plan.columns,
            vec![
                col("any", JsonType::Json, true),
                col("contact", JsonType::Json, true),
                col("created_at", JsonType::Timestamp, false),
                col("email", JsonType::String, false),
                col("id", JsonType::Integer, false),
                col("name", JsonType::String, true),
                col("price", JsonType::Integer, true),
                col("score", JsonType::Number, true),
                col("status", JsonType::String, false),
                col("tags", JsonType::Json, true),
            ]
        );
    }

    #[test]
    fn mapped_fields_follow_paths_casts_and_consts() {
        let fields = json!({
            "customer_id": "id",
            "mail": "email",
            "phone": "contact.phone",
            "created": {"from": "created_at", "type": "date"},
            "origin": {"const": "shop"},
            "score_text": {"from": "score", "type": "string"}
        });
        let plan = plan(&model(), &output(fields)).unwrap();
        assert_eq!(plan.key, ["customer_id"]);
        let find = |n: &str| plan.columns.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(find("customer_id"), col("customer_id", JsonType::Integer, false));
        assert_eq!(find("mail"), col("mail", JsonType::String, false));
        assert_eq!(find("phone"), col("phone", JsonType::String, true));
        assert_eq!(find("created"), col("created", JsonType::Date, false));
        assert_eq!(find("origin"), col("origin", JsonType::String, false));
        assert_eq!(find("score_text"), col("score_text", JsonType::String, true));
        let ddl = create_sql(&plan);
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS \"analytics\".\"customers\" (\n"), "{ddl}");
        assert!(ddl.contains("  \"customer_id\" bigint NOT NULL,\n"), "{ddl}");
        assert!(ddl.contains("  \"phone\" text,\n"), "{ddl}");
        assert!(ddl.contains("  \"created\" date NOT NULL,\n"), "{ddl}");
        assert!(ddl.ends_with("  PRIMARY KEY (\"customer_id\")\n)"), "{ddl}");
    }

    #[test]
    fn an_unmapped_key_is_refused() {
        let error = plan(&model(), &output(json!({"mail": "email"}))).unwrap_err().to_string();
        assert!(error.contains("key field 'id' is not mapped"), "{error}");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let mut plan = plan(&model(), &output(json!({"id": "id"}))).unwrap();
        plan.table = "we\"ird".into();
        assert_eq!(plan.qualified(), "\"analytics\".\"we\"\"ird\"");
    }

    fn info(columns: &[(&str, &str, u32, char, bool)]) -> TableInfo {
        TableInfo {
            columns: columns
                .iter()
                .map(|(name, sql_type, oid, category, not_null)| ColumnInfo {
                    name: (*name).into(),
                    sql_type: (*sql_type).into(),
                    type_oid: *oid,
                    category: *category,
                    not_null: *not_null,
                    has_default: false,
                    generated: false,
                })
                .collect(),
            unique: vec![BTreeSet::from(["customer_id".to_owned()])],
            can_insert: true,
            can_update: true,
            can_delete: true,
            can_truncate: true,
        }
    }

    #[test]
    fn check_names_every_problem() {
        let plan =
            plan(&model(), &output(json!({"customer_id": "id", "mail": "email", "flag": "name"}))).unwrap();
        let good = info(&[
            ("customer_id", "bigint", 20, 'N', true),
            ("mail", "text", 25, 'S', false),
            ("flag", "character varying(10)", 1043, 'S', false),
        ]);
        assert_eq!(check(&plan, &good, true), vec![]);
        let mut bad = info(&[
            ("customer_id", "bigint", 20, 'N', true),
            ("flag", "boolean", 16, 'B', false),
            ("extra", "integer", 23, 'N', true),
        ]);
        bad.unique.clear();
        bad.can_truncate = false;
        let messages: Vec<String> = check(&plan, &bad, true).into_iter().map(|p| p.message).collect();
        assert_eq!(
            messages,
            [
                "column analytics.customers.flag is boolean, which cannot hold the model's string values",
                "table analytics.customers has no column mail",
                "column analytics.customers.extra is NOT NULL without a default, and the mapping does not \
                 write it",
                "table analytics.customers has no primary key or unique index on exactly (customer_id), the \
                 model key",
                "no TRUNCATE privilege on analytics.customers",
            ]
        );
        assert_eq!(check(&plan, &bad, false).len(), 4, "TRUNCATE is not needed when truncates are ignored");
    }
}
