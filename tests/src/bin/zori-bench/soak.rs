//! Soak: the whole data plane at 80 % of its measured maximum for ten minutes.
//!
//! 1. A release `zori-ingest` and `zori-api` start for a fresh tenant with the default stream
//!    limits (the work-queue buffer a deployment gets).
//! 2. **Maximum**: for [`PROBE`] the load generator sends tracker batches (`POST /batch`, 20
//!    events) as fast as ingest answers, with the consumer draining at the same time, then waits
//!    until the consumer caught up. The maximum is the lower of the two rates: ingest's accepted
//!    events/s, and the events the consumer acknowledged during the probe per second (its rate
//!    with ingest running flat out beside it: on this machine both binaries share two cores,
//!    and a rate the consumer cannot follow would only fill the buffer). The first version
//!    counted until the consumer caught up after the probe, when it had the machine to itself;
//!    that overstated it by about half and the soak's backlog grew until ingest refused.
//! 3. **Soak**: `ZORI_SOAK_SECONDS` (default 600) at 80 % of that maximum, paced (a request
//!    every `20 / rate` seconds, spread over workers), while `VmRSS` of both processes is read
//!    from `/proc/<pid>/status` every [`SAMPLE`].
//! 4. **Check**: no answer other than 200 (no 429, 503 or connection error); memory flat: the
//!    highest RSS of the last tenth of the run at most 10 % + 16 MiB above the highest of the
//!    second tenth (minute 2 of 10; the first tenth is warm-up: pools, caches, allocator
//!    arenas); after the consumer caught up, every accepted event exactly once in ClickHouse
//!    (`uniqExact(event_id)`, as the reports count; `count()` is shown beside it: a batch
//!    retried after a failed write leaves rows that merges collapse) and every visitor in
//!    PostgreSQL.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use clickhouse::Row;
use serde::Deserialize;
use serde_json::{json, Value};
use zori_e2e::{free_port, Process, Tenant, CLICKHOUSE_URL, NATS_URL, POSTGRES_URL};

use crate::{ingest::tracker_event, Record};

/// Length of the maximum probe.
const PROBE: Duration = Duration::from_secs(20);
/// Events per request, as the tracker batches them.
const EVENTS_PER_REQUEST: usize = 20;
/// Concurrent requests of the probe (as `zori-bench ingest`).
const PROBE_WORKERS: usize = 32;
/// Workers of the paced load: enough that a slow answer never holds the pace back.
const SOAK_WORKERS: usize = 64;
/// Distinct visitors the events belong to.
const VISITORS: usize = 200_000;
/// How often memory is sampled.
const SAMPLE: Duration = Duration::from_secs(5);
/// Share of the maximum the soak runs at.
const LOAD: f64 = 0.8;

#[derive(Row, Deserialize)]
struct Counts {
    unique: u64,
    rows: u64,
}

/// Answers of the load generator.
#[derive(Default)]
struct Answers {
    accepted_events: AtomicU64,
    requests: AtomicU64,
    /// `(status or 0 for a connection error, body)` of every answer other than 200.
    errors: Mutex<Vec<(u16, String)>>,
    /// Visitors of accepted events.
    visitors: Mutex<HashSet<usize>>,
}

struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
    answers: Answers,
    next_event: AtomicUsize,
}

impl Client {
    /// Sends one batch of new events; records the answer.
    async fn send(&self) {
        let first = self
            .next_event
            .fetch_add(EVENTS_PER_REQUEST, Ordering::Relaxed);
        let visitors: Vec<usize> = (first..first + EVENTS_PER_REQUEST)
            .map(|n| n % VISITORS)
            .collect();
        let events: Vec<Value> = visitors.iter().map(|v| tracker_event(*v)).collect();
        let answer = self
            .http
            .post(&self.url)
            .header("X-Zori-PT", &self.key)
            .json(&json!({ "events": events }))
            .send()
            .await;
        self.answers.requests.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(response) if response.status() == 200 => {
                self.answers
                    .accepted_events
                    .fetch_add(EVENTS_PER_REQUEST as u64, Ordering::Relaxed);
                lock(&self.answers.visitors).extend(visitors);
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                lock(&self.answers.errors).push((status, body));
            }
            Err(error) => lock(&self.answers.errors).push((0, error.to_string())),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident memory of a process in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The tenant's `zori-api` consumer as the server reports it now.
async fn consumer_info(stream: &jetstream::stream::Stream) -> jetstream::consumer::Info {
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("zori-api").await.expect("consumer");
    consumer.info().await.expect("consumer info").clone()
}

/// Stream sequence up to which the consumer acknowledged every message (one message per event).
async fn acknowledged(js: &jetstream::Context, tenant: &Tenant) -> u64 {
    let stream = js.get_stream(tenant.stream()).await.expect("stream");
    consumer_info(&stream).await.ack_floor.stream_sequence
}

/// Waits until the consumer acknowledged everything.
async fn drained(js: &jetstream::Context, tenant: &Tenant, limit: Duration) {
    let stream = js.get_stream(tenant.stream()).await.expect("stream");
    crate::consumer::caught_up(&stream, "zori-api", limit).await;
}

const MIB: f64 = 1024.0 * 1024.0;

/// RSS samples of one binary: `(seconds into the soak, bytes)`.
struct Memory {
    name: &'static str,
    samples: Vec<(f64, u64)>,
}

impl Memory {
    fn max_between(&self, from: f64, to: f64) -> u64 {
        self.samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0)
    }
}

pub async fn run(record: &mut Record) {
    let seconds: u64 = std::env::var("ZORI_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let tenant = Tenant::new("soak");
    let js = jetstream::new(async_nats::connect(NATS_URL).await.expect("NATS is up"));
    let ingest_port = free_port();
    let mut ingest_args = tenant.ingest_args(ingest_port);
    // One load generator on one IP plays many visitors.
    ingest_args.extend(
        [
            "--rate-limit-per-visitor",
            "100000000",
            "--rate-limit-per-ip",
            "100000000",
        ]
        .map(str::to_owned),
    );
    let ingest =
        Process::start_profile("zori-ingest", crate::profile(), ingest_port, &ingest_args).await;
    let api_port = free_port();
    let api = Process::start_profile(
        "zori-api",
        crate::profile(),
        api_port,
        &tenant.api_args(api_port),
    )
    .await;
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(SOAK_WORKERS)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client"),
        url: format!("{}/batch", ingest.base_url),
        key: tenant.publishable_key.clone(),
        answers: Answers::default(),
        next_event: AtomicUsize::new(0),
    });

    // 1. The maximum, with the consumer running.
    let acked_before = acknowledged(&js, &tenant).await;
    let probe_started = Instant::now();
    let deadline = probe_started + PROBE;
    let workers: Vec<_> = (0..PROBE_WORKERS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    client.send().await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("probe worker");
    }
    let probe_sent = probe_started.elapsed();
    let acked_during = acknowledged(&js, &tenant).await - acked_before;
    let probe_events = client.answers.accepted_events.load(Ordering::Relaxed);
    drained(&js, &tenant, Duration::from_secs(600)).await;
    let ingest_rate = probe_events as f64 / probe_sent.as_secs_f64();
    // What the consumer acknowledged while ingest ran flat out beside it: the rate it sustains
    // with ingest taking its share of the machine (not the rate it drains at afterwards, alone).
    let consumer_rate = acked_during as f64 / probe_sent.as_secs_f64();
    let probe_errors = lock(&client.answers.errors).len();
    assert_eq!(
        probe_errors,
        0,
        "errors while probing: {:?}",
        lock(&client.answers.errors).first()
    );
    let maximum = ingest_rate.min(consumer_rate);
    let target = maximum * LOAD;
    let interval = Duration::from_secs_f64(EVENTS_PER_REQUEST as f64 / target);
    println!(
        "probe: ingest {ingest_rate:.0} events/s, consumer {consumer_rate:.0} events/s; \
         soaking {seconds} s at {target:.0} events/s"
    );

    // 2. The soak, paced, with memory sampled.
    let pids = [(ingest.name, ingest.pid()), (api.name, api.pid())];
    let mut memory: Vec<Memory> = pids
        .iter()
        .map(|(name, _)| Memory {
            name,
            samples: Vec::new(),
        })
        .collect();
    let requests_before = client.answers.requests.load(Ordering::Relaxed);
    let events_before = client.answers.accepted_events.load(Ordering::Relaxed);
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let slot = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..SOAK_WORKERS)
        .map(|_| {
            let (client, slot, late) = (client.clone(), slot.clone(), late.clone());
            tokio::spawn(async move {
                loop {
                    let n = slot.fetch_add(1, Ordering::Relaxed);
                    let at = started + interval.mul_f64(n as f64);
                    if at >= end {
                        return;
                    }
                    let now = Instant::now();
                    if at > now {
                        tokio::time::sleep_until(at.into()).await;
                    } else if now - at > Duration::from_secs(1) {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                    client.send().await;
                }
            })
        })
        .collect();
    // The consumer's backlog (messages not yet delivered) at the end of every minute.
    let stream = js.get_stream(tenant.stream()).await.expect("stream");
    let mut backlog = Vec::new();
    while Instant::now() < end {
        let t = started.elapsed().as_secs_f64();
        for (m, (_, pid)) in memory.iter_mut().zip(&pids) {
            m.samples.push((t, rss(*pid)));
        }
        if t >= 60.0 * (backlog.len() + 1) as f64 {
            backlog.push(consumer_info(&stream).await.num_pending);
        }
        tokio::time::sleep(SAMPLE).await;
    }
    for worker in workers {
        worker.await.expect("soak worker");
    }
    let soaked = started.elapsed();
    let sent_events = client.answers.accepted_events.load(Ordering::Relaxed) - events_before;
    let requests = client.answers.requests.load(Ordering::Relaxed) - requests_before;
    let stopped_sending = Instant::now();
    drained(&js, &tenant, Duration::from_secs(600)).await;
    let drain = stopped_sending.elapsed();

    // 3. Exact counts.
    let accepted = client.answers.accepted_events.load(Ordering::Relaxed);
    let visitors = lock(&client.answers.visitors).len() as i64;
    let ch = clickhouse::Client::default()
        .with_url(CLICKHOUSE_URL)
        .with_compression(clickhouse::Compression::None)
        .with_database(tenant.schema());
    let counts = ch
        .query("SELECT uniqExact(event_id) AS unique, count() AS rows FROM events")
        .fetch_one::<Counts>()
        .await
        .expect("count events");
    let pool = sqlx::PgPool::connect(POSTGRES_URL)
        .await
        .expect("PostgreSQL is up");
    let pg_visitors: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.visitors",
        tenant.schema()
    ))
    .fetch_one(&pool)
    .await
    .expect("count visitors");
    drop(api);
    drop(ingest);

    let errors = lock(&client.answers.errors).clone();
    let d = soaked.as_secs_f64();
    let mut flat = Vec::new();
    record.line(&format!(
        "Maximum (probe of {} s, consumer running): ingest {ingest_rate:.0} events/s, \
         consumer {consumer_rate:.0} events/s → soak at {:.0} % of {maximum:.0} = {target:.0} events/s.",
        PROBE.as_secs(),
        LOAD * 100.0
    ));
    record.line("");
    record.line("| soak | value |");
    record.line("|---|---:|");
    record.line(&format!("| duration | {d:.0} s |"));
    record.line(&format!(
        "| events accepted (rate) | {sent_events} ({:.0}/s) |",
        sent_events as f64 / d
    ));
    record.line(&format!("| requests | {requests} |"));
    record.line(&format!("| answers other than 200 | {} |", errors.len()));
    record.line(&format!(
        "| requests sent over 1 s late | {} |",
        late.load(Ordering::Relaxed)
    ));
    record.line(&format!(
        "| consumer caught up after the last request | {:.1} s |",
        drain.as_secs_f64()
    ));
    record.line(&format!(
        "| all events (incl. probe) accepted / in ClickHouse, unique / rows | {accepted} / {} / {} |",
        counts.unique, counts.rows
    ));
    record.line(&format!(
        "| visitors sent / in PostgreSQL | {visitors} / {pg_visitors} |"
    ));
    let backlog: Vec<String> = backlog.iter().map(u64::to_string).collect();
    record.line(&format!(
        "| consumer backlog at the end of each minute (messages) | {} |",
        backlog.join(" / ")
    ));
    for m in &memory {
        let first = m.samples.first().map_or(0, |s| s.1);
        let warm = m.max_between(d * 0.1, d * 0.2);
        let last = m.max_between(d * 0.9, d + 1.0);
        let bound = warm as f64 * 1.10 + 16.0 * MIB;
        record.line(&format!(
            "| {} RSS: start / max of 2nd tenth / max of last tenth (bound) | {:.1} / {:.1} / {:.1} ({:.1}) MiB |",
            m.name,
            first as f64 / MIB,
            warm as f64 / MIB,
            last as f64 / MIB,
            bound / MIB
        ));
        // Whether memory levels off or keeps growing shows in the minutes, not in two maxima.
        // (A last minute of under 5 s holds no sample and is left out.)
        let minutes: Vec<String> = (0..(d / 60.0).ceil() as usize)
            .map(|i| 60.0 * i as f64)
            .filter(|from| m.samples.iter().any(|(t, _)| t >= from && *t < from + 60.0))
            .map(|from| format!("{:.1}", m.max_between(from, from + 60.0) as f64 / MIB))
            .collect();
        record.line(&format!(
            "| {} RSS, highest of each minute | {} MiB |",
            m.name,
            minutes.join(" / ")
        ));
        flat.push((m.name, last as f64 <= bound, last, bound));
    }
    tenant.cleanup().await;

    assert!(
        errors.is_empty(),
        "answers other than 200: {:?}",
        &errors[..errors.len().min(5)]
    );
    for (name, ok, last, bound) in flat {
        assert!(
            ok,
            "{name} memory grew: {:.1} MiB in the last tenth, bound {:.1} MiB",
            last as f64 / MIB,
            bound / MIB
        );
    }
    assert_eq!(
        counts.unique, accepted,
        "every accepted event in ClickHouse"
    );
    assert_eq!(pg_visitors, visitors, "every visitor in PostgreSQL");
}
