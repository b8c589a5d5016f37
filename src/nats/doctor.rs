//! `remix doctor`'s checks of a nats target: a server answers, JetStream is enabled, and the
//! stream (if it exists already) takes the target's subjects.

use super::config::NatsTarget;
use crate::connector::{Report, Status};
use crate::error_chain;
use std::time::Duration;

const CONNECT_TIMEOUT_MS: u64 = 3_000;

pub(super) async fn check(target: &NatsTarget, name: &str, report: &mut Report) {
    let subject = format!("target {name}");
    let addresses: Vec<async_nats::ServerAddr> =
        target.servers.iter().filter_map(|s| s.parse().ok()).collect();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .request_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
        .connect(addresses)
        .await;
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            let fix = Some("start NATS or fix servers (the target retries until it answers)".into());
            return report.add(
                &subject,
                "reachable",
                Status::Fail,
                format!("cannot connect: {}", error_chain(&e)),
                fix,
            );
        }
    };
    report.ok(&subject, "reachable", format!("connected to {}", target.servers.join(", ")));
    let context = async_nats::jetstream::new(client);
    if let Err(e) = context.query_account().await {
        let fix = Some("run nats-server with JetStream enabled (-js)".into());
        return report.add(
            &subject,
            "jetstream",
            Status::Fail,
            format!("JetStream does not answer: {}", error_chain(&e)),
            fix,
        );
    }
    match context.get_stream(&target.stream).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) if info.config.subjects.contains(&target.stream_subject()) => report.ok(
                &subject,
                "stream",
                format!("stream {} takes {}", target.stream, target.stream_subject()),
            ),
            Ok(info) => report.add(
                &subject,
                "stream",
                Status::Fail,
                format!(
                    "stream {} takes {:?}, not {}",
                    target.stream,
                    info.config.subjects,
                    target.stream_subject()
                ),
                Some("use another stream name, or the subject the stream takes".into()),
            ),
            Err(e) => report.add(
                &subject,
                "stream",
                Status::Warn,
                format!("stream info: {}", error_chain(&e)),
                None,
            ),
        },
        Err(_) => report.ok(&subject, "stream", format!("stream {} will be created at start", target.stream)),
    }
}
