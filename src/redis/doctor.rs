//! `remix doctor`'s checks of a redis_streams target: the server answers, has streams (5.0+), and
//! keeps what it acknowledges (`appendonly yes`, `appendfsync always`).

use super::config::RedisStreamsTarget;
use crate::connector::{Report, Status};
use crate::error_chain;
use std::time::Duration;

const CONNECT_TIMEOUT_MS: u64 = 3_000;

pub(super) async fn check(target: &RedisStreamsTarget, name: &str, report: &mut Report) {
    let subject = format!("target {name}");
    let connection = async {
        let client = redis::Client::open(target.url.as_str())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
            .set_response_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)));
        client.get_multiplexed_async_connection_with_config(&config).await
    };
    let mut connection = match connection.await {
        Ok(connection) => connection,
        Err(e) => {
            let fix = Some("start Redis or fix the url (the target retries until it answers)".into());
            return report.add(
                &subject,
                "reachable",
                Status::Fail,
                format!("cannot connect: {}", error_chain(&e)),
                fix,
            );
        }
    };
    let info: Result<String, _> = redis::cmd("INFO").arg("server").query_async(&mut connection).await;
    let version = info.ok().and_then(|info| {
        info.lines().find_map(|l| l.strip_prefix("redis_version:").map(|v| v.trim().to_owned()))
    });
    let major = version.as_deref().and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    match (&version, major) {
        (Some(v), Some(major)) if major >= 5 => report.ok(&subject, "version", format!("Redis {v}")),
        (Some(v), _) => report.add(
            &subject,
            "version",
            Status::Fail,
            format!("Redis {v} has no streams"),
            Some("use Redis 5.0 or newer".into()),
        ),
        (None, _) => {
            report.add(&subject, "version", Status::Warn, "INFO server did not say the version", None)
        }
    }
    let config: Result<Vec<String>, _> =
        redis::cmd("CONFIG").arg("GET").arg("append*").query_async(&mut connection).await;
    match config {
        Ok(pairs) => {
            let get =
                |key: &str| pairs.chunks(2).find(|p| p[0] == key).map(|p| p[1].clone()).unwrap_or_default();
            let (aof, fsync) = (get("appendonly"), get("appendfsync"));
            if aof == "yes" && fsync == "always" {
                report.ok(&subject, "durability", "appendonly yes, appendfsync always");
            } else {
                let message = format!(
                    "appendonly {aof}, appendfsync {fsync}: a Redis crash can lose entries it acknowledged, \
                     which Remix does not send again"
                );
                report.add(
                    &subject,
                    "durability",
                    Status::Warn,
                    message,
                    Some("set appendonly yes and appendfsync always".into()),
                );
            }
        }
        Err(e) => report.add(&subject, "durability", Status::Warn, format!("CONFIG GET refused: {e}"), None),
    }
}
