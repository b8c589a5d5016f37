//! The `postgres` target through the suite, against a throwaway PostgreSQL server (remix-pgtest): a
//! state target (a table has no duplicate key by construction, so the full table contents are
//! compared). Tables are made here, with renamed columns through the output mapping (`account`,
//! `item`), a string key and a composite key (`line`, identity mapping). Checked: every row equals the
//! model object (`row_to_json`), no row more or less. Unreachable: the server stopped
//! (`pg_ctl stop -m fast`), then started again. Permanent error: a CHECK constraint refusing the
//! poisoned account name.

use super::cases;
use super::model::{canonical, normalize, ModelState, ACCOUNT, ITEM};
use super::{Adapter, Rewound, State, TargetSpec, POISON};
use crate::support::Node;
use remix_pgtest::PgServer;
use serde_json::{Map, Value};
use std::path::Path;

const DB: &str = "warehouse";

const TABLES: &str = "
CREATE SCHEMA conf;
CREATE TABLE conf.accounts (account_id bigint PRIMARY KEY, email text NOT NULL, full_name text,
  tier text NOT NULL, score bigint NOT NULL, is_active boolean NOT NULL, notes text, prefs jsonb);
CREATE TABLE conf.items (sku text PRIMARY KEY, title text NOT NULL, price_cents bigint NOT NULL,
  tags jsonb, description text);
CREATE TABLE conf.order_lines (order_id bigint, line_no bigint, qty bigint NOT NULL,
  amount double precision NOT NULL, note text, PRIMARY KEY (order_id, line_no));";

/// Per model: table, key columns, (column, model field) pairs (empty: the model's own names).
fn table(model: &str) -> (&'static str, &'static [&'static str], &'static [(&'static str, &'static str)]) {
    match model {
        ACCOUNT => (
            "conf.accounts",
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
            "conf.items",
            &["sku"],
            &[
                ("sku", "sku"),
                ("title", "title"),
                ("price_cents", "price"),
                ("tags", "tags"),
                ("description", "description"),
            ],
        ),
        _ => ("conf.order_lines", &["order_id", "line_no"], &[]),
    }
}

#[derive(Debug)]
pub struct Postgres {
    pg: PgServer,
}

impl Postgres {
    pub fn new(_root: &Path) -> Postgres {
        let pg = PgServer::start();
        pg.create_db(DB);
        pg.psql(DB, TABLES);
        Postgres { pg }
    }

    fn sql(&self, sql: &str) -> Result<String, String> {
        self.pg.try_psql(DB, sql)
    }
}

/// A row in comparable form: its table and key, and the row as JSON.
fn entry(table: &str, keys: &[&str], row: Map<String, Value>) -> ((String, String), Value) {
    let key: Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect();
    ((table.to_owned(), canonical(&Value::Object(key))), normalize(&Value::Object(row)))
}

impl Adapter for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn history(&self) -> Option<Rewound> {
        None
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        let mut yaml = spec.common_yaml("postgres");
        yaml.push_str("    dsn: \"${REMIX_PG_TARGET}\"\n    create_tables: false\n    models:\n");
        for model in self.models() {
            let (name, _, columns) = table(model);
            let fields: Vec<String> = columns.iter().map(|(c, f)| format!("{c}: {f}")).collect();
            let fields = if fields.is_empty() {
                String::new()
            } else {
                format!(", fields: {{ {} }}", fields.join(", "))
            };
            yaml.push_str(&format!("      {model}: {{ table: {name}{fields} }}\n"));
        }
        yaml
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("REMIX_PG_TARGET".into(), self.pg.dsn(DB))]
    }

    fn expected_state(&self, state: &ModelState) -> State {
        state
            .iter()
            .map(|((model, _), object)| {
                let (name, keys, columns) = table(model);
                let row: Map<String, Value> = if columns.is_empty() {
                    object.clone()
                } else {
                    columns
                        .iter()
                        .map(|(c, f)| ((*c).to_owned(), object.get(*f).cloned().unwrap_or(Value::Null)))
                        .collect()
                };
                entry(name, keys, row)
            })
            .collect()
    }

    fn read_state(&self, _node: &Node) -> Result<State, String> {
        let mut state = State::new();
        for model in self.models() {
            let (name, keys, _) = table(model);
            let rows = self.sql(&format!("SELECT row_to_json(t)::text FROM {name} t"))?;
            for line in rows.lines() {
                let row: Value = serde_json::from_str(line).map_err(|e| format!("{name}: {e}: {line}"))?;
                let (id, row) = entry(name, keys, row.as_object().unwrap().clone());
                if state.insert(id.clone(), row).is_some() {
                    return Err(format!("{name}: two rows with key {}", id.1));
                }
            }
        }
        Ok(state)
    }

    fn damage(&mut self, _node: &Node) -> String {
        let sql =
            "DELETE FROM conf.accounts WHERE account_id % 3 = 0; UPDATE conf.items SET title = 'damaged', \
                   tags = NULL; UPDATE conf.order_lines SET note = 'damaged' WHERE line_no = 2; \
                   UPDATE remix_cursors SET updated_at = 'epoch'";
        self.sql(sql).unwrap();
        format!("{sql}; remix_cursors: {}", self.sql("SELECT target, log_offset FROM remix_cursors").unwrap())
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            self.pg.restart();
        } else {
            self.pg.stop();
        }
    }

    fn poison(&mut self, marker: Option<&str>) -> Result<(), &'static str> {
        let sql = match marker {
            Some(marker) => {
                assert_eq!(marker, POISON);
                format!("ALTER TABLE conf.accounts ADD CONSTRAINT no_poison CHECK (full_name IS DISTINCT FROM '{marker}')")
            }
            None => "ALTER TABLE conf.accounts DROP CONSTRAINT no_poison".to_owned(),
        };
        self.sql(&sql).unwrap();
        Ok(())
    }
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(Postgres::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(Postgres::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(Postgres::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(Postgres::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(Postgres::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(Postgres::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(Postgres::new);
}

#[test]
fn server_down() {
    cases::server_down(Postgres::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(Postgres::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(Postgres::new);
}
