//! The initial snapshot: every configured table copied (`COPY ... TO STDOUT`, text format) inside the
//! snapshot exported by `CREATE_REPLICATION_SLOT`, so the copy and the stream that starts at the
//! slot's consistent point neither miss nor repeat a change. Values go through the same text-to-JSON
//! conversion as streamed rows.

use super::conn::{quote_ident, quote_literal};
use super::pgoutput::{Column, Relation};
use super::source::SourceError;
use futures_util::StreamExt;
use serde_json::{Map, Value};

/// Column names and types of a table, in order (for COPY's positional fields).
pub async fn table_relation(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Relation, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname, a.atttypid::int8, a.atttypmod FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    let columns = rows
        .iter()
        .map(|row| Column {
            flags: 0,
            name: row.get(0),
            type_oid: row.get::<_, i64>(1) as u32,
            type_modifier: row.get(2),
        })
        .collect();
    Ok(Relation {
        id: 0,
        namespace: schema.to_owned(),
        name: table.to_owned(),
        replica_identity: b'd',
        columns,
    })
}

/// The planner's row estimate (for progress and ETA).
pub async fn estimated_rows(client: &tokio_postgres::Client, schema: &str, table: &str) -> u64 {
    let sql = "SELECT greatest(c.reltuples, 0)::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname = $1 AND c.relname = $2";
    match client.query_opt(sql, &[&schema, &table]).await {
        Ok(Some(row)) => row.get::<_, i64>(0).max(0) as u64,
        _ => 0,
    }
}

/// Opens the snapshot transaction on `client`.
pub async fn begin(client: &tokio_postgres::Client, snapshot: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        ))
        .await
}

/// Reads one table's rows through `COPY ... TO STDOUT` (text format), a chunk at a time.
pub struct TableCopy {
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    relation: Relation,
    pending: Vec<u8>,
}

impl std::fmt::Debug for TableCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCopy").field("table", &self.relation.name).finish_non_exhaustive()
    }
}

impl TableCopy {
    pub async fn start(
        client: &tokio_postgres::Client,
        relation: Relation,
    ) -> Result<TableCopy, tokio_postgres::Error> {
        let sql =
            format!("COPY {}.{} TO STDOUT", quote_ident(&relation.namespace), quote_ident(&relation.name));
        let stream = Box::pin(client.copy_out(&sql).await?);
        Ok(TableCopy { stream, relation, pending: Vec::new() })
    }

    /// The rows of the next chunk the server sent (possibly none); `None` at the end.
    pub async fn next_rows(&mut self) -> Result<Option<Vec<Map<String, Value>>>, SourceError> {
        let Some(chunk) = self.stream.next().await else {
            if !self.pending.is_empty() {
                return Err(SourceError::Protocol(format!(
                    "COPY of {}.{} ended in the middle of a row",
                    self.relation.namespace, self.relation.name
                )));
            }
            return Ok(None);
        };
        self.pending.extend_from_slice(&chunk?);
        let mut rows = Vec::new();
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            rows.push(parse_line(&self.relation, &self.pending[start..start + end])?);
            start += end + 1;
        }
        self.pending.drain(..start);
        Ok(Some(rows))
    }
}

/// One line of COPY text format: tab-separated fields, `\N` for NULL, backslash escapes.
fn parse_line(relation: &Relation, line: &[u8]) -> Result<Map<String, Value>, SourceError> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
    if fields.len() != relation.columns.len() {
        return Err(SourceError::Protocol(format!(
            "COPY row of {}.{} has {} fields, the table {} columns",
            relation.namespace,
            relation.name,
            fields.len(),
            relation.columns.len()
        )));
    }
    let mut object = Map::new();
    for (column, field) in relation.columns.iter().zip(fields) {
        let value = if field == b"\\N" {
            Value::Null
        } else {
            let text = String::from_utf8(unescape(field))
                .map_err(|_| SourceError::Protocol(format!("column {} is not UTF-8", column.name)))?;
            super::types::text_to_json(column.type_oid, &text)
                .map_err(|e| SourceError::Protocol(format!("column {}: {e}", column.name)))?
        };
        object.insert(column.name.clone(), value);
    }
    Ok(object)
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] != b'\\' || i + 1 == field.len() {
            out.push(field[i]);
            i += 1;
            continue;
        }
        let c = field[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                while i < field.len() && (b'0'..=b'7').contains(&field[i]) && value < 32 {
                    value = value * 8 + u32::from(field[i] - b'0');
                    i += 1;
                }
                out.push(value as u8);
            }
            b'x' => {
                let digits = field[i..].iter().take(2).take_while(|b| b.is_ascii_hexdigit()).count();
                let hex = std::str::from_utf8(&field[i..i + digits]).unwrap_or("0");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += digits;
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_unescapes() {
        assert_eq!(unescape(br"a\tb\\c\nd"), b"a\tb\\c\nd");
        assert_eq!(unescape(br"\101\x42"), b"AB");
        let relation = Relation {
            id: 0,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: vec![
                Column { flags: 0, name: "id".into(), type_oid: 23, type_modifier: -1 },
                Column { flags: 0, name: "note".into(), type_oid: 25, type_modifier: -1 },
            ],
        };
        let row = parse_line(&relation, b"7\t\\N").unwrap();
        assert_eq!(Value::Object(row), serde_json::json!({"id": 7, "note": null}));
        assert!(parse_line(&relation, b"7").is_err());
    }
}
