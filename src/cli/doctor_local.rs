//! `remix doctor`'s checks of what is not PostgreSQL: the data directory (writable; whether a node
//! holds it), the listen addresses (free, unless the node holding the data directory serves them),
//! the jsonl targets' directories (writable) and the http targets' hosts (a TCP connection).

use super::doctor::{Report, Status};
use crate::config::{Config, TargetConfig};
use std::path::Path;
use std::time::Duration;

/// How long a TCP connection to an http target's host may take.
const CONNECT_TIMEOUT_MS: u64 = 3_000;

pub(super) async fn check(config: &Config, report: &mut Report) {
    let subject = "data directory";
    if let Err(e) = writable(&config.data_dir) {
        let fix =
            format!("create {} and give the user running remix write access", config.data_dir.display());
        report.add(subject, "writable", Status::Fail, e, Some(fix));
        return;
    }
    report.ok(subject, "writable", config.data_dir.display().to_string());
    let node_running = match remix_storage::DataDirLock::take(&remix_storage::OsFs, &config.data_dir) {
        Ok(_lock) => false,
        Err(remix_storage::Error::Locked { .. }) => true,
        Err(e) => {
            report.add(subject, "lock", Status::Fail, e.to_string(), None);
            return;
        }
    };
    if node_running {
        report.ok(subject, "lock", "held by a running node (its addresses are in use by it)");
    } else {
        check_listen_addresses(config, report);
    }
    for target in &config.targets {
        match target {
            TargetConfig::Jsonl(j) => check_dir(&format!("target {}", j.common.name), &j.dir, report),
            TargetConfig::Http(h) => {
                check_reachable(&format!("target {}", h.common.name), &h.url, report).await
            }
            TargetConfig::Postgres(_) | TargetConfig::Stripe(_) => {}
        }
    }
}

/// Creates `dir` if needed, then writes, syncs and removes a file in it.
fn writable(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".remix-doctor-{}", std::process::id()));
    let written =
        std::fs::File::create(&probe).and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
    let removed = std::fs::remove_file(&probe);
    written.and(removed).map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

fn check_dir(subject: &str, dir: &Path, report: &mut Report) {
    match writable(dir) {
        Ok(()) => report.ok(subject, "directory", format!("{} is writable", dir.display())),
        Err(e) => {
            report.add(subject, "directory", Status::Fail, e, Some("fix the directory's permissions".into()))
        }
    }
}

/// Each address `remix run` will listen on must be free. A warning, not a failure: what holds it
/// may be gone by the time the node starts.
fn check_listen_addresses(config: &Config, report: &mut Report) {
    let mut addresses: Vec<(&str, String)> = vec![(config.admin.listen.as_str(), "admin API".to_owned())];
    for source in &config.sources {
        if let Some(listen) = source.listen() {
            if !addresses.iter().any(|(a, _)| *a == listen) {
                addresses.push((listen, format!("source {}", source.name())));
            }
        }
    }
    for (address, subject) in addresses {
        match std::net::TcpListener::bind(address) {
            Ok(_) => report.ok(&subject, "listen", format!("{address} is free")),
            Err(e) => {
                let fix = Some(format!("stop what listens on {address}, or configure another address"));
                report.add(&subject, "listen", Status::Warn, format!("cannot listen on {address}: {e}"), fix);
            }
        }
    }
}

async fn check_reachable(subject: &str, url: &str, report: &mut Report) {
    let Some(address) = host_port(url) else {
        return report.add(subject, "reachable", Status::Fail, format!("no host in {url}"), None);
    };
    let connect = tokio::net::TcpStream::connect(&address);
    match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
        Ok(Ok(_)) => report.ok(subject, "reachable", format!("{address} accepts connections")),
        Ok(Err(e)) => {
            let fix =
                Some(format!("start the API at {url}, or fix the url (the target retries until it answers)"));
            report.add(subject, "reachable", Status::Fail, format!("cannot connect to {address}: {e}"), fix);
        }
        Err(_) => {
            let message = format!("no connection to {address} within {CONNECT_TIMEOUT_MS} ms");
            report.add(
                subject,
                "reachable",
                Status::Fail,
                message,
                Some("check the url and the firewall".into()),
            );
        }
    }
}

/// `host:port` of an http(s) URL, the port defaulting by scheme.
fn host_port(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults_the_port_by_scheme() {
        assert_eq!(host_port("http://api.example.com/x").as_deref(), Some("api.example.com:80"));
        assert_eq!(host_port("https://api.example.com/x").as_deref(), Some("api.example.com:443"));
        assert_eq!(host_port("http://127.0.0.1:8080/ingest").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host_port("not a url"), None);
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(dir.path()).is_ok());
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let error = writable(&dir.path().join("file/sub")).unwrap_err();
        assert!(error.starts_with("cannot create"), "{error}");
    }
}
