//! Ingest throughput beside a bare JetStream publish loop.

use std::{sync::Arc, time::Duration};

use async_nats::{jetstream, HeaderMap};
use serde_json::json;
use zori_e2e::{free_port, Overrides, Process, Tenant, NATS_URL, SITE_ORIGIN};

use crate::{run_for, Figures, Record};

const CONCURRENCY: usize = 32;
const BATCH: usize = 20;

pub fn tracker_event(visitor: usize) -> serde_json::Value {
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

pub async fn run(record: &mut Record) {
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

    let mut tenant = Tenant::new("bench");
    // Nothing consumes this stream: its buffer must hold everything the runs send.
    tenant.overrides = Overrides::default().stream_args(&["--stream-max-bytes", "8GiB"]);
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
    let server = Process::start_profile("zori-ingest", crate::profile(), port, &args).await;
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

    print_table(record, &[bare, single, batched]);
}

fn print_table(record: &mut Record, runs: &[Figures]) {
    let base_rate = runs[0].rate();
    record.line("| run | events/s | ratio to bare | p50 ms | p99 ms |");
    record.line("|---|---:|---:|---:|---:|");
    for figures in runs {
        record.line(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            figures.label,
            figures.rate(),
            figures.rate() / base_rate,
            figures.percentile_ms(0.50),
            figures.percentile_ms(0.99),
        ));
    }
}
