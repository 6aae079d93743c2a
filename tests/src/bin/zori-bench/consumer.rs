//! Consumer throughput: `zori-api` draining a stream into ClickHouse and PostgreSQL, beside a
//! bare batched RowBinary insert of the same rows into a table of the same schema.

use std::time::{Duration, Instant};

use async_nats::{jetstream, HeaderMap};
use clickhouse::Row;
use futures::StreamExt;
use serde::Deserialize;
use time::OffsetDateTime;
use zori_api::ch::EventRow;
use zori_core::{
    enrich::{enrich_event, EnrichContext, EnrichSettings},
    event::{RawEvent, StreamMessage, Subjects, TrackedEvent},
};
use zori_e2e::{free_port, Process, Tenant, CLICKHOUSE_URL, NATS_URL, SITE_ORIGIN};
use zori_service::{
    clickhouse::Topology,
    jetstream::{desired_config, ensure_stream, StreamLimits},
};

use crate::{ingest::tracker_event, Record};

const EVENTS: usize = 200_000;
const VISITORS: usize = 20_000;
/// The consumer's default batch size, used for the bare insert too.
const BATCH: usize = 5_000;

#[derive(Row, Deserialize)]
struct Count {
    n: u64,
}

/// Realistic enriched events, as ingest would publish them.
pub fn tracked_events(count: usize, visitors: usize, span: time::Duration) -> Vec<TrackedEvent> {
    let settings = EnrichSettings {
        allowed_hosts: vec!["shop.example".to_owned()],
        max_past_skew: Duration::from_secs(40 * 24 * 3600),
        max_future_skew: Duration::from_secs(300),
        email_salt: "bench-salt-0123456789".to_owned(),
    };
    let now = OffsetDateTime::now_utc();
    let ip = "81.2.69.160".parse().ok();
    (0..count)
        .map(|i| {
            let mut raw: RawEvent = serde_json::from_value(tracker_event(i % visitors)).unwrap();
            let at = now - span * ((i % 997) as f64 / 997.0);
            raw.client_timestamp_utc = Some(
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
            );
            raw.page_url = Some(format!("{SITE_ORIGIN}/page/{}", i % 50));
            let ctx = EnrichContext {
                received_at: now,
                client_ip: ip,
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
                settings: &settings,
            };
            enrich_event(raw, &ctx).expect("bench event is valid")
        })
        .collect()
}

/// Publishes `events` to the tenant's ingress subject, pipelined, with `Nats-Msg-Id`.
pub async fn publish_all(js: &jetstream::Context, tenant: &Tenant, events: &[TrackedEvent]) {
    let subject = Subjects::for_tenant(&tenant.id).ingress;
    for chunk in events.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for event in chunk {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.as_str());
            let body = serde_json::to_vec(&StreamMessage::Event(event.clone())).unwrap();
            acks.push(
                js.publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("ack");
        }
    }
}

pub async fn create_stream(js: &jetstream::Context, tenant: &Tenant) {
    ensure_stream(js, stream_config(tenant))
        .await
        .expect("create stream");
}

/// The tenant stream as the operator makes it (work-queue retention), 8 GiB.
fn stream_config(tenant: &Tenant) -> jetstream::stream::Config {
    let subjects = Subjects::for_tenant(&tenant.id);
    let limits = StreamLimits {
        max_bytes: 8 << 30,
        ..StreamLimits::default()
    };
    desired_config(&subjects.stream, vec![subjects.wildcard], &limits)
}

/// How one drain by `zori-api` went.
struct Drain {
    /// From process start until every message was acknowledged (so both stores have it).
    elapsed: Duration,
    /// From process start until `/readyz` answered (migrations, connections, consumer setup).
    start: Duration,
}

/// Publishes the events to a fresh tenant, then times a release `zori-api` with `api_args`
/// draining them into both stores.
async fn drain(
    js: &jetstream::Context,
    events: &[TrackedEvent],
    api_args: &[&str],
) -> (Drain, Tenant) {
    let mut tenant = Tenant::new("benchc");
    tenant.overrides.api_args = api_args.iter().map(|a| a.to_string()).collect();
    create_stream(js, &tenant).await;
    publish_all(js, &tenant, events).await;

    let port = free_port();
    let started = Instant::now();
    let api =
        Process::start_profile("zori-api", crate::profile(), port, &tenant.api_args(port)).await;
    let start = started.elapsed();
    let stream = js.get_stream(tenant.stream()).await.expect("stream");
    caught_up(&stream, "zori-api", Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    drop(api);

    let ch = clickhouse::Client::default()
        .with_url(CLICKHOUSE_URL)
        .with_compression(clickhouse::Compression::None)
        .with_database(tenant.schema());
    assert_eq!(
        distinct_events(&ch).await,
        events.len() as u64,
        "every event once in ClickHouse"
    );
    let pool = sqlx::PgPool::connect(zori_e2e::POSTGRES_URL)
        .await
        .expect("PostgreSQL is up");
    let visitors: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.visitors",
        tenant.schema()
    ))
    .fetch_one(&pool)
    .await
    .expect("count visitors");
    assert_eq!(visitors, VISITORS as i64, "every visitor in PostgreSQL");
    (Drain { elapsed, start }, tenant)
}

/// The raw limit of the stream side: a pull consumer fetching batches of [`BATCH`] and acking
/// every message, nothing else.
async fn bare_fetch_ack(
    nats: &async_nats::Client,
    js: &jetstream::Context,
    events: &[TrackedEvent],
) -> Duration {
    let tenant = Tenant::new("benchf");
    create_stream(js, &tenant).await;
    publish_all(js, &tenant, events).await;
    let stream = js.get_stream(tenant.stream()).await.expect("stream");
    let started = Instant::now();
    let consumer = bare_consumer(&stream, Acks::Each).await;
    let mut seen = 0;
    while seen < events.len() {
        for message in fetch_batch(&consumer).await {
            message.ack().await.expect("ack");
            seen += 1;
        }
    }
    nats.flush().await.expect("flush acks");
    let elapsed = started.elapsed();
    tenant.cleanup().await;
    elapsed
}

/// How the bare pipeline acknowledges.
#[derive(Clone, Copy, PartialEq)]
enum Acks {
    /// Every message (`AckPolicy::Explicit`), as `zori-api` does.
    Each,
    /// The last message of each batch, batches acknowledged in stream order (`AckPolicy::All`).
    Cumulative,
}

/// The raw limit of any consumer of this stream on this machine: fetch batches of [`BATCH`],
/// decode each message (`zori_api::wire`), insert the batch's rows into a fresh `events` table
/// over RowBinary, then acknowledge; up to three batches written while the next is fetched, as
/// `zori-api` does by default. No PostgreSQL, no rollups, no retries.
async fn bare_pipeline(
    nats: &async_nats::Client,
    js: &jetstream::Context,
    events: &[TrackedEvent],
    acks: Acks,
) -> (Duration, Tenant) {
    let (tenant, ch) = bare_database("benchp").await;
    let mut config = stream_config(&tenant);
    if acks == Acks::Cumulative {
        // A work-queue stream refuses any ack policy but explicit (JetStream error 10098);
        // interest retention also removes what every consumer acknowledged.
        config.retention = jetstream::stream::RetentionPolicy::Interest;
    }
    ensure_stream(js, config).await.expect("create stream");
    let stream = js.get_stream(tenant.stream()).await.expect("stream");
    // The consumer first: an interest stream drops what no consumer is interested in.
    let consumer = bare_consumer(&stream, acks).await;
    publish_all(js, &tenant, events).await;
    let started = Instant::now();
    // Oldest first, so cumulative acks never cover a batch still being written.
    let mut in_flight = std::collections::VecDeque::new();
    let mut seen = 0;
    while seen < events.len() {
        let messages = fetch_batch(&consumer).await;
        seen += messages.len();
        if in_flight.len() >= 3 {
            if let Some(oldest) = in_flight.pop_front() {
                ack_bare(oldest, acks).await;
            }
        }
        let ch = ch.clone();
        in_flight.push_back(tokio::spawn(async move {
            let mut insert = ch.insert::<EventRow>("events").expect("insert");
            for message in &messages {
                match zori_api::wire::stream_message(&message.payload).expect("decode") {
                    StreamMessage::Event(event) => insert
                        .write(&EventRow::from_event(&event))
                        .await
                        .expect("write row"),
                    StreamMessage::Identify(_) => unreachable!("the bench publishes events"),
                }
            }
            insert.end().await.expect("end insert");
            messages
        }));
    }
    for batch in in_flight {
        ack_bare(batch, acks).await;
    }
    nats.flush().await.expect("flush acks");
    let elapsed = started.elapsed();
    assert_eq!(
        distinct_events(&ch).await,
        events.len() as u64,
        "every event once in the bare pipeline"
    );
    // The server applies acks after it received them: wait for it (outside the timing).
    caught_up(&stream, "bare", Duration::from_secs(10)).await;
    (elapsed, tenant)
}

/// Waits until the durable `consumer` has nothing left to deliver and nothing unacknowledged;
/// panics after `limit`.
pub async fn caught_up(stream: &jetstream::stream::Stream, consumer: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let mut handle: jetstream::consumer::PullConsumer =
            stream.get_consumer(consumer).await.expect("consumer");
        let info = handle.info().await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "consumer {consumer} did not catch up within {limit:?}: {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Distinct event ids in the database's `events`.
async fn distinct_events(ch: &clickhouse::Client) -> u64 {
    ch.query("SELECT uniqExact(event_id) AS n FROM events")
        .fetch_one::<Count>()
        .await
        .expect("count events")
        .n
}

/// The durable pull consumer of the bare runs.
async fn bare_consumer(
    stream: &jetstream::stream::Stream,
    acks: Acks,
) -> jetstream::consumer::PullConsumer {
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bare".to_owned()),
            ack_policy: match acks {
                Acks::Each => jetstream::consumer::AckPolicy::Explicit,
                Acks::Cumulative => jetstream::consumer::AckPolicy::All,
            },
            max_ack_pending: (BATCH * 8) as i64,
            ..Default::default()
        })
        .await
        .expect("create consumer")
}

/// Up to [`BATCH`] messages, waiting at most a second.
async fn fetch_batch(consumer: &jetstream::consumer::PullConsumer) -> Vec<jetstream::Message> {
    let mut fetched = consumer
        .batch()
        .max_messages(BATCH)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch");
    let mut messages = Vec::with_capacity(BATCH);
    while let Some(message) = fetched.next().await {
        messages.push(message.expect("message"));
    }
    messages
}

/// Waits for a bare pipeline batch to be inserted, then acknowledges it.
async fn ack_bare(batch: tokio::task::JoinHandle<Vec<jetstream::Message>>, acks: Acks) {
    let messages = batch.await.expect("bare insert task");
    match acks {
        Acks::Each => {
            for message in &messages {
                message.ack().await.expect("ack");
            }
        }
        Acks::Cumulative => {
            if let Some(last) = messages.last() {
                last.ack().await.expect("ack");
            }
        }
    }
}

/// A fresh database holding only the consumer's `events` table (no rollup views).
async fn bare_database(prefix: &str) -> (Tenant, clickhouse::Client) {
    let tenant = Tenant::new(prefix);
    let ch = clickhouse::Client::default()
        .with_url(CLICKHOUSE_URL)
        .with_compression(clickhouse::Compression::None);
    let schema = zori_api::ch::schema_statements(&Topology::Single, &tenant.schema())
        .expect("schema statements of one server");
    ch.query(&format!("CREATE DATABASE {}", tenant.schema()))
        .execute()
        .await
        .expect("create bench database");
    let ch = ch.with_database(tenant.schema());
    for statement in schema {
        ch.query(&statement).execute().await.expect("create events");
    }
    (tenant, ch)
}

/// The reference: the same rows inserted with the `clickhouse` crate over HTTP RowBinary,
/// [`BATCH`] rows per insert, into a table of the consumer's own `events` schema in a fresh
/// database. Run first, on a ClickHouse not yet busy merging the drains' parts, and again
/// last; the database is dropped by the caller after every timed run.
async fn bare_insert(events: &[TrackedEvent]) -> (Duration, Tenant) {
    let (tenant, ch) = bare_database("benchb").await;
    let rows: Vec<EventRow> = events.iter().map(EventRow::from_event).collect();
    let started = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let mut insert = ch.insert::<EventRow>("events").expect("insert");
        for row in chunk {
            insert.write(row).await.expect("write row");
        }
        insert.end().await.expect("end insert");
    }
    (started.elapsed(), tenant)
}

pub async fn run(record: &mut Record) {
    let nats = async_nats::connect(NATS_URL).await.expect("NATS is up");
    let js = jetstream::new(nats.clone());
    let events = tracked_events(EVENTS, VISITORS, time::Duration::days(20));

    // No database is dropped until every run is timed: on a filesystem without a journal (this
    // machine's ext4), creating a file right after many were deleted scans the deleted inodes
    // for minutes, and ClickHouse creates some 200 files per insert (docs/benchmarks.md).
    let (bare, bare_tenant) = bare_insert(&events).await;
    let fetch_ack = bare_fetch_ack(&nats, &js, &events).await;
    let (pipeline, pipeline_tenant) = bare_pipeline(&nats, &js, &events, Acks::Each).await;
    let (cumulative, cumulative_tenant) =
        bare_pipeline(&nats, &js, &events, Acks::Cumulative).await;
    let (one, one_tenant) = drain(&js, &events, &["--batches-in-flight", "1"]).await;
    let (three, three_tenant) = drain(&js, &events, &["--batches-in-flight", "3"]).await;
    let (bare_after, bare_after_tenant) = bare_insert(&events).await;
    let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64();
    record.line(&format!(
        "| run ({EVENTS} events, {VISITORS} visitors) | rows/s | ratio to bare | start s | total s |"
    ));
    record.line("|---|---:|---:|---:|---:|");
    let bare_runs = [
        (format!("bare RowBinary insert, batches of {BATCH}"), bare),
        (
            format!("bare JetStream fetch + ack, batches of {BATCH}"),
            fetch_ack,
        ),
        (
            "bare pipeline: fetch, decode, insert, ack, 3 batches in flight (no PostgreSQL, no rollups)"
                .to_owned(),
            pipeline,
        ),
        (
            "the same, acknowledging each batch's last message (`AckPolicy::All`, interest stream)"
                .to_owned(),
            cumulative,
        ),
        (
            "bare RowBinary insert again, after the drains (not the reference)".to_owned(),
            bare_after,
        ),
    ];
    for (run, took) in bare_runs {
        record.line(&format!(
            "| {run} | {:.0} | {:.2} | – | {:.2} |",
            rate(took),
            rate(took) / rate(bare),
            took.as_secs_f64()
        ));
    }
    for (in_flight, drain) in [(1, &one), (3, &three)] {
        record.line(&format!(
            "| zori-api, {in_flight} batch(es) in flight (both stores, from process start) | {:.0} | {:.2} | {:.2} | {:.2} |",
            rate(drain.elapsed),
            rate(drain.elapsed) / rate(bare),
            drain.start.as_secs_f64(),
            drain.elapsed.as_secs_f64(),
        ));
    }
    let tenants = [
        bare_tenant,
        pipeline_tenant,
        cumulative_tenant,
        one_tenant,
        three_tenant,
        bare_after_tenant,
    ];
    if std::env::var_os("ZORI_BENCH_KEEP").is_some() {
        // For runs back to back: dropping databases is what slows the next run's file
        // creation. The streams go (a few files each): JetStream reserves each one's byte
        // limit, so kept streams would soon refuse the next run's.
        for tenant in &tenants {
            let _ = js.delete_stream(tenant.stream()).await;
        }
        let kept: Vec<String> = tenants.iter().map(Tenant::schema).collect();
        record.line(&format!("Kept (ZORI_BENCH_KEEP): {}.", kept.join(", ")));
    } else {
        for tenant in tenants {
            tenant.cleanup().await;
        }
    }
}
