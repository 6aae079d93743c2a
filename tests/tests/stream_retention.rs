//! The tenant stream is a queue, not an archive: with work-queue retention (the default) a
//! stream whose byte limit is far smaller than everything sent keeps accepting while the
//! consumer keeps up; it refuses (503 + Retry-After) only when the consumer is stopped and the
//! buffer is full, and what it accepted then arrives exactly once when the consumer is back.

use std::time::Duration;

use async_nats::jetstream::{self, stream::RetentionPolicy};
use zori_e2e::{page_view_batches, Overrides, Stack, StackOptions, NATS_URL};

/// The smallest buffer zori-ingest accepts.
const BUFFER: i64 = 1 << 20;
const VISITORS: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn a_small_buffer_accepts_everything_while_the_consumer_keeps_up_and_refuses_when_full() {
    let overrides = Overrides::default()
        .stream_args(&["--stream-max-bytes", "1MiB"])
        // Rate limits are not what this test is about (it sends thousands of events from one IP).
        .ingest_args(&["--rate-limit-per-visitor", "0", "--rate-limit-per-ip", "0"]);
    let mut stack = Stack::start_overriding("retention", StackOptions::default(), overrides).await;
    let js = jetstream::new(async_nats::connect(NATS_URL).await.unwrap());
    let mut stream = js.get_stream(stack.tenant.stream()).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(info.config.max_bytes, BUFFER);

    // Phase 1: several times the buffer, at a pace the consumer keeps up with: each batch goes
    // out once less than half the buffer waits (on a busy CI machine the consumer is slower;
    // with limits retention the stream would never drain and this would time out).
    let batches = page_view_batches(VISITORS, 120);
    let sent: usize = batches.iter().map(Vec::len).sum();
    let mut bytes_in = 0u64;
    for batch in &batches {
        let waiting_since = std::time::Instant::now();
        loop {
            let bytes = stream.info().await.unwrap().state.bytes;
            bytes_in = bytes_in.max(bytes);
            if bytes < BUFFER as u64 / 2 {
                break;
            }
            assert!(
                waiting_since.elapsed() < Duration::from_secs(30),
                "the stream does not drain: {bytes} bytes wait"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let response = stack.send_batch(batch).await.expect("ingest answers");
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
    }
    let stored: u64 = {
        // What the stream took in overall: its last sequence (one message per event).
        stream.info().await.unwrap().state.last_sequence
    };
    assert_eq!(stored, sent as u64);
    let limit_gauge = stack.api_metric("zori_api_stream_max_bytes").await;
    assert_eq!(limit_gauge, Some(BUFFER as f64), "the fill gauge's limit");
    stack
        .assert_page_views_exactly(sent, VISITORS, Duration::from_secs(60))
        .await;
    let drained = stream.info().await.unwrap().state.clone();
    assert_eq!(drained.messages, 0, "acknowledged messages are removed");
    assert!(bytes_in < BUFFER as u64, "high-water mark {bytes_in}");

    // Phase 2: the consumer is down; the buffer fills and ingest refuses with Retry-After.
    stack.api.kill();
    let more = page_view_batches(VISITORS, 200);
    let mut accepted = 0usize;
    let mut refused_at = None;
    for (i, batch) in more.iter().enumerate() {
        let response = stack.send_batch(batch).await.expect("ingest answers");
        match response.status().as_u16() {
            200 => accepted += batch.len(),
            503 => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                assert_eq!(retry_after.as_deref(), Some("5"));
                let body = response.text().await.unwrap_or_default();
                assert!(body.contains("not accepted"), "{body}");
                refused_at = Some(i);
                break;
            }
            other => panic!(
                "unexpected {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    let refused_at = refused_at.expect("a full buffer refuses");
    let full = stream.info().await.unwrap().state.clone();
    assert!(
        full.bytes as i64 > BUFFER * 9 / 10,
        "refused at {} bytes",
        full.bytes
    );
    assert!(accepted > 0);
    assert_eq!(
        stack.api_metric("zori_api_stream_bytes").await,
        None,
        "the api is down"
    );
    // Phase 1 sent several times what the buffer holds.
    let message_size = full.bytes / full.messages;
    assert!(
        sent as u64 * message_size > 3 * BUFFER as u64,
        "{sent} events of ~{message_size} bytes"
    );

    // The consumer is back: the buffer drains, and the refused batches, sent again by the
    // client, are accepted; every event counts exactly once.
    stack.restart_api_hard().await;
    for batch in &more[refused_at..] {
        stack
            .send_batch_until_accepted(batch, Duration::from_secs(60))
            .await;
    }
    let total = sent + more.iter().map(Vec::len).sum::<usize>();
    stack
        .assert_page_views_exactly(total, 2 * VISITORS, Duration::from_secs(90))
        .await;
    assert_eq!(stream.info().await.unwrap().state.messages, 0);

    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retention_of_a_live_stream_is_never_changed() {
    let stack = Stack::start("retention_live").await;
    // The same tenant, asking for limits retention on the work-queue stream: refused at start
    // with a line that says why and what to do.
    let port = zori_e2e::free_port();
    let mut args = stack.tenant.ingest_args(port);
    args.extend(["--stream-retention".to_owned(), "limits".to_owned()]);
    let output = std::process::Command::new(zori_e2e::debug_binary("zori-ingest"))
        .args(&args)
        .output()
        .expect("zori-ingest runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "stream {} has workqueue retention but limits was asked for",
            stack.tenant.stream()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("NATS cannot change the retention"),
        "{stderr}"
    );
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_consumer_on_the_work_queue_is_refused_with_the_reason() {
    let stack = Stack::start("retention_one").await;
    // All replicas share one durable consumer; another name would be a second consumer of the
    // same messages, which a work queue refuses.
    let port = zori_e2e::free_port();
    let mut args = stack.tenant.api_args(port);
    args.extend(["--consumer-name".to_owned(), "another".to_owned()]);
    let output = std::process::Command::new(zori_e2e::debug_binary("zori-api"))
        .args(&args)
        .output()
        .expect("zori-api runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a workqueue stream gives each message to one consumer only"),
        "{stderr}"
    );
    assert!(stderr.contains("--consumer-name"), "{stderr}");
    stack.tenant.cleanup().await;
}
