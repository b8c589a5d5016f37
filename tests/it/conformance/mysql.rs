//! The `mysql` target through the suite, against a throwaway MariaDB server (remix-mytest): a state
//! target like postgres. `accounts` and `items` are made here with renamed columns (a CHECK constraint
//! on `accounts` is the poison); `order_lines` (composite key, identity mapping) is made by
//! `create_tables`. Checked: every row equals the model object (`JSON_OBJECT` of the row; booleans
//! are `BOOLEAN`, so 0/1), no row more or less. Unreachable: the server stopped, then started again.

use super::cases;
use super::model::{canonical, normalize, ModelState, ACCOUNT, ITEM};
use super::{Adapter, Rewound, State, TargetSpec, POISON};
use crate::support::Node;
use remix_mytest::MyServer;
use serde_json::{Map, Value};
use std::path::Path;

const DB: &str = "conf";

const TABLES: &str = "
CREATE TABLE accounts (account_id BIGINT PRIMARY KEY, email LONGTEXT NOT NULL, full_name LONGTEXT,
  tier VARCHAR(16) NOT NULL, score BIGINT NOT NULL, is_active BOOLEAN NOT NULL, notes LONGTEXT, prefs JSON);
CREATE TABLE items (sku VARCHAR(255) PRIMARY KEY, title LONGTEXT NOT NULL, price_cents BIGINT NOT NULL,
  tags JSON, description LONGTEXT);";

type Columns = &'static [(&'static str, &'static str)];

/// Per model: table, key columns, (column, model field) pairs.
fn table(model: &str) -> (&'static str, &'static [&'static str], Columns) {
    match model {
        ACCOUNT => (
            "accounts",
            &["account_id"],
            &[
                ("account_id", "id"),
                ("email", "email"),
                ("full_name", "name"),
                ("tier", "tier"),
                ("score", "score"),
                ("is_active", "active"),
                ("notes", "notes"),
                ("prefs", "prefs"),
            ],
        ),
        ITEM => (
            "items",
            &["sku"],
            &[
                ("sku", "sku"),
                ("title", "title"),
                ("price_cents", "price"),
                ("tags", "tags"),
                ("description", "description"),
            ],
        ),
        _ => (
            "order_lines",
            &["order_id", "line_no"],
            &[
                ("order_id", "order_id"),
                ("line_no", "line_no"),
                ("qty", "qty"),
                ("amount", "amount"),
                ("note", "note"),
            ],
        ),
    }
}

/// Columns holding JSON documents (read back as text, parsed here).
const JSON_COLUMNS: [&str; 2] = ["prefs", "tags"];

#[derive(Debug)]
pub struct MySql {
    my: MyServer,
}

impl MySql {
    pub fn new(_root: &Path) -> MySql {
        let my = MyServer::start();
        my.create_db(DB);
        my.sql(DB, TABLES);
        MySql { my }
    }

    fn sql(&self, sql: &str) -> Result<String, String> {
        self.my.try_sql(DB, sql)
    }
}

fn entry(table: &str, keys: &[&str], row: Map<String, Value>) -> ((String, String), Value) {
    let key: Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect();
    ((table.to_owned(), canonical(&Value::Object(key))), normalize(&Value::Object(row)))
}

impl Adapter for MySql {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn history(&self) -> Option<Rewound> {
        None
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        let mut yaml = spec.common_yaml("mysql");
        yaml.push_str("    url: \"${REMIX_MY_TARGET}\"\n    create_tables: true\n    models:\n");
        for model in self.models() {
            let (name, _, columns) = table(model);
            let fields: Vec<String> = columns.iter().map(|(c, f)| format!("{c}: {f}")).collect();
            yaml.push_str(&format!(
                "      {model}: {{ table: {name}, fields: {{ {} }} }}\n",
                fields.join(", ")
            ));
        }
        yaml
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("REMIX_MY_TARGET".into(), self.my.url(DB))]
    }

    fn expected_state(&self, state: &ModelState) -> State {
        state
            .iter()
            .map(|((model, _), object)| {
                let (name, keys, columns) = table(model);
                let row: Map<String, Value> = columns
                    .iter()
                    .map(|(c, f)| {
                        let value = match object.get(*f).cloned().unwrap_or(Value::Null) {
                            Value::Bool(b) => Value::from(u8::from(b)),
                            other => other,
                        };
                        ((*c).to_owned(), value)
                    })
                    .collect();
                entry(name, keys, row)
            })
            .collect()
    }

    fn read_state(&self, _node: &Node) -> Result<State, String> {
        let mut state = State::new();
        for model in self.models() {
            let (name, keys, columns) = table(model);
            let pairs: Vec<String> = columns.iter().map(|(c, _)| format!("'{c}', `{c}`")).collect();
            let rows = self.sql(&format!("SELECT JSON_OBJECT({}) FROM `{name}`", pairs.join(", ")))?;
            for line in rows.lines() {
                // The client escapes backslashes, tabs and newlines in its batch output.
                let text = unescape(line);
                let row: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}: {text}"))?;
                let mut row = row.as_object().unwrap().clone();
                for column in JSON_COLUMNS {
                    if let Some(Value::String(doc)) = row.get(column) {
                        let parsed =
                            serde_json::from_str(doc).map_err(|e| format!("{name}.{column}: {e}"))?;
                        row.insert(column.to_owned(), parsed);
                    }
                }
                let (id, row) = entry(name, keys, row);
                if state.insert(id.clone(), row).is_some() {
                    return Err(format!("{name}: two rows with key {}", id.1));
                }
            }
        }
        Ok(state)
    }

    fn damage(&mut self, _node: &Node) -> String {
        let sql = "DELETE FROM accounts WHERE account_id % 3 = 0; UPDATE items SET title = 'damaged', tags = NULL; \
                   UPDATE order_lines SET note = 'damaged' WHERE line_no = 2; \
                   UPDATE remix_cursors SET updated_at = '1970-01-01'";
        self.sql(sql).unwrap();
        format!("{sql}; remix_cursors: {}", self.sql("SELECT target, log_offset FROM remix_cursors").unwrap())
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            self.my.restart();
        } else {
            self.my.stop();
        }
    }

    fn poison(&mut self, marker: Option<&str>) -> Result<(), &'static str> {
        let sql = match marker {
            Some(marker) => {
                assert_eq!(marker, POISON);
                format!(
                    "ALTER TABLE accounts ADD CONSTRAINT no_poison CHECK (full_name IS NULL OR full_name <> '{marker}')"
                )
            }
            None => "ALTER TABLE accounts DROP CONSTRAINT no_poison".to_owned(),
        };
        self.sql(&sql).unwrap();
        Ok(())
    }
}

/// Undoes the `mariadb` client's batch-mode escapes (`\\`, `\t`, `\n`, `\0`).
fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(MySql::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(MySql::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(MySql::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(MySql::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(MySql::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(MySql::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(MySql::new);
}

#[test]
fn server_down() {
    cases::server_down(MySql::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(MySql::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(MySql::new);
}
