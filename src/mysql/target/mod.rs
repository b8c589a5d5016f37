//! The `mysql` target (MariaDB and MySQL 8): each model into a table, by key, exactly once across
//! crashes.
//!
//! # Per batch
//!
//! One transaction per batch (items arrive collapsed per key, in log order; a truncate is a barrier):
//! for each run of items between truncates, first the deletes (`DELETE ... WHERE key IN (...)`, per
//! model), then the upserts, grouped by model and by the set of columns they write, as multi-row
//! `INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE col = VALUES(col)` statements, each at most
//! half of the server's `max_allowed_packet` and 65,535 placeholders; then the truncate (`DELETE FROM`,
//! since `TRUNCATE` would commit the transaction; only with the `apply` policy). Last, in the same
//! transaction, `remix_cursors` (`target`, `log_offset`, `updated_at`) is set to the batch's last
//! offset. So the tables and the cursor commit together: after a crash anywhere, `open` returns the
//! cursor of the last committed batch, which wins over the local one. A batch applied again after an
//! unclear commit ends in the same state (upserts and deletes by key), and after a reconnect a batch
//! the cursor row already covers is skipped. `remix_cursors` lives in the url's database (or the first
//! table's, when the url names none).
//!
//! A partial upsert (fields unchanged at the source) writes only the columns it carries: its group's
//! `ON DUPLICATE KEY UPDATE` lists only those.
//!
//! `ON DUPLICATE KEY UPDATE` fires on any unique index. When a table has a unique index besides the one
//! on the model key, the update first checks that the row it met has the item's key (`k =
//! IF(k <=> VALUES(k), k, NULL)`), so a clash on the other index fails (reported as a duplicate on a
//! secondary unique index, a permanent error) instead of overwriting another row.
//!
//! Values are always bound (prepared statements, see [`values`]); identifiers always quoted with
//! backticks. The session runs in strict mode, UTC, `utf8mb4`.
//!
//! # Tables
//!
//! With `create_tables: true`, `open` creates missing tables from the model's JSON Schema (see
//! [`schema`]) and adds mapped columns an existing table lacks. Either way it then reads every table
//! from `information_schema` and refuses to start, naming every problem and its fix, when a table or
//! column is missing, a type cannot hold the model's values, a NOT NULL column is not written, or the
//! key has no unique index. [`verify`] is the same check for `remix doctor`.
//!
//! # Errors
//!
//! By the server's error code (see `conn::classify`): connection loss and shutdown drop the connection
//! (transient, reconnect); deadlock (1213), lock wait timeout (1205) and resource shortages are
//! transient; everything else (duplicate key on a secondary unique index 1062, data too long 1406, out
//! of range 1264, NOT NULL 1048, a failed CHECK 4025, ...) is permanent: the batch is rolled back and
//! bisected inside one transaction with savepoints to find the first item that fails after the ones
//! before it, and the error names that item (`on_error` decides).

pub mod schema;
pub mod values;

use crate::connector::StartError;
use crate::models::Model;
use crate::mysql::conn::{self, classify, describe, quote, ErrorClass};
use crate::record::Op;
use crate::runtime::delivery::{Batch, Capabilities, FieldValue, Guarantee, Item, Target, TargetError};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Value as Sql};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use values::Encoding;

/// The table holding each target's position in the log.
pub const CURSORS_TABLE: &str = "remix_cursors";
/// Placeholders one prepared statement may have.
const PLACEHOLDERS_MAX: usize = 65_535;
/// Rows per statement at most.
const ROWS_PER_STATEMENT_MAX: usize = 2_000;

/// Applies batches to MariaDB/MySQL tables; see the module docs.
#[derive(Debug)]
pub struct MyTarget {
    name: String,
    opts: Opts,
    /// Where `remix_cursors` lives.
    cursor_db: String,
    create_tables: bool,
    plans: BTreeMap<String, schema::TablePlan>,
    tables: HashMap<String, Arc<Table>>,
    conn: Option<mysql_async::Conn>,
    /// The bytes one statement may take (half of `max_allowed_packet`).
    statement_bytes: usize,
}

/// A failed statement, classified.
#[derive(Debug)]
enum Failure {
    Broken(String, mysql_async::Error),
    Transient(String, mysql_async::Error),
    Permanent(String, Option<mysql_async::Error>),
}

impl Failure {
    fn into_error(self, item: Option<usize>) -> TargetError {
        match self {
            Failure::Broken(m, e) | Failure::Transient(m, e) => TargetError::transient(m).caused_by(e),
            Failure::Permanent(message, Some(e)) => TargetError::permanent(item, message).caused_by(e),
            Failure::Permanent(message, None) => TargetError::permanent(item, message),
        }
    }
}

/// A table as the target writes it.
#[derive(Debug)]
struct Table {
    qualified: String,
    columns: Vec<Column>,
    key: Vec<usize>,
    /// Another unique index exists: upserts check the key of the row they meet.
    guard: bool,
}

#[derive(Debug)]
struct Column {
    name: String,
    quoted: String,
    encoding: Encoding,
    /// `?`, or `CONVERT(? USING utf8mb4)` for text columns in another charset (a bound string is
    /// taken as bytes, which such a column would store unconverted).
    placeholder: &'static str,
}

impl Table {
    fn new(plan: &schema::TablePlan, info: &schema::TableInfo) -> Table {
        let columns: Vec<Column> = plan
            .columns
            .iter()
            .map(|spec| {
                let real = info.column(&spec.name).expect("checked");
                let encoding = Encoding::of(&real.data_type, real.json);
                let utf8 = real.charset.as_deref().is_none_or(|c| c.starts_with("utf8") || c == "binary");
                let placeholder =
                    if encoding == Encoding::Text && !utf8 { "CONVERT(? USING utf8mb4)" } else { "?" };
                Column { name: spec.name.clone(), quoted: quote(&spec.name), encoding, placeholder }
            })
            .collect();
        let key: Vec<usize> =
            plan.key.iter().map(|k| columns.iter().position(|c| &c.name == k).expect("planned")).collect();
        let key_set: std::collections::BTreeSet<String> = plan.key.iter().cloned().collect();
        let guard = info.unique.values().any(|cols| *cols != key_set);
        Table { qualified: plan.qualified(), columns, key, guard }
    }

    fn upsert_columns(&self, item: &Item) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&c| self.key.contains(&c) || !item.unchanged.iter().any(|u| u == &self.columns[c].name))
            .collect()
    }

    fn upsert_sql(&self, cols: &[usize], rows: usize) -> String {
        let names: Vec<&str> = cols.iter().map(|&c| self.columns[c].quoted.as_str()).collect();
        let marks: Vec<&str> = cols.iter().map(|&c| self.columns[c].placeholder).collect();
        let row = format!("({})", marks.join(", "));
        let mut set = Vec::new();
        if self.guard {
            let first = &self.columns[self.key[0]].quoted;
            let same: Vec<String> = self
                .key
                .iter()
                .map(|&k| format!("{q} <=> VALUES({q})", q = self.columns[k].quoted))
                .collect();
            set.push(format!("{first} = IF({}, {first}, NULL)", same.join(" AND ")));
        }
        set.extend(
            cols.iter()
                .filter(|c| !self.key.contains(c))
                .map(|&c| format!("{q} = VALUES({q})", q = self.columns[c].quoted)),
        );
        if set.is_empty() {
            let first = &self.columns[self.key[0]].quoted;
            set.push(format!("{first} = {first}"));
        }
        format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            self.qualified,
            names.join(", "),
            vec![row; rows].join(", "),
            set.join(", ")
        )
    }

    fn delete_sql(&self, rows: usize) -> String {
        let names: Vec<&str> = self.key.iter().map(|&c| self.columns[c].quoted.as_str()).collect();
        let marks: Vec<&str> = self.key.iter().map(|&c| self.columns[c].placeholder).collect();
        if names.len() == 1 {
            format!(
                "DELETE FROM {} WHERE {} IN ({})",
                self.qualified,
                names[0],
                vec![marks[0]; rows].join(", ")
            )
        } else {
            let row = format!("({})", marks.join(", "));
            format!(
                "DELETE FROM {} WHERE ({}) IN ({})",
                self.qualified,
                names.join(", "),
                vec![row; rows].join(", ")
            )
        }
    }

    /// An item's values for `cols`: its `data` field, else its `key` field, else `NULL`.
    fn row(&self, cols: &[usize], item: &Item, out: &mut Vec<Sql>) -> Result<usize, crate::mysql::Refusal> {
        let mut found: Vec<Option<FieldValue<'_>>> = vec![None; cols.len()];
        if let Some(data) = &item.data {
            data.for_each(|field, value| {
                if let Some(j) = cols.iter().position(|&c| self.columns[c].name == field) {
                    found[j] = Some(value);
                }
            });
        }
        let mut bytes = 0;
        for (j, &c) in cols.iter().enumerate() {
            let column = &self.columns[c];
            let value = found[j].or_else(|| item.key.get(&column.name).map(FieldValue::Parsed));
            let encoded = values::encode_field(value, column.encoding)
                .map_err(|e| format!("column {}: {e}", column.name))?;
            bytes += match &encoded {
                Sql::Bytes(b) => b.len() + 9,
                _ => 9,
            };
            out.push(encoded);
        }
        Ok(bytes)
    }
}

impl MyTarget {
    pub fn new(
        config: &crate::mysql::config::MyTarget,
        models: &BTreeMap<String, Arc<Model>>,
    ) -> Result<MyTarget, StartError> {
        let name = &config.common.name;
        let refuse = |message: String| StartError { kind: "mysql target", name: name.clone(), message };
        let url = conn::parse_url(&config.url).map_err(|e| refuse(e.to_string()))?;
        let mut plans = BTreeMap::new();
        for (model_name, output) in &config.models {
            let model =
                models.get(model_name).ok_or_else(|| refuse(format!("unknown model '{model_name}'")))?;
            let db = output.database.clone().or_else(|| url.database.clone()).ok_or_else(|| {
                refuse(format!("table {} names no database, and neither does the url", output.table))
            })?;
            plans.insert(model_name.clone(), schema::plan(model, output, &db).map_err(|e| refuse(e.0))?);
        }
        let cursor_db = url
            .database
            .clone()
            .or_else(|| plans.values().next().map(|p| p.database.clone()))
            .ok_or_else(|| refuse("no database for remix_cursors".into()))?;
        Ok(MyTarget {
            name: name.clone(),
            opts: url.opts,
            cursor_db,
            create_tables: config.create_tables,
            plans,
            tables: HashMap::new(),
            conn: None,
            statement_bytes: 1 << 20,
        })
    }

    fn conn(&mut self) -> &mut mysql_async::Conn {
        self.conn.as_mut().expect("connected")
    }

    /// Classifies an error, forgetting the connection when it is gone.
    fn fail(&mut self, e: mysql_async::Error) -> Failure {
        let message = describe(&e);
        match classify(&e) {
            ErrorClass::Broken => {
                self.conn = None;
                Failure::Broken(format!("target database connection: {message}"), e)
            }
            ErrorClass::Transient => Failure::Transient(message, e),
            ErrorClass::Permanent => Failure::Permanent(message, Some(e)),
        }
    }

    async fn connect(&mut self) -> Result<(), TargetError> {
        self.conn = None;
        let conn = conn::connect(&self.opts).await.map_err(|e| {
            TargetError::transient(format!("cannot connect to the target database: {}", describe(&e)))
                .caused_by(e)
        })?;
        self.conn = Some(conn);
        let result = self.set_up().await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn set_up(&mut self) -> Result<(), TargetError> {
        let packet: Option<u64> = self
            .conn()
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(|e| self.fail(e).into_error(None))?;
        self.statement_bytes = (packet.unwrap_or(4 << 20) as usize / 2).max(64 << 10);
        let mut ddl = vec![format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (`target` VARCHAR(255) NOT NULL PRIMARY KEY, \
             `log_offset` BIGINT NOT NULL, `updated_at` DATETIME(6) NOT NULL) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            quote(&self.cursor_db),
            quote(CURSORS_TABLE)
        )];
        if self.create_tables {
            ddl.extend(self.plans.values().map(schema::create_sql));
        }
        for sql in ddl {
            self.conn().query_drop(&sql).await.map_err(|e| self.fail(e).into_error(None))?;
        }
        let mut problems = Vec::new();
        let mut tables = HashMap::new();
        let plans = self.plans.clone();
        for (model, plan) in &plans {
            let mut info = schema::inspect(self.conn(), &plan.database, &plan.table)
                .await
                .map_err(|e| self.fail(e).into_error(None))?;
            if let (true, Some(found)) = (self.create_tables, &info) {
                let adds: Vec<String> = plan
                    .columns
                    .iter()
                    .filter(|c| found.column(&c.name).is_none())
                    .map(|c| format!("ADD COLUMN {} {}", quote(&c.name), c.json.sql_type(false)))
                    .collect();
                if !adds.is_empty() {
                    tracing::info!(target = %self.name, table = %plan.display_name(), "adding columns: {adds:?}");
                    let sql = format!("ALTER TABLE {} {}", plan.qualified(), adds.join(", "));
                    self.conn().query_drop(sql).await.map_err(|e| self.fail(e).into_error(None))?;
                    info = schema::inspect(self.conn(), &plan.database, &plan.table)
                        .await
                        .map_err(|e| self.fail(e).into_error(None))?;
                }
            }
            match info {
                None => problems.push(format!(
                    "table {} (model {model}) does not exist: create it, or set create_tables: true",
                    plan.display_name()
                )),
                Some(info) => {
                    let found = schema::check(plan, &info);
                    if found.is_empty() {
                        tables.insert(model.clone(), Arc::new(Table::new(plan, &info)));
                    }
                    problems.extend(found.into_iter().map(|p| match p.fix {
                        Some(fix) => format!("{} (fix: {fix})", p.message),
                        None => p.message,
                    }));
                }
            }
        }
        if !problems.is_empty() {
            return Err(TargetError::permanent(None, problems.join("; ")));
        }
        self.tables = tables;
        Ok(())
    }

    async fn stored_cursor(&mut self) -> Result<u64, TargetError> {
        let sql = format!(
            "SELECT `log_offset` FROM {}.{} WHERE `target` = ?",
            quote(&self.cursor_db),
            quote(CURSORS_TABLE)
        );
        let name = self.name.clone();
        let row: Option<i64> =
            self.conn().exec_first(sql, (name,)).await.map_err(|e| self.fail(e).into_error(None))?;
        Ok(row.map_or(0, |o| o.max(0) as u64))
    }

    async fn simple(&mut self, sql: &str) -> Result<(), Failure> {
        match self.conn().query_drop(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn exec(&mut self, sql: String, params: Vec<Sql>) -> Result<(), Failure> {
        match self.conn().exec_drop(sql, mysql_async::Params::Positional(params)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn roll_back(&mut self) {
        if self.conn.is_some() {
            if let Err(e) = self.simple("ROLLBACK").await {
                tracing::debug!(target = %self.name, "rollback failed: {e:?}");
                self.conn = None;
            }
        }
    }

    /// Applies `items` and sets the cursor, in one transaction.
    async fn transaction(&mut self, items: &[Item], cursor: u64) -> Result<(), Failure> {
        self.simple("START TRANSACTION").await?;
        let result = async {
            self.apply_items(items).await?;
            let sql = format!(
                "INSERT INTO {}.{} (`target`, `log_offset`, `updated_at`) VALUES (?, ?, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE `log_offset` = VALUES(`log_offset`), `updated_at` = VALUES(`updated_at`)",
                quote(&self.cursor_db),
                quote(CURSORS_TABLE)
            );
            let offset = i64::try_from(cursor).unwrap_or(i64::MAX);
            self.exec(sql, vec![Sql::from(self.name.clone()), Sql::Int(offset)]).await?;
            self.simple("COMMIT").await
        }
        .await;
        if result.is_err() {
            self.roll_back().await;
        }
        result
    }

    fn table(&self, model: &str) -> Result<Arc<Table>, Failure> {
        self.tables
            .get(model)
            .cloned()
            .ok_or_else(|| Failure::Permanent(format!("model '{model}' has no table in this target"), None))
    }

    async fn apply_items(&mut self, items: &[Item]) -> Result<(), Failure> {
        let mut start = 0;
        for (i, item) in items.iter().enumerate() {
            if item.op == Op::Truncate {
                self.apply_run(&items[start..i]).await?;
                let sql = format!("DELETE FROM {}", self.table(&item.model)?.qualified);
                self.simple(&sql).await?;
                start = i + 1;
            }
        }
        self.apply_run(&items[start..]).await
    }

    /// Applies items without truncates: one key at most once (collapsed).
    async fn apply_run(&mut self, items: &[Item]) -> Result<(), Failure> {
        type Group<'i> = ((&'i str, Vec<usize>), Vec<&'i Item>);
        let mut deletes: Vec<(&str, Vec<&Item>)> = Vec::new();
        let mut upserts: Vec<Group<'_>> = Vec::new();
        for item in items {
            let table = self.table(&item.model)?;
            match item.op {
                Op::Delete => match deletes.iter_mut().find(|(m, _)| *m == item.model) {
                    Some((_, group)) => group.push(item),
                    None => deletes.push((&item.model, vec![item])),
                },
                Op::Upsert => {
                    let id = (item.model.as_str(), table.upsert_columns(item));
                    match upserts.iter_mut().find(|(g, _)| *g == id) {
                        Some((_, group)) => group.push(item),
                        None => upserts.push((id, vec![item])),
                    }
                }
                Op::Truncate => unreachable!("runs hold no truncates"),
            }
        }
        for (model, group) in deletes {
            let table = self.table(model)?;
            let cols = table.key.clone();
            self.statements(&table, &cols, &group, |t, rows| t.delete_sql(rows)).await?;
        }
        for ((model, cols), group) in upserts {
            let table = self.table(model)?;
            self.statements(&table, &cols, &group, |t, rows| t.upsert_sql(&cols, rows)).await?;
        }
        Ok(())
    }

    /// Runs `sql(rows)` over `group` in chunks that fit a statement.
    async fn statements(
        &mut self,
        table: &Table,
        cols: &[usize],
        group: &[&Item],
        sql: impl Fn(&Table, usize) -> String,
    ) -> Result<(), Failure> {
        let rows_max = (PLACEHOLDERS_MAX / cols.len().max(1)).min(ROWS_PER_STATEMENT_MAX);
        let mut params = Vec::new();
        let (mut rows, mut bytes) = (0, 0);
        for item in group {
            let n = table.row(cols, item, &mut params).map_err(|e| Failure::Permanent(e.0, None))?;
            rows += 1;
            bytes += n;
            if rows == rows_max || bytes >= self.statement_bytes {
                self.chunk(table, sql(table, rows), std::mem::take(&mut params)).await?;
                (rows, bytes) = (0, 0);
            }
        }
        if rows > 0 {
            self.chunk(table, sql(table, rows), params).await?;
        }
        Ok(())
    }

    async fn chunk(&mut self, table: &Table, sql: String, params: Vec<Sql>) -> Result<(), Failure> {
        match self.exec(sql, params).await {
            // The upsert's guard met a row with another key on a secondary unique index.
            Err(Failure::Permanent(message, e))
                if table.guard
                    && e.as_ref().and_then(conn::code) == Some(1048)
                    && message.contains(&format!("'{}'", table.columns[table.key[0]].name)) =>
            {
                Err(Failure::Permanent(
                    format!(
                        "duplicate entry on a unique index of {} other than the key (another row holds \
                         the value; error 1062 in effect)",
                        table.qualified
                    ),
                    e,
                ))
            }
            other => other,
        }
    }

    /// After a permanent failure of the whole batch: the index of the first item that fails after the
    /// items before it were applied, and its error. Runs in a transaction that is rolled back.
    async fn locate(&mut self, items: &[Item]) -> Result<Option<(usize, Failure)>, Failure> {
        self.simple("START TRANSACTION").await?;
        let result = async {
            let (mut lo, mut hi) = (0, items.len());
            loop {
                let mid = if hi - lo == 1 { hi } else { lo + (hi - lo) / 2 };
                self.simple("SAVEPOINT remix_locate").await?;
                match self.apply_items(&items[lo..mid]).await {
                    Ok(()) => {
                        self.simple("RELEASE SAVEPOINT remix_locate").await?;
                        if mid == hi {
                            return Ok(None);
                        }
                        lo = mid;
                    }
                    Err(failure @ Failure::Permanent(..)) => {
                        self.simple("ROLLBACK TO SAVEPOINT remix_locate").await?;
                        if mid - lo == 1 {
                            return Ok(Some((lo, failure)));
                        }
                        hi = mid;
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        .await;
        self.roll_back().await;
        result
    }
}

impl Target for MyTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: true,
            guarantee: Guarantee::CursorInTarget,
            batch_records_max: 100_000,
            batch_records_default: 20_000,
        }
    }

    async fn open(&mut self, _cursor: u64) -> Result<u64, TargetError> {
        self.connect().await?;
        self.stored_cursor().await
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        if self.conn.is_none() {
            self.connect().await?;
            // The connection may have dropped while the last attempt committed.
            if self.stored_cursor().await? >= batch.last_offset {
                return Ok(());
            }
        }
        let failure = match self.transaction(&batch.items, batch.last_offset).await {
            Ok(()) => return Ok(()),
            Err(failure @ (Failure::Broken(..) | Failure::Transient(..))) => {
                return Err(failure.into_error(None))
            }
            Err(failure) => failure,
        };
        tracing::debug!(target = %self.name, "batch failed, locating the item at fault: {failure:?}");
        if batch.items.len() == 1 {
            return Err(failure.into_error(Some(0)));
        }
        match self.locate(&batch.items).await {
            Ok(Some((index, failure))) => Err(failure.into_error(Some(index))),
            Ok(None) => Err(failure.into_error(None)),
            Err(other) => Err(other.into_error(None)),
        }
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        match self.transaction(&[], offset).await {
            Ok(()) => Ok(offset),
            Err(failure) => Err(failure.into_error(None)),
        }
    }
}

/// What is wrong with the tables of `config` in the database `conn` is connected to, for `remix
/// doctor`: `(table, problem)`; a missing table is one problem (none when `create_tables` will make it).
pub async fn verify(
    conn: &mut mysql_async::Conn,
    config: &crate::mysql::config::MyTarget,
    models: &BTreeMap<String, Arc<Model>>,
    default_db: Option<&str>,
) -> Result<Vec<(String, schema::Problem)>, mysql_async::Error> {
    let mut out = Vec::new();
    for (model_name, output) in &config.models {
        let name = output.display_name();
        let Some(model) = models.get(model_name) else { continue };
        let Some(db) = output.database.as_deref().or(default_db) else { continue };
        let plan = match schema::plan(model, output, db) {
            Ok(plan) => plan,
            Err(message) => {
                out.push((name, schema::Problem { message: message.0, fix: None }));
                continue;
            }
        };
        match schema::inspect(conn, &plan.database, &plan.table).await? {
            None if config.create_tables => {}
            None => out.push((
                name.clone(),
                schema::Problem {
                    message: format!("table {} (model {model_name}) does not exist", plan.display_name()),
                    fix: Some(format!("{}; or set create_tables: true", schema::create_sql(&plan))),
                },
            )),
            Some(info) => {
                let mut problems = schema::check(&plan, &info);
                if config.create_tables {
                    problems.retain(|p| !p.message.contains(" has no column "));
                }
                out.extend(problems.into_iter().map(|p| (name.clone(), p)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(guard: bool) -> Table {
        let column = |name: &str, encoding| Column {
            name: name.into(),
            quoted: quote(name),
            encoding,
            placeholder: "?",
        };
        Table {
            qualified: "`shop`.`lines`".into(),
            columns: vec![
                column("order_id", Encoding::Int),
                column("line", Encoding::Int),
                column("note", Encoding::Text),
            ],
            key: vec![0, 1],
            guard,
        }
    }

    #[test]
    fn statements_quote_and_bind() {
        let t = table(false);
        assert_eq!(
            t.upsert_sql(&[0, 1, 2], 2),
            "INSERT INTO `shop`.`lines` (`order_id`, `line`, `note`) VALUES (?, ?, ?), (?, ?, ?) ON DUPLICATE \
             KEY UPDATE `note` = VALUES(`note`)"
        );
        assert_eq!(
            t.upsert_sql(&[0, 1], 1),
            "INSERT INTO `shop`.`lines` (`order_id`, `line`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `order_id` = `order_id`"
        );
        assert_eq!(
            t.delete_sql(2),
            "DELETE FROM `shop`.`lines` WHERE (`order_id`, `line`) IN ((?, ?), (?, ?))"
        );
        assert!(table(true).upsert_sql(&[0, 1, 2], 1).ends_with(
            "UPDATE `order_id` = IF(`order_id` <=> VALUES(`order_id`) AND `line` <=> VALUES(`line`), `order_id`, NULL), \
             `note` = VALUES(`note`)"
        ));
    }
}
