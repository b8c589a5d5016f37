//! `remix doctor`'s check of an http target: its host accepts TCP connections.

use crate::connector::{Report, Status};
use std::time::Duration;

/// How long a TCP connection to an http target's host may take.
const CONNECT_TIMEOUT_MS: u64 = 3_000;

pub(super) async fn check_reachable(subject: &str, url: &str, report: &mut Report) {
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
}
