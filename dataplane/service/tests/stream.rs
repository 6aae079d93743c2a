//! `ensure_stream` against the machine's real NATS JetStream (127.0.0.1:4222).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream::RetentionPolicy};
use zori_service::jetstream::{
    connect, desired_config, ensure_stream, ensure_tenant_stream, JetStreamError, StreamLimits,
    StreamOutcome, StreamRetention,
};

const NATS_URL: &str = "nats://127.0.0.1:4222";

fn unique_stream(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ZORI_{prefix}_{}_{nanos}", std::process::id())
}

#[tokio::test]
async fn a_live_streams_retention_is_never_changed_silently() {
    let client = connect(NATS_URL, "zori-service-test").await.unwrap();
    let js = jetstream::new(client);
    let name = unique_stream("RETENTION");
    let subjects = vec![format!("{}.>", name.to_ascii_lowercase())];
    let work_queue = StreamLimits::default();

    let created = ensure_stream(&js, desired_config(&name, subjects.clone(), &work_queue)).await;
    assert_eq!(created.unwrap(), StreamOutcome::Created);
    let mut stream = js.get_stream(&name).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.retention,
        RetentionPolicy::WorkQueue
    );
    let again = ensure_stream(&js, desired_config(&name, subjects.clone(), &work_queue)).await;
    assert_eq!(again.unwrap(), StreamOutcome::Unchanged);

    // The buffer may grow or shrink on a live stream.
    let bigger = StreamLimits {
        max_bytes: 2 << 30,
        ..work_queue.clone()
    };
    let updated = ensure_stream(&js, desired_config(&name, subjects.clone(), &bigger)).await;
    assert_eq!(updated.unwrap(), StreamOutcome::Updated(vec!["max_bytes"]));

    // The retention may not: a clear error, and the stream stays as it was.
    let limits = StreamLimits {
        retention: Some(StreamRetention::Limits),
        ..bigger
    };
    let refused = ensure_tenant_stream(&js, &name, subjects, &limits)
        .await
        .expect_err("retention change refused");
    assert!(
        matches!(
            &refused,
            JetStreamError::RetentionChange {
                live: "workqueue",
                desired: "limits",
                ..
            }
        ),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.starts_with(&format!(
            "stream {name} has workqueue retention but limits was asked for"
        )),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(info.config.max_bytes, 2 << 30);

    js.delete_stream(&name).await.unwrap();
}

/// An upgrade never stops a tenant: a stream created with limits retention (the default before
/// work-queue) keeps it when no retention is asked for, and its other limits are still managed.
#[tokio::test]
async fn a_live_limits_stream_is_kept_when_no_retention_is_asked_for() {
    let client = connect(NATS_URL, "zori-service-test").await.unwrap();
    let js = jetstream::new(client);
    let name = unique_stream("UPGRADE");
    let subjects = vec![format!("{}.>", name.to_ascii_lowercase())];
    let old = StreamLimits {
        retention: Some(StreamRetention::Limits),
        ..StreamLimits::default()
    };
    let created = ensure_tenant_stream(&js, &name, subjects.clone(), &old).await;
    assert_eq!(created.unwrap(), StreamOutcome::Created);

    let unset = StreamLimits {
        max_bytes: 2 << 30,
        ..StreamLimits::default()
    };
    assert_eq!(unset.retention, None);
    let kept = ensure_tenant_stream(&js, &name, subjects.clone(), &unset).await;
    assert_eq!(kept.unwrap(), StreamOutcome::Updated(vec!["max_bytes"]));
    let info = js
        .get_stream(&name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.retention, RetentionPolicy::Limits);
    assert_eq!(info.config.max_bytes, 2 << 30);

    // Asked for explicitly, the other retention is refused.
    let explicit = StreamLimits {
        retention: Some(StreamRetention::WorkQueue),
        ..unset
    };
    let refused = ensure_tenant_stream(&js, &name, subjects, &explicit).await;
    assert!(
        matches!(refused, Err(JetStreamError::RetentionChange { .. })),
        "{refused:?}"
    );
    js.delete_stream(&name).await.unwrap();
}
