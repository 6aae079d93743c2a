//! Faults survived with nothing lost and nothing counted twice: each test streams page views
//! through the real binaries while one backend goes away for a few seconds (10 s at most, so CI
//! stays fast), then checks the exact counts after recovery. The machine's shared services are
//! never stopped: NATS and Redis faults use the test's own servers, ClickHouse and PostgreSQL
//! faults a TCP proxy that is cut and restored.

use std::{net::SocketAddr, time::Duration};

use zori_e2e::{
    faults::{NatsServer, Proxy, RedisServer},
    page_view_batches, Overrides, Stack, StackOptions,
};

const VISITORS: usize = 20;
const ROUNDS: usize = 40;
const PAUSE: Duration = Duration::from_millis(100);

fn total() -> usize {
    VISITORS * ROUNDS
}

/// Streams [`ROUNDS`] batches in the background, runs `fault` when about a quarter went out,
/// and returns the refusals the sender saw.
async fn stream_through<F, Fut>(
    stack: &Stack,
    batches: &[Vec<serde_json::Value>],
    fault: F,
) -> Vec<(u16, Option<String>)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sender = stack.sender();
    let (head, tail) = batches.split_at(batches.len() / 4);
    let mut refusals = sender.stream(head, PAUSE).await;
    let tail = tail.to_vec();
    let background = tokio::spawn(async move { sender.stream(&tail, PAUSE).await });
    fault().await;
    refusals.extend(background.await.expect("sender task"));
    refusals
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_restarted_mid_stream_loses_nothing() {
    let mut nats = NatsServer::start().await;
    let overrides = Overrides {
        nats_url: Some(nats.url()),
        ..Overrides::default()
    };
    let stack = Stack::start_overriding("fault_nats", StackOptions::default(), overrides).await;
    let batches = page_view_batches(VISITORS, ROUNDS);

    let nats = &mut nats;
    let refusals = stream_through(&stack, &batches, || async move {
        nats.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        nats.restart().await;
    })
    .await;

    // While NATS was down, ingest answered 503 with Retry-After (and the sender retried).
    assert!(
        refusals
            .iter()
            .any(|(status, retry)| *status == 503 && retry.as_deref() == Some("5")),
        "{refusals:?}"
    );
    stack
        .assert_page_views_exactly(total(), VISITORS, Duration::from_secs(90))
        .await;
    stack.tenant.cleanup().await;
}

/// ClickHouse or PostgreSQL behind a proxy that is cut for 10 s while events stream in.
async fn store_outage(prefix: &str, target: SocketAddr, overrides: impl FnOnce(u16) -> Overrides) {
    let proxy = Proxy::start(target).await;
    let stack =
        Stack::start_overriding(prefix, StackOptions::default(), overrides(proxy.port)).await;
    let batches = page_view_batches(VISITORS, ROUNDS);
    let proxy = &proxy;
    let refusals = stream_through(&stack, &batches, || async move {
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(10)).await;
        proxy.restore();
    })
    .await;

    // Ingest does not depend on the stores: nothing was refused.
    assert_eq!(refusals, vec![]);
    stack
        .assert_page_views_exactly(total(), VISITORS, Duration::from_secs(90))
        .await;
    // The outage was seen by the consumer: batches failed and were held, not dead-lettered.
    let failures = stack.api_metric("zori_api_batch_failures_total").await;
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
    assert_eq!(
        stack.api_metric("zori_api_dead_letters_total").await,
        Some(0.0)
    );
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_unavailable_while_events_stream_in_loses_nothing() {
    store_outage("fault_ch", "127.0.0.1:8123".parse().unwrap(), |port| {
        Overrides {
            clickhouse_url: Some(format!("http://127.0.0.1:{port}")),
            ..Overrides::default()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_unavailable_while_events_stream_in_loses_nothing() {
    store_outage("fault_pg", "127.0.0.1:5432".parse().unwrap(), |port| {
        Overrides {
            postgres_url: Some(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            ..Overrides::default()
        }
    })
    .await;
}

/// Redis stopped for 5 s mid-stream; returns what the sender saw.
async fn redis_outage(prefix: &str, failure_mode: &str) -> (Stack, Vec<(u16, Option<String>)>) {
    let mut redis = RedisServer::start().await;
    let overrides = Overrides {
        redis_url: Some(redis.url()),
        ..Overrides::default()
    }
    .ingest_args(&["--rate-limit-failure-mode", failure_mode]);
    let stack = Stack::start_overriding(prefix, StackOptions::default(), overrides).await;
    let batches = page_view_batches(VISITORS, ROUNDS);
    let redis = &mut redis;
    let refusals = stream_through(&stack, &batches, || async move {
        redis.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        redis.restart().await;
    })
    .await;
    stack
        .assert_page_views_exactly(total(), VISITORS, Duration::from_secs(60))
        .await;
    (stack, refusals)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_fails_open_by_default_and_loses_nothing() {
    let (stack, refusals) = redis_outage("fault_redis_open", "open").await;
    assert_eq!(refusals, vec![], "failing open refuses nothing");
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_failing_closed_answers_503_and_loses_nothing() {
    let (stack, refusals) = redis_outage("fault_redis_closed", "closed").await;
    assert!(
        !refusals.is_empty(),
        "failing closed refuses while Redis is down"
    );
    assert!(
        refusals
            .iter()
            .all(|(status, retry)| *status == 503 && retry.as_deref() == Some("5")),
        "{refusals:?}"
    );
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_killed_with_requests_in_flight_counts_each_event_once() {
    let mut stack = Stack::start("fault_ingest").await;
    // Four clients at once, so requests are in flight when the process dies.
    let clients: Vec<Vec<Vec<serde_json::Value>>> = (0..4)
        .map(|_| page_view_batches(VISITORS / 4, ROUNDS))
        .collect();
    let mut tasks = Vec::new();
    for batches in clients {
        let sender = stack.sender();
        tasks.push(tokio::spawn(
            async move { sender.stream(&batches, PAUSE).await },
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.stop_ingest();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start_ingest().await;
    let mut refusals = Vec::new();
    for task in tasks {
        refusals.extend(task.await.expect("sender task"));
    }
    assert!(
        refusals.iter().any(|(status, _)| *status == 0),
        "the clients saw the process die: {refusals:?}"
    );
    stack
        .assert_page_views_exactly(total(), VISITORS, Duration::from_secs(60))
        .await;
    stack.tenant.cleanup().await;
}
