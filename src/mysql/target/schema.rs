//! What a model's table should look like, and what it does look like.
//!
//! [`plan`] derives a table's columns from the model's JSON Schema through the target's field mapping
//! (a column per mapped field, its JSON type, whether it may be NULL, the key columns); [`create_sql`]
//! turns that into `CREATE TABLE IF NOT EXISTS` (InnoDB, `utf8mb4` with the binary collation, so
//! string keys compare exactly as JSON strings do). [`inspect`] reads a real table from
//! `information_schema`, and [`check`] says what is wrong with it for this plan.
//!
//! Derived types: `integer` → `BIGINT`, `number` → `DOUBLE`, `boolean` → `BOOLEAN`, `string` →
//! `LONGTEXT` (`VARCHAR(255)` in the key, `DATETIME(6)` with `format: date-time`, `DATE` with
//! `format: date`, `CHAR(36)` with `format: uuid`), objects, arrays, several types or no type →
//! `JSON`.

use crate::mapping::{Cast, FieldSource};
use crate::models::Model;
use crate::mysql::conn::quote;
use mysql_async::prelude::Queryable;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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
    pub fn sql_type(self, key: bool) -> &'static str {
        match self {
            JsonType::Integer => "BIGINT",
            JsonType::Number => "DOUBLE",
            JsonType::Boolean => "BOOLEAN",
            JsonType::String | JsonType::Null if key => "VARCHAR(255)",
            JsonType::String | JsonType::Null => "LONGTEXT",
            JsonType::Timestamp => "DATETIME(6)",
            JsonType::Date => "DATE",
            JsonType::Uuid => "CHAR(36)",
            JsonType::Json if key => "VARCHAR(255)",
            JsonType::Json => "JSON",
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub json: JsonType,
    pub nullable: bool,
}

/// The columns of one model's table and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub model: String,
    pub database: String,
    pub table: String,
    pub columns: Vec<ColumnSpec>,
    /// Key column names, in the model key's order.
    pub key: Vec<String>,
}

impl TablePlan {
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// `` `db`.`table` ``.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote(&self.database), quote(&self.table))
    }
}

/// Derives the table plan of `model` written through `output` into `database`.
pub fn plan(
    model: &Model,
    output: &crate::mysql::config::TableOutput,
    database: &str,
) -> Result<TablePlan, crate::mysql::Refusal> {
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
                return Err(format!(
                    "model '{}': key field '{field}' is not mapped to a column of {} (map it, e.g. \
                     `{field}: {field}`)",
                    model.name(),
                    output.display_name()
                )
                .into())
            }
        }
    }
    Ok(TablePlan {
        model: model.name().to_owned(),
        database: database.to_owned(),
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
            format!("{} {}{not_null}", quote(&c.name), c.json.sql_type(plan.key.contains(&c.name)))
        })
        .collect();
    let key: Vec<String> = plan.key.iter().map(|k| quote(k)).collect();
    lines.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        plan.qualified(),
        lines.join(",\n  ")
    )
}

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
            for value in values.iter().chain(schema.get("const")) {
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
    /// `DATA_TYPE` (`bigint`, `varchar`, `json`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE` (`bigint(20) unsigned`, `enum('a','b')`, ...).
    pub column_type: String,
    pub not_null: bool,
    /// A default or auto-increment: it need not be written.
    pub has_default: bool,
    pub generated: bool,
    /// A JSON column (MySQL's type, or MariaDB's `LONGTEXT` with a `json_valid` check).
    pub json: bool,
    /// `CHARACTER_SET_NAME` (text columns).
    pub charset: Option<String>,
}

/// A real table, as far as a target cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    /// Every unique index (the primary key among them), by name: its columns.
    pub unique: BTreeMap<String, BTreeSet<String>>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads a table from `information_schema`; `None` when it does not exist.
pub async fn inspect(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Result<Option<TableInfo>, mysql_async::Error> {
    type Row = (String, String, String, String, Option<String>, String, Option<String>);
    let rows: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, CHARACTER_SET_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .unwrap_or_default();
    let columns = rows
        .into_iter()
        .map(|(name, data_type, column_type, nullable, default, extra, charset)| {
            let extra = extra.to_ascii_lowercase();
            let json_check = format!("json_valid({})", quote(&name));
            let json = data_type.eq_ignore_ascii_case("json")
                || checks.iter().any(|c| c.replace(' ', "").eq_ignore_ascii_case(&json_check));
            ColumnInfo {
                generated: extra.contains("generated"),
                has_default: default.is_some_and(|d| d != "NULL") || extra.contains("auto_increment"),
                not_null: nullable == "NO",
                data_type: data_type.to_ascii_lowercase(),
                column_type: column_type.to_ascii_lowercase(),
                name,
                json,
                charset,
            }
        })
        .collect();
    let indexes: Vec<(String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
            (database, table),
        )
        .await?;
    let mut unique: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (index, column) in indexes {
        unique.entry(index).or_default().insert(column);
    }
    Ok(Some(TableInfo { columns, unique }))
}

/// One thing wrong with a table, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub fix: Option<String>,
}

/// What is wrong with `info` for `plan` (nothing: empty).
pub fn check(plan: &TablePlan, info: &TableInfo) -> Vec<Problem> {
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
                    column.column_type,
                    spec.json.name()
                ),
                fix: Some(format!(
                    "ALTER TABLE {qualified} MODIFY {} {};",
                    quote(&spec.name),
                    spec.json.sql_type(plan.key.contains(&spec.name))
                )),
            });
        }
    }
    if !missing.is_empty() {
        let adds: Vec<String> = missing
            .iter()
            .map(|c| format!("ADD COLUMN {} {}", quote(&c.name), c.json.sql_type(plan.key.contains(&c.name))))
            .collect();
        let names: Vec<&str> = missing.iter().map(|c| c.name.as_str()).collect();
        problems.push(Problem {
            message: format!("table {name} has no column {}", names.join(", ")),
            fix: Some(format!("ALTER TABLE {qualified} {};", adds.join(", "))),
        });
    }
    for column in &info.columns {
        let written = plan.columns.iter().any(|c| c.name == column.name);
        if column.not_null && !column.has_default && !column.generated && !written {
            problems.push(Problem {
                message: format!(
                    "column {name}.{} is NOT NULL without a default, and the mapping does not write it",
                    column.name
                ),
                fix: Some(format!(
                    "map a field to it, or ALTER TABLE {qualified} MODIFY {} NULL",
                    quote(&column.name)
                )),
            });
        }
    }
    let key: BTreeSet<String> = plan.key.iter().cloned().collect();
    if !info.unique.values().any(|cols| *cols == key) {
        problems.push(Problem {
            message: format!("table {name} has no primary key or unique index on ({})", plan.key.join(", ")),
            fix: Some(format!(
                "ALTER TABLE {qualified} ADD UNIQUE ({});",
                plan.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
            )),
        });
    }
    problems
}

/// Whether a column of this type can hold the model's values of type `json`.
fn compatible(json: JsonType, column: &ColumnInfo) -> bool {
    let t = column.data_type.as_str();
    let integer =
        matches!(t, "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit" | "year");
    let numeric = integer || matches!(t, "decimal" | "float" | "double" | "real" | "numeric");
    let text = matches!(
        t,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" | "json"
    );
    let temporal = matches!(t, "datetime" | "timestamp" | "date" | "time" | "year");
    let binary = matches!(t, "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob");
    match json {
        JsonType::Integer => numeric || text,
        JsonType::Number => matches!(t, "decimal" | "float" | "double" | "real" | "numeric") || text,
        JsonType::Boolean => integer || text,
        JsonType::Uuid => text || binary,
        JsonType::Timestamp | JsonType::Date => text || temporal,
        // Strings and mixed values (a BIGINT UNSIGNED beyond i64 is a string, DECIMAL is exact text):
        // the server judges each value in strict mode.
        JsonType::String | JsonType::Json | JsonType::Null => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sql_quotes_and_types() {
        let plan = TablePlan {
            model: "order".into(),
            database: "shop".into(),
            table: "or`ders".into(),
            columns: vec![
                ColumnSpec { name: "sku".into(), json: JsonType::String, nullable: false },
                ColumnSpec { name: "at".into(), json: JsonType::Timestamp, nullable: true },
                ColumnSpec { name: "doc".into(), json: JsonType::Json, nullable: true },
            ],
            key: vec!["sku".into()],
        };
        assert_eq!(
            create_sql(&plan),
            "CREATE TABLE IF NOT EXISTS `shop`.`or``ders` (\n  `sku` VARCHAR(255) NOT NULL,\n  `at` DATETIME(6),\n  \
             `doc` JSON,\n  PRIMARY KEY (`sku`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
    }
}
