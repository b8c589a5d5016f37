//! `remix doctor` for the `object_store` target: the bucket (or container, or directory) is
//! reachable with the credentials in the environment, and a conditional put is honoured (a second
//! create of the same key is refused), which exactly once relies on.

use super::config::ObjectStoreTarget;
use super::store;
use crate::connector::{Report, Status};
use ::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures_util::StreamExt;

pub async fn check(config: &ObjectStoreTarget, subject: &str, report: &mut Report) {
    let place = match store::open(&config.url, config.endpoint.as_deref(), config.region.as_deref()) {
        Ok(place) => place,
        Err(e) => {
            let fix = "fix the url or endpoint".to_owned();
            return report.add(subject, "store", Status::Fail, e.to_string(), Some(fix));
        }
    };
    // Reachable, bucket present, credentials accepted: list one object under the prefix.
    let listed = place.store.list(Some(&place.prefix)).next().await;
    match listed {
        None | Some(Ok(_)) => report.ok(subject, "bucket", format!("{} is reachable and lists", config.url)),
        Some(Err(e)) => {
            let fix = match e {
                ::object_store::Error::NotFound { .. } => "create the bucket (or container)",
                ::object_store::Error::PermissionDenied { .. }
                | ::object_store::Error::Unauthenticated { .. } => {
                    "set the credentials in the environment (AWS_*, GOOGLE_*, AZURE_*)"
                }
                _ => "check the endpoint, the network and the credentials",
            };
            return report.add(
                subject,
                "bucket",
                Status::Fail,
                format!("{}: {e}", config.url),
                Some(fix.into()),
            );
        }
    }
    let probe =
        place.path(&["_remix", "doctor", &format!("probe-{}-{}", std::process::id(), crate::time::now_ms())]);
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    let first = place.store.put_opts(&probe, PutPayload::from_static(b"probe"), create()).await;
    if let Err(e) = first {
        let fix = "grant the credentials write access to the prefix".to_owned();
        return report.add(
            subject,
            "conditional put",
            Status::Fail,
            format!("cannot write {probe}: {e}"),
            Some(fix),
        );
    }
    let second = place.store.put_opts(&probe, PutPayload::from_static(b"again"), create()).await;
    let _ = place.store.delete(&probe).await;
    match second {
        Err(::object_store::Error::AlreadyExists { .. } | ::object_store::Error::Precondition { .. }) => {
            report.ok(subject, "conditional put", "a second create of the same key is refused")
        }
        Ok(_) => report.add(
            subject,
            "conditional put",
            Status::Warn,
            "the store overwrote an object on a create-only put: exactly once then rests on shards \
             being rebuilt with the same bytes (see README)",
            None,
        ),
        Err(e) => report.add(
            subject,
            "conditional put",
            Status::Fail,
            format!("a create-only put failed: {e}"),
            Some("use a store that supports If-None-Match (S3, MinIO, SeaweedFS, R2, Azure, GCS)".into()),
        ),
    }
}
