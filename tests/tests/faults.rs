//! Faults survived with nothing lost and nothing counted twice: each test streams page views
//! through the real binaries while one backend goes away, then checks the exact counts after
//! recovery. ClickHouse and PostgreSQL are away for 60 s while events keep streaming in; NATS
//! and Redis for 5 s. The machine's shared services are never stopped: NATS and Redis faults
//! use the test's own servers, ClickHouse and PostgreSQL faults a TCP proxy that is cut and
//! restored.

use std::{net::SocketAddr, time::Duration};

use zori_e2e::{
    delivery,
    faults::{NatsServer, Proxy, RedisServer},
    page_view, page_view_batches, session_id, visitor_id, Overrides, Stack, StackOptions,
    SITE_ORIGIN,
};

const VISITORS: usize = 20;
const ROUNDS: usize = 40;
const PAUSE: Duration = Duration::from_millis(100);

fn total() -> usize {
    VISITORS * ROUNDS
}

/// Streams `batches` in the background, `pause` apart, runs `fault` when about a quarter went
/// out, and returns the refusals the sender saw.
async fn stream_through<F, Fut>(
    stack: &Stack,
    batches: &[Vec<serde_json::Value>],
    pause: Duration,
    fault: F,
) -> Vec<(u16, Option<String>)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sender = stack.sender();
    let (head, tail) = batches.split_at(batches.len() / 4);
    let mut refusals = sender.stream(head, pause).await;
    let tail = tail.to_vec();
    let background = tokio::spawn(async move { sender.stream(&tail, pause).await });
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
    let refusals = stream_through(&stack, &batches, PAUSE, || async move {
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

/// How long ClickHouse or PostgreSQL is away.
const OUTAGE: Duration = Duration::from_secs(60);
/// Rounds of page views sent while a store is away: one every [`OUTAGE_PAUSE`], so events
/// stream in for the whole outage (the first quarter before it).
const OUTAGE_ROUNDS: usize = 100;
const OUTAGE_PAUSE: Duration = Duration::from_millis(700);

/// ClickHouse or PostgreSQL behind a proxy that is cut for [`OUTAGE`] while events stream in.
async fn store_outage(prefix: &str, target: SocketAddr, overrides: impl FnOnce(u16) -> Overrides) {
    let proxy = Proxy::start(target).await;
    let stack =
        Stack::start_overriding(prefix, StackOptions::default(), overrides(proxy.port)).await;
    let batches = page_view_batches(VISITORS, OUTAGE_ROUNDS);
    let proxy = &proxy;
    let started = std::time::Instant::now();
    let refusals = stream_through(&stack, &batches, OUTAGE_PAUSE, || async move {
        proxy.cut();
        tokio::time::sleep(OUTAGE).await;
        proxy.restore();
    })
    .await;
    // The sender was still sending when the store came back: events streamed in throughout.
    assert!(started.elapsed() > OUTAGE, "{:?}", started.elapsed());

    // Ingest does not depend on the stores: nothing was refused.
    assert_eq!(refusals, vec![]);
    stack
        .assert_page_views_exactly(VISITORS * OUTAGE_ROUNDS, VISITORS, Duration::from_secs(120))
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
async fn clickhouse_down_for_60s_while_events_stream_in_loses_nothing() {
    store_outage("fault_ch", "127.0.0.1:8123".parse().unwrap(), |port| {
        Overrides {
            clickhouse_url: Some(format!("http://127.0.0.1:{port}")),
            ..Overrides::default()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_for_60s_while_events_stream_in_loses_nothing() {
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
    let refusals = stream_through(&stack, &batches, PAUSE, || async move {
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

/// Tabs running the tracker, one visitor each.
const TABS: usize = 8;
/// Page views per tab, one every [`TAB_PACE`] (a batch of 20 fills in 0.8 s).
const TAB_EVENTS: usize = 150;
const TAB_PACE: Duration = Duration::from_millis(40);
/// How far NATS is from zori-ingest: each request waits this long for the stream's
/// acknowledgements after publishing, so at any moment most tabs have a request whose events
/// the stream already stored but whose answer has not come back.
const NATS_LATENCY: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread")]
async fn ingest_killed_with_requests_in_flight_counts_each_event_once() {
    let far_nats = Proxy::start_with_latency("127.0.0.1:4222".parse().unwrap(), NATS_LATENCY).await;
    let overrides = Overrides::default()
        .ingest_args(&["--nats-url", &format!("nats://127.0.0.1:{}", far_nats.port)]);
    let mut stack =
        Stack::start_overriding("fault_ingest", StackOptions::default(), overrides).await;
    let now = time::OffsetDateTime::now_utc();
    let mut tabs = Vec::new();
    for _ in 0..TABS {
        let (visitor, session) = (visitor_id(), session_id());
        let events = (0..TAB_EVENTS)
            .map(|i| {
                page_view(
                    &visitor,
                    &session,
                    &format!("{SITE_ORIGIN}/page/{i}"),
                    None,
                    now - time::Duration::seconds((TAB_EVENTS - i) as i64),
                )
            })
            .collect();
        let sender = stack.sender();
        tabs.push(tokio::spawn(delivery::deliver(
            sender,
            events,
            TAB_PACE,
            Duration::from_secs(120),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.stop_ingest();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start_ingest().await;
    let mut answers = Vec::new();
    for tab in tabs {
        answers.extend(tab.await.expect("tab task"));
    }
    assert!(
        answers.iter().any(|(status, _)| *status == 0),
        "the tabs saw the process die: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 0 || *status == 429 || *status >= 500),
        "only answers the tracker retries (none dropped a batch): {answers:?}"
    );
    stack
        .assert_page_views_exactly(TABS * TAB_EVENTS, TABS, Duration::from_secs(60))
        .await;
    // Requests killed after their events were stored were retried with the same ids: the
    // stream recognised them (the restarted process counts them), and nothing counted twice.
    let duplicates = stack
        .ingest_metric("zori_ingest_publish_duplicates_total")
        .await;
    assert!(duplicates.is_some_and(|n| n >= 1.0), "{duplicates:?}");
    stack.tenant.cleanup().await;
}
