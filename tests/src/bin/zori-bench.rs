//! Benchmarks, each beside the raw limit measured in the same run (see docs/benchmarks.md).
//!
//! `zori-bench ingest`: events/s and latency of `zori-ingest` beside a bare JetStream publish
//! loop with the same concurrency and message size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::{jetstream, HeaderMap};
use serde_json::json;
use zori_e2e::{free_port, Process, Profile, Tenant, NATS_URL, SITE_ORIGIN};

/// Throughput and latency of one run.
struct Figures {
    label: String,
    events: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency percentile; `latencies_us` must be sorted.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
}

const SECONDS: u64 = 10;
const CONCURRENCY: usize = 32;
const BATCH: usize = 20;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let what = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ingest".to_owned());
    match what.as_str() {
        "ingest" => ingest().await,
        other => {
            eprintln!("error: unknown benchmark {other:?}; expected: ingest");
            std::process::exit(2);
        }
    }
}

fn tracker_event(visitor: usize) -> serde_json::Value {
    json!({
        "event_name": "page_view",
        "client_generated_event_id": uuid::Uuid::new_v4().to_string(),
        "visitor_id": format!("vis_{visitor:08}-bench"),
        "session_id": format!("ses_{visitor:08}"),
        "client_timestamp_utc": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339).unwrap(),
        "referrer": "https://www.google.com/search",
        "page_url": format!("{SITE_ORIGIN}/pricing?utm_source=twitter&utm_medium=paid_social&utm_campaign=launch"),
        "host": "shop.example",
        "custom_properties": {"page_title": "Pricing — Shop", "page_path": "/pricing"},
    })
}

async fn ingest() {
    // The raw limit: the same number of concurrent publishers, each publishing a message of
    // the size ingest publishes and awaiting its JetStream ack, with a Nats-Msg-Id.
    let nats = async_nats::connect(NATS_URL).await.expect("NATS is up");
    let js = jetstream::new(nats);
    let stream = format!("BENCH_{}", uuid::Uuid::new_v4().simple());
    let subject = format!("bench.{}", uuid::Uuid::new_v4().simple());
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("create bench stream");
    let payload = bytes::Bytes::from(vec![b'x'; 1100]);
    let bare = run_for("bare JetStream publish", CONCURRENCY, 1, {
        let js = js.clone();
        move |_| {
            let js = js.clone();
            let subject = subject.clone();
            let payload = payload.clone();
            async move {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
                js.publish_with_headers(subject, headers, payload)
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
            }
        }
    })
    .await;
    let _ = js.delete_stream(&stream).await;

    let tenant = Tenant::new("bench");
    let port = free_port();
    let mut args = tenant.ingest_args(port);
    args.extend(
        [
            "--rate-limit-per-visitor",
            "100000000",
            "--rate-limit-per-ip",
            "100000000",
        ]
        .map(str::to_owned),
    );
    let server = Process::start_profile("zori-ingest", Profile::Release, port, &args).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let client = Arc::new((
        http,
        server.base_url.clone(),
        tenant.publishable_key.clone(),
    ));

    let single = run_for("zori-ingest POST /ingest", CONCURRENCY, 1, {
        let client = client.clone();
        move |n| {
            let client = client.clone();
            async move {
                let (http, base, key) = &*client;
                let response = http
                    .post(format!("{base}/ingest"))
                    .header("X-Zori-PT", key)
                    .json(&tracker_event(n % 5000))
                    .send()
                    .await
                    .expect("ingest answers");
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
            }
        }
    })
    .await;

    let batched = run_for("zori-ingest POST /batch (20 events)", CONCURRENCY, BATCH, {
        let client = client.clone();
        move |n| {
            let client = client.clone();
            async move {
                let (http, base, key) = &*client;
                let events: Vec<_> = (0..BATCH)
                    .map(|i| tracker_event((n * BATCH + i) % 5000))
                    .collect();
                let response = http
                    .post(format!("{base}/batch"))
                    .header("X-Zori-PT", key)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .expect("ingest answers");
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
            }
        }
    })
    .await;
    drop(server);
    tenant.cleanup().await;

    let base_rate = bare.rate();
    println!("| run | events/s | ratio to bare | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for figures in [bare, single, batched] {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            figures.label,
            figures.rate(),
            figures.rate() / base_rate,
            figures.percentile_ms(0.50),
            figures.percentile_ms(0.99),
        );
    }
}

/// Runs `op` from `concurrency` tasks for [`SECONDS`]; each call counts `events_per_op` events.
async fn run_for<F, Fut>(label: &str, concurrency: usize, events_per_op: usize, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = worker;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(n).await;
                    latencies.push(t.elapsed().as_micros() as u64);
                    n += concurrency;
                }
                latencies
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.expect("bench task"));
    }
    latencies_us.sort_unstable();
    Figures {
        label: label.to_owned(),
        events: (latencies_us.len() * events_per_op) as u64,
        elapsed: started.elapsed(),
        latencies_us,
    }
}
