//! `remix doctor`'s checks of PostgreSQL. Sources: connection, `wal_level`, the role's REPLICATION
//! privilege and SELECT grants, replication slot and WAL sender capacity, publication membership,
//! REPLICA IDENTITY of each table (with a warning for toastable columns), and the slot's state
//! (`wal_status`, retained WAL). Targets: connection, and that every table and mapped column exists
//! (unless `create_tables` creates them). Each check says what it found and the SQL that fixes it.

use super::config::{PostgresSource, PostgresTarget};
use super::conn::quote_ident;
use crate::config::Config;
use crate::connector::{Report, Status};

async fn connect(dsn: &str, subject: &str, report: &mut Report) -> Option<tokio_postgres::Client> {
    match super::tls::connect(dsn).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            report.ok(subject, "connection", "connected");
            check_encryption(&client, dsn, subject, report).await;
            Some(client)
        }
        Err(e) => {
            let fix = Some("check the DSN (host, port, user, password, dbname) and that the server accepts the connection (pg_hba.conf)".into());
            report.add(subject, "connection", Status::Fail, format!("cannot connect: {e}"), fix);
            None
        }
    }
}

/// Whether the connection is encrypted, and its server verified, as the DSN's `sslmode` asks: a
/// warning when a TCP connection is plaintext (`prefer` fell back, or `disable`) or its certificate
/// is not checked (`prefer`, `require`). Unix sockets need neither.
async fn check_encryption(client: &tokio_postgres::Client, dsn: &str, subject: &str, report: &mut Report) {
    use super::tls::{parse_dsn, SslMode};
    use tokio_postgres::config::Host;
    let Ok(parsed) = parse_dsn(dsn) else { return };
    if parsed.config.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_))) {
        return report.ok(subject, "encryption", "unix socket (TLS not needed)");
    }
    let sql = "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let Ok(row) = client.query_one(sql, &[]).await else { return };
    let (encrypted, version): (bool, String) = (row.get(0), row.get(1));
    let fix = || {
        Some(
            "turn ssl on at the server and set sslmode=verify-full and sslrootcert=<CA file> in the DSN"
                .to_owned(),
        )
    };
    let mode = parsed.tls.mode;
    if !encrypted {
        let why = if mode == SslMode::Disable { "sslmode=disable" } else { "the server does not offer TLS" };
        return report.add(subject, "encryption", Status::Warn, format!("not encrypted ({why})"), fix());
    }
    match mode {
        SslMode::VerifyFull => {
            report.ok(subject, "encryption", format!("{version}, server certificate and name verified"))
        }
        SslMode::VerifyCa => {
            report.ok(subject, "encryption", format!("{version}, server certificate verified (not its name)"))
        }
        _ => report.add(
            subject,
            "encryption",
            Status::Warn,
            format!("{version}, but the server's certificate is not verified (sslmode={mode})"),
            Some("set sslmode=verify-full and sslrootcert=<CA file> in the DSN".to_owned()),
        ),
    }
}

async fn setting(client: &tokio_postgres::Client, name: &str) -> Option<String> {
    client.query_one(&format!("SHOW {name}"), &[]).await.ok().map(|row| row.get(0))
}

pub(super) async fn check_source(pg: &PostgresSource, report: &mut Report) {
    let subject = format!("source {}", pg.name);
    let Some(client) = connect(&pg.dsn, &subject, report).await else { return };
    match setting(&client, "wal_level").await.as_deref() {
        Some("logical") => report.ok(&subject, "wal_level", "logical"),
        other => report.add(
            &subject,
            "wal_level",
            Status::Fail,
            format!("is {}, logical replication needs logical", other.unwrap_or("unknown")),
            Some("ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".into()),
        ),
    }
    check_role(&client, &subject, report).await;
    check_capacity(&client, pg, &subject, report).await;
    for table in &pg.tables {
        check_table(&client, pg, &table.schema, &table.table, &subject, report).await;
    }
    check_slot(&client, pg, &subject, report).await;
}

async fn check_role(client: &tokio_postgres::Client, subject: &str, report: &mut Report) {
    let row = client.query_one("SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[]).await;
    match row {
        Ok(row) if row.get::<_, bool>(1) => report.ok(
            subject,
            "replication privilege",
            format!("role {} may replicate", row.get::<_, String>(0)),
        ),
        Ok(row) => {
            let role: String = row.get(0);
            report.add(
                subject,
                "replication privilege",
                Status::Fail,
                format!("role {role} lacks REPLICATION"),
                Some(format!("ALTER ROLE {} REPLICATION;", quote_ident(&role))),
            );
        }
        Err(e) => {
            report.add(subject, "replication privilege", Status::Warn, format!("cannot tell: {e}"), None)
        }
    }
}

async fn check_capacity(
    client: &tokio_postgres::Client,
    pg: &PostgresSource,
    subject: &str,
    report: &mut Report,
) {
    let slots: i64 =
        client.query_one("SELECT count(*) FROM pg_replication_slots", &[]).await.map_or(0, |r| r.get(0));
    let ours = client
        .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&pg.slot])
        .await
        .ok()
        .flatten()
        .is_some();
    let max_slots: i64 =
        setting(client, "max_replication_slots").await.and_then(|s| s.parse().ok()).unwrap_or(0);
    let max_senders: i64 = setting(client, "max_wal_senders").await.and_then(|s| s.parse().ok()).unwrap_or(0);
    if ours || slots < max_slots {
        report.ok(
            subject,
            "replication slots",
            format!("{slots} of max_replication_slots = {max_slots} in use"),
        );
    } else {
        report.add(
            subject,
            "replication slots",
            Status::Fail,
            format!("all {max_slots} slots are in use"),
            Some(
                "ALTER SYSTEM SET max_replication_slots = <more>; then restart, or drop an unused slot"
                    .into(),
            ),
        );
    }
    let senders: i64 =
        client.query_one("SELECT count(*) FROM pg_stat_replication", &[]).await.map_or(0, |r| r.get(0));
    if senders < max_senders {
        report.ok(subject, "wal senders", format!("{senders} of max_wal_senders = {max_senders} in use"));
    } else {
        report.add(
            subject,
            "wal senders",
            Status::Fail,
            format!("all {max_senders} WAL senders are in use"),
            Some("ALTER SYSTEM SET max_wal_senders = <more>; then restart PostgreSQL".into()),
        );
    }
}

async fn check_table(
    client: &tokio_postgres::Client,
    pg: &PostgresSource,
    schema: &str,
    table: &str,
    subject: &str,
    report: &mut Report,
) {
    let name = format!("{schema}.{table}");
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let sql = "SELECT c.relreplident::text, has_table_privilege(c.oid, 'SELECT'), \
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
               EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage IN ('x', 'e')), \
               EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $3 AND p.schemaname = $1 AND p.tablename = $2) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2";
    let row = match client.query_opt(sql, &[&schema, &table, &pg.publication]).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return report.add(subject, &format!("table {name}"), Status::Fail, "does not exist", None)
        }
        Err(e) => {
            return report.add(
                subject,
                &format!("table {name}"),
                Status::Warn,
                format!("cannot inspect: {e}"),
                None,
            )
        }
    };
    let (identity, select, primary, toastable, published): (String, bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let check = format!("table {name}");
    if !select {
        report.add(
            subject,
            &check,
            Status::Fail,
            "no SELECT privilege (needed for the initial snapshot)",
            Some(format!("GRANT SELECT ON {qualified} TO <role>;")),
        );
    }
    match (identity.as_str(), primary) {
        ("n", _) => report.add(subject, &check, Status::Fail, "REPLICA IDENTITY NOTHING: updates and deletes cannot be replicated",
            Some(format!("ALTER TABLE {qualified} REPLICA IDENTITY DEFAULT;"))),
        ("d", false) => report.add(subject, &check, Status::Fail, "no primary key and REPLICA IDENTITY DEFAULT: updates and deletes cannot be replicated",
            Some(format!("add a primary key, or ALTER TABLE {qualified} REPLICA IDENTITY FULL;"))),
        ("d", true) if toastable => report.add(subject, &check, Status::Warn,
            "REPLICA IDENTITY DEFAULT with toastable columns: unchanged large values arrive as 'unchanged' (Remix keeps them, targets leave them alone)",
            Some(format!("only if a target needs whole rows: ALTER TABLE {qualified} REPLICA IDENTITY FULL;"))),
        _ => report.ok(subject, &check, format!("replica identity {identity}, SELECT granted")),
    }
    if !published {
        report.add(
            subject,
            &check,
            Status::Warn,
            format!("not in publication {} yet (remix run adds it)", pg.publication),
            None,
        );
    }
}

async fn check_slot(
    client: &tokio_postgres::Client,
    pg: &PostgresSource,
    subject: &str,
    report: &mut Report,
) {
    let sql = "SELECT active, coalesce(wal_status, ''), \
               coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8 \
               FROM pg_replication_slots WHERE slot_name = $1";
    match client.query_opt(sql, &[&pg.slot]).await {
        Ok(None) => {
            report.ok(subject, "slot", format!("{} does not exist yet (remix run creates it)", pg.slot))
        }
        Ok(Some(row)) => {
            let (active, status, retained): (bool, String, i64) = (row.get(0), row.get(1), row.get(2));
            if status == "lost" {
                report.add(
                    subject,
                    "slot",
                    Status::Fail,
                    format!("{} is lost: the server removed WAL it still needed", pg.slot),
                    Some(format!(
                        "SELECT pg_drop_replication_slot('{}'); then remix run takes a new snapshot",
                        pg.slot
                    )),
                );
            } else {
                let state = if active { "active" } else { "inactive" };
                let status = if retained > 1 << 30 { Status::Warn } else { Status::Ok };
                report.add(
                    subject,
                    "slot",
                    status,
                    format!(
                        "{} {state}, wal_status {}, retains {} MiB of WAL",
                        pg.slot,
                        status_text(&row.get::<_, String>(1)),
                        retained >> 20
                    ),
                    None,
                );
            }
        }
        Err(e) => report.add(subject, "slot", Status::Warn, format!("cannot inspect: {e}"), None),
    }
}

fn status_text(status: &str) -> &str {
    if status.is_empty() {
        "unknown"
    } else {
        status
    }
}

pub(super) async fn check_target(pg: &PostgresTarget, config: &Config, report: &mut Report) {
    let subject = format!("target {}", pg.common.name);
    let Some(client) = connect(&pg.dsn, &subject, report).await else { return };
    let problems = match super::target::verify(&client, pg, &config.models).await {
        Ok(problems) => problems,
        Err(e) => return report.add(&subject, "tables", Status::Warn, format!("cannot inspect: {e}"), None),
    };
    for output in pg.models.values() {
        let table = format!("{}.{}", output.schema, output.table);
        let check = format!("table {table}");
        let mut found = false;
        for (_, problem) in problems.iter().filter(|(t, _)| *t == table) {
            found = true;
            report.add(&subject, &check, Status::Fail, problem.message.clone(), problem.fix.clone());
        }
        if !found {
            let message = if pg.create_tables {
                "present or created at start"
            } else {
                "columns and types fit the mapping"
            };
            report.ok(&subject, &check, message);
        }
    }
}
