//! `remix doctor`'s checks of the node's own resources: the data directory (writable; whether a node
//! holds it) and the listen addresses (free, unless the node holding the data directory serves them).
//! Each connector checks the systems it names (see [`crate::connector::SourceSpec::doctor`]).

use crate::config::Config;
use crate::connector::{doctor::writable, Report, Status};

pub(super) async fn check(config: &Config, report: &mut Report) {
    let subject = "data directory";
    if let Err(e) = writable(&config.data_dir) {
        let fix =
            format!("create {} and give the user running remix write access", config.data_dir.display());
        report.add(subject, "writable", Status::Fail, e.0, Some(fix));
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
}

/// Each address `remix run` will listen on must be free. A warning, not a failure: what holds it
/// may be gone by the time the node starts.
fn check_listen_addresses(config: &Config, report: &mut Report) {
    let mut addresses: Vec<(String, String)> = vec![(config.admin.listen.clone(), "admin API".to_owned())];
    for source in &config.sources {
        if let Some(listen) = source.listen() {
            if !addresses.iter().any(|(a, _)| *a == listen) {
                addresses.push((listen, format!("source {}", source.name())));
            }
        }
    }
    for (address, subject) in addresses {
        match std::net::TcpListener::bind(&address) {
            Ok(_) => report.ok(&subject, "listen", format!("{address} is free")),
            Err(e) => {
                let fix = Some(format!("stop what listens on {address}, or configure another address"));
                report.add(&subject, "listen", Status::Warn, format!("cannot listen on {address}: {e}"), fix);
            }
        }
    }
}
