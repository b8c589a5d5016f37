//! `remix doctor`'s checks of MariaDB/MySQL. Sources: connection, encryption, the binary log (on,
//! `ROW`, `FULL`), GTIDs, that no other replica uses the source's `server_id`, the privileges
//! (`REPLICATION SLAVE`, `REPLICATION CLIENT`/`BINLOG MONITOR`, `SELECT` on each table), each table's
//! primary key, and binary log retention. Targets: connection, encryption, privileges (`SELECT`,
//! `INSERT`, `UPDATE`, `DELETE`, and `CREATE`/`ALTER` with `create_tables`), and that every table and
//! mapped column fits (unless `create_tables` creates them). Each check says what it found and the SQL
//! that fixes it.

use super::config::{MySource, MyTarget};
use super::conn::{self, describe, quote};
use crate::config::Config;
use crate::connector::{Report, Status};
use mysql_async::prelude::Queryable;

async fn connect(url: &str, subject: &str, report: &mut Report) -> Option<mysql_async::Conn> {
    let parsed = match conn::parse_url(url) {
        Ok(parsed) => parsed,
        Err(e) => {
            report.add(subject, "connection", Status::Fail, e.to_string(), None);
            return None;
        }
    };
    match conn::connect(&parsed.opts).await {
        Ok(mut c) => {
            let version: Option<String> = c.query_first("SELECT VERSION()").await.ok().flatten();
            report.ok(subject, "connection", format!("connected ({})", version.unwrap_or_default()));
            let cipher: Option<(String, String)> =
                c.query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'").await.ok().flatten();
            match cipher.map(|(_, v)| v).filter(|v| !v.is_empty()) {
                Some(cipher) if parsed.opts.ssl_opts().is_some_and(|s| !s.accept_invalid_certs()) => {
                    report.ok(subject, "encryption", format!("TLS ({cipher}), server certificate verified"))
                }
                Some(cipher) => report.add(
                    subject,
                    "encryption",
                    Status::Warn,
                    format!("TLS ({cipher}), but the server's certificate is not verified"),
                    Some("set ssl-mode=verify_identity and ssl-ca=<CA file> in the url".into()),
                ),
                None => report.add(
                    subject,
                    "encryption",
                    Status::Warn,
                    "not encrypted",
                    Some("turn TLS on at the server and set ssl-mode=verify_identity in the url".into()),
                ),
            }
            Some(c)
        }
        Err(e) => {
            let fix = Some("check the url (host, port, user, password) and that the server accepts the user from this host".into());
            report.add(subject, "connection", Status::Fail, format!("cannot connect: {}", describe(&e)), fix);
            None
        }
    }
}

/// The privileges the current user holds on `db`.`table` (`*` for any), from `SHOW GRANTS`.
pub(super) async fn privileges(conn: &mut mysql_async::Conn, db: &str, table: &str) -> Option<Vec<String>> {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.ok()?;
    Some(grants_on(&grants, db, table))
}

/// Parses `GRANT <privileges> ON <object> TO ...` lines: the privileges that cover `db`.`table`.
fn grants_on(grants: &[String], db: &str, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for grant in grants {
        let Some(rest) = grant.strip_prefix("GRANT ") else { continue };
        let Some((privs, rest)) = rest.split_once(" ON ") else { continue };
        let Some((object, _)) = rest.split_once(" TO ") else { continue };
        let object = object.trim().trim_start_matches("TABLE ");
        let (odb, otable) = object.split_once('.').unwrap_or((object, "*"));
        let unquote = |s: &str| s.trim_matches('`').replace("``", "`");
        let (odb, otable) = (unquote(odb), unquote(otable));
        let db_ok = odb == "*" || odb == db || (odb.contains(['%', '_']) && like(&odb, db));
        let table_ok = otable == "*" || otable == table;
        if db_ok && table_ok {
            for p in privs.split(',') {
                let p = p.trim();
                let p = p.split_once('(').map_or(p, |(name, _)| name.trim());
                out.push(p.to_ascii_uppercase());
            }
        }
    }
    out
}

/// SQL `LIKE` with `%` and `_` (grant patterns).
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some(('\\', rest)) if !rest.is_empty() => s.first() == rest.first() && go(&rest[1..], &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>())
}

fn has(privs: &[String], wanted: &str) -> bool {
    privs.iter().any(|p| p == "ALL PRIVILEGES" || p == "ALL" || p == wanted)
}

async fn user(conn: &mut mysql_async::Conn) -> String {
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.ok().flatten();
    let user = user.unwrap_or_else(|| "remix@%".into());
    match user.split_once('@') {
        Some((name, host)) => format!("'{name}'@'{host}'"),
        None => format!("'{user}'"),
    }
}

pub(super) async fn check_target(my: &MyTarget, config: &Config, report: &mut Report) {
    let subject = format!("target {}", my.common.name);
    let Some(mut c) = connect(&my.url, &subject, report).await else { return };
    let default_db = conn::parse_url(&my.url).ok().and_then(|u| u.database);
    let who = user(&mut c).await;
    for output in my.models.values() {
        let Some(db) = output.database.as_deref().or(default_db.as_deref()) else { continue };
        let Some(privs) = privileges(&mut c, db, &output.table).await else { continue };
        let mut wanted = vec!["SELECT", "INSERT", "UPDATE", "DELETE"];
        if my.create_tables {
            wanted.extend(["CREATE", "ALTER"]);
        }
        let missing: Vec<&str> = wanted.into_iter().filter(|w| !has(&privs, w)).collect();
        let check = format!("privileges on {}", output.display_name());
        if missing.is_empty() {
            report.ok(&subject, &check, "granted");
        } else {
            report.add(
                &subject,
                &check,
                Status::Fail,
                format!("{who} lacks {}", missing.join(", ")),
                Some(format!("GRANT {} ON {}.* TO {who};", missing.join(", "), quote(db))),
            );
        }
    }
    let problems = match super::target::verify(&mut c, my, &config.models, default_db.as_deref()).await {
        Ok(problems) => problems,
        Err(e) => {
            return report.add(
                &subject,
                "tables",
                Status::Warn,
                format!("cannot inspect: {}", describe(&e)),
                None,
            )
        }
    };
    for output in my.models.values() {
        let table = output.display_name();
        let check = format!("table {table}");
        let mut found = false;
        for (_, problem) in problems.iter().filter(|(t, _)| *t == table) {
            found = true;
            report.add(&subject, &check, Status::Fail, problem.message.clone(), problem.fix.clone());
        }
        if !found {
            let message = if my.create_tables {
                "present or created at start"
            } else {
                "columns and types fit the mapping"
            };
            report.ok(&subject, &check, message);
        }
    }
}

async fn variable(conn: &mut mysql_async::Conn, name: &str) -> Option<String> {
    let sql = format!("SELECT CAST(@@{name} AS CHAR)");
    conn.query_first::<Option<String>, _>(sql).await.ok().flatten().flatten()
}

pub(super) async fn check_source(my: &MySource, report: &mut Report) {
    let subject = format!("source {}", my.name);
    let Some(mut c) = connect(&my.url, &subject, report).await else { return };
    let settings = [
        (
            "log_bin",
            "1",
            "binary log",
            "set log_bin (e.g. log_bin=mysql-bin in my.cnf) and restart the server",
        ),
        (
            "binlog_format",
            "ROW",
            "binlog_format",
            "SET GLOBAL binlog_format = 'ROW'; and binlog_format=ROW in my.cnf",
        ),
        (
            "binlog_row_image",
            "FULL",
            "binlog_row_image",
            "SET GLOBAL binlog_row_image = 'FULL'; and binlog_row_image=FULL in my.cnf",
        ),
    ];
    for (name, wanted, check, fix) in settings {
        match variable(&mut c, name).await {
            Some(v) if v.eq_ignore_ascii_case(wanted) || (wanted == "1" && v.eq_ignore_ascii_case("ON")) => {
                report.ok(&subject, check, v)
            }
            other => report.add(
                &subject,
                check,
                Status::Fail,
                format!("is {}, the source needs {wanted}", other.unwrap_or_else(|| "unknown".into())),
                Some(fix.into()),
            ),
        }
    }
    let gtid = variable(&mut c, "gtid_binlog_pos").await;
    let mysql_gtid = variable(&mut c, "gtid_mode").await;
    match (gtid, mysql_gtid) {
        (Some(pos), _) => report.ok(
            &subject,
            "GTID",
            format!(
                "MariaDB GTIDs (now {}): positions are file and offset, with the GTID state",
                if pos.is_empty() { "empty" } else { &pos }
            ),
        ),
        (None, Some(mode)) => report.add(
            &subject,
            "GTID",
            Status::Warn,
            format!(
                "MySQL gtid_mode={mode}: positions are file and offset (MySQL was not tested, see README)"
            ),
            None,
        ),
        _ => report.ok(&subject, "GTID", "no GTIDs: positions are file and offset"),
    }
    let own_id = variable(&mut c, "server_id").await;
    let replicas: Vec<mysql_async::Row> = c.query("SHOW SLAVE HOSTS").await.unwrap_or_default();
    let taken = replicas.iter().any(|r| r.get::<u32, _>(0) == Some(my.server_id));
    if own_id.as_deref() == Some(&my.server_id.to_string()) {
        report.add(
            &subject,
            "server_id",
            Status::Fail,
            format!("{} is the server's own server_id", my.server_id),
            Some("set server_id to another number in the source's section".into()),
        );
    } else if taken {
        report.add(
            &subject,
            "server_id",
            Status::Warn,
            format!("a replica with server_id {} is connected (this source while it runs?)", my.server_id),
            Some("give every replica and source its own server_id".into()),
        );
    } else {
        report.ok(&subject, "server_id", format!("{} is free", my.server_id));
    }
    let who = user(&mut c).await;
    let global = privileges(&mut c, "*", "*").await.unwrap_or_default();
    let mut missing = Vec::new();
    if !has(&global, "REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !has(&global, "REPLICATION CLIENT") && !has(&global, "BINLOG MONITOR") {
        missing.push("REPLICATION CLIENT");
    }
    if missing.is_empty() {
        report.ok(&subject, "replication privileges", "granted");
    } else {
        report.add(
            &subject,
            "replication privileges",
            Status::Fail,
            format!("{who} lacks {}", missing.join(", ")),
            Some(format!("GRANT {} ON *.* TO {who};", missing.join(", "))),
        );
    }
    for t in &my.tables {
        let check = format!("table {}.{}", t.database, t.table);
        let keys: Result<Vec<String>, _> = c
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND INDEX_NAME = 'PRIMARY'",
                (&t.database, &t.table),
            )
            .await;
        let exists: Option<String> = c
            .exec_first(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.database, &t.table),
            )
            .await
            .ok()
            .flatten();
        let privs = privileges(&mut c, &t.database, &t.table).await.unwrap_or_default();
        if exists.is_none() {
            report.add(
                &subject,
                &check,
                Status::Fail,
                "does not exist (or is not visible to this user)",
                None,
            );
        } else if !has(&privs, "SELECT") {
            report.add(
                &subject,
                &check,
                Status::Fail,
                format!("{who} lacks SELECT"),
                Some(format!("GRANT SELECT ON {}.{} TO {who};", quote(&t.database), quote(&t.table))),
            );
        } else if keys.as_ref().map_or(true, Vec::is_empty) {
            report.add(
                &subject,
                &check,
                Status::Warn,
                "has no primary key: the model key's columns must identify rows",
                None,
            );
        } else {
            report.ok(&subject, &check, "readable, with a primary key");
        }
    }
    let expire = variable(&mut c, "binlog_expire_logs_seconds").await.and_then(|v| v.parse::<u64>().ok());
    let days = variable(&mut c, "expire_logs_days").await.and_then(|v| v.parse::<f64>().ok());
    let seconds = expire.filter(|s| *s > 0).or(days.filter(|d| *d > 0.0).map(|d| (d * 86_400.0) as u64));
    match seconds {
        None => report.ok(&subject, "binlog retention", "binary logs are kept until purged by hand"),
        Some(s) if s >= 86_400 => report.ok(&subject, "binlog retention", format!("{} h", s / 3600)),
        Some(s) => report.add(
            &subject,
            "binlog retention",
            Status::Warn,
            format!("binary logs expire after {s} s: a source stopped longer than that cannot resume"),
            Some("SET GLOBAL binlog_expire_logs_seconds = 604800;".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_read() {
        let grants = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `remix`@`%`".to_owned(),
            "GRANT SELECT, INSERT ON `shop`.* TO `remix`@`%`".to_owned(),
            "GRANT UPDATE (`a`) ON `shop`.`orders` TO `remix`@`%`".to_owned(),
            "GRANT DELETE ON `sh_p%`.* TO `remix`@`%`".to_owned(),
        ];
        assert_eq!(grants_on(&grants, "*", "*"), ["REPLICATION SLAVE", "BINLOG MONITOR"]);
        let on = grants_on(&grants, "shop", "orders");
        assert!(["SELECT", "INSERT", "UPDATE", "DELETE"].iter().all(|p| has(&on, p)), "{on:?}");
        assert!(!has(&grants_on(&grants, "other", "t"), "SELECT"));
        assert!(like("a%c", "abbc") && !like("a_c", "abbc"));
    }
}
