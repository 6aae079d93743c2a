//! Report latency on a large tenant: N events (1M by default), N/10 visitors and N/100 payments,
//! all sent through the real `zori-ingest` (`POST /batch`) and the signed Stripe webhook endpoint
//! (each webhook signed with the time it is sent, as Stripe does), then each report timed over
//! HTTP beside a bare ClickHouse scan of the same events.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clickhouse::Row;
use futures::{stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use zori_e2e::{free_port, Overrides, Process, Tenant, CLICKHOUSE_URL, POSTGRES_URL, SITE_ORIGIN};

use crate::{size_label, Record};

/// Events of the default run; visitors are a tenth, payments a hundredth of the events.
pub const DEFAULT_EVENTS: usize = 1_000_000;
const PER_REQUEST: usize = 100;
const RUNS: usize = 20;

const SOURCES: &[(&str, &str, &str, Option<&str>)] = &[
    ("twitter", "paid_social", "launch", Some("https://t.co/x")),
    ("google", "cpc", "brand", Some("https://www.google.com/")),
    ("newsletter", "email", "november", None),
    ("", "", "", Some("https://news.ycombinator.com/item")),
    ("", "", "", Some("https://www.google.com/")),
    ("", "", "", None),
];

#[derive(Row, Deserialize)]
struct Count {
    n: u64,
}

/// Events, visitors and payments of one run.
#[derive(Debug, Clone, Copy)]
struct Scale {
    events: usize,
    visitors: usize,
    payments: usize,
}

impl Scale {
    fn of(events: usize) -> Self {
        Self {
            events,
            visitors: (events / 10).max(1),
            payments: (events / 100).max(1),
        }
    }
}

fn event(i: usize, now: OffsetDateTime, visitors: usize) -> serde_json::Value {
    let visitor = i % visitors;
    let (source, medium, campaign, referrer) = SOURCES[visitor % SOURCES.len()];
    // A visitor's events spread over 30 days; the first one carries the arrival.
    let nth = i / visitors;
    let at = now - time::Duration::minutes(((visitor * 37) % (30 * 24 * 60)) as i64)
        + time::Duration::seconds(nth as i64 * 30);
    let at = at.min(now);
    let query = if nth == 0 && !source.is_empty() {
        format!("?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}")
    } else {
        String::new()
    };
    json!({
        "event_name": if nth % 5 == 4 { "signup_click" } else { "page_view" },
        "client_generated_event_id": uuid::Uuid::new_v4().to_string(),
        "visitor_id": format!("vis_bench_{visitor:06}"),
        "session_id": format!("ses_{visitor:06}_{}", nth / 4),
        "client_timestamp_utc": at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "referrer": if nth == 0 { referrer } else { None },
        "page_url": format!("{SITE_ORIGIN}/p/{}{query}", (visitor + nth) % 40),
        "host": "shop.example",
        "custom_properties": {"page_title": "Shop", "plan": if visitor.is_multiple_of(3) { "pro" } else { "starter" }},
    })
}

fn checkout(i: usize, now: i64, visitors: usize) -> String {
    let visitor = (i * 7) % visitors;
    let currency = if i.is_multiple_of(4) { "eur" } else { "usd" };
    json!({
        "id": format!("evt_bench_{i}"), "object": "event", "api_version": "2024-06-20",
        "created": now, "livemode": false, "type": "checkout.session.completed",
        "data": {"object": {
            "id": format!("cs_bench_{i}"), "object": "checkout.session", "mode": "payment",
            "amount_total": 4900 + (i % 5) as i64 * 2500, "currency": currency, "created": now,
            "payment_status": "paid", "status": "complete", "payment_intent": format!("pi_bench_{i}"),
            // One payment in ten has no visitor: it must show up as unattributed.
            "metadata": if i % 10 == 9 { json!({}) } else { json!({"zori_visitor_id": format!("vis_bench_{visitor:06}")}) },
        }}
    })
    .to_string()
}

pub async fn run(record: &mut Record, events: usize) {
    let scale = Scale::of(events);
    let mut tenant = Tenant::new("benchr");
    // Seeding outpaces the consumer: the stream's buffer must hold the whole run (~1.2 KB an
    // event), or ingest rightly answers 503 and the seeding rate measures the consumer.
    let buffer = format!("{}MiB", ((scale.events * 1200) >> 20).max(1024));
    tenant.overrides = Overrides::default().stream_args(&["--stream-max-bytes", &buffer]);
    let ingest_port = free_port();
    let mut args = tenant.ingest_args(ingest_port);
    args.extend(
        [
            "--rate-limit-per-visitor",
            "0",
            "--rate-limit-per-ip",
            "0",
            "--max-past-skew",
            "40d",
        ]
        .map(str::to_owned),
    );
    let ingest = Process::start_profile("zori-ingest", crate::profile(), ingest_port, &args).await;
    let api_port = free_port();
    let api = Process::start_profile(
        "zori-api",
        crate::profile(),
        api_port,
        &tenant.api_args(api_port),
    )
    .await;
    let http = reqwest::Client::new();
    let now = OffsetDateTime::now_utc();

    let seeding = Instant::now();
    let shared = Arc::new((
        http.clone(),
        ingest.base_url.clone(),
        tenant.publishable_key.clone(),
    ));
    stream::iter((0..scale.events).step_by(PER_REQUEST))
        .for_each_concurrent(16, |start| {
            let shared = shared.clone();
            async move {
                let (http, base, key) = &*shared;
                let events: Vec<_> = (start..(start + PER_REQUEST).min(scale.events))
                    .map(|i| event(i, now, scale.visitors))
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
        })
        .await;
    let ingest_time = seeding.elapsed();
    // Payments spread over the range, newest first, as a shop's would be (all at one second, the
    // newest-payers page of `customers` would have to sort every payment's payer).
    let spread = 29 * 86_400 / scale.payments.max(1) as i64;
    stream::iter(0..scale.payments)
        .for_each_concurrent(8, |i| {
            let http = http.clone();
            let base = api.base_url.clone();
            let secret = tenant.stripe_secret.clone();
            async move {
                let created = now.unix_timestamp() - i as i64 * spread;
                let body = checkout(i, created, scale.visitors);
                // Signed when sent, as Stripe does: seeding a large run takes longer than the
                // 300 s signature tolerance.
                let signed_at = OffsetDateTime::now_utc().unix_timestamp();
                let signature =
                    zori_core::stripe::signature::sign(body.as_bytes(), &secret, signed_at);
                let response = http
                    .post(format!("{base}/webhooks/stripe"))
                    .header("Stripe-Signature", signature)
                    .body(body)
                    .send()
                    .await
                    .expect("api answers");
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
            }
        })
        .await;
    let webhook_time = seeding.elapsed() - ingest_time;

    let ch = clickhouse::Client::default()
        .with_url(CLICKHOUSE_URL)
        .with_compression(clickhouse::Compression::None)
        .with_database(tenant.schema());
    loop {
        let n = ch
            .query("SELECT count() AS n FROM events")
            .fetch_one::<Count>()
            .await
            .map(|c| c.n)
            .unwrap_or(0);
        if n >= scale.events as u64 {
            break;
        }
        assert!(
            seeding.elapsed() < Duration::from_secs(7200),
            "pipeline stalled at {n} events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The PostgreSQL side of the last batch commits just after ClickHouse's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pipeline_time = seeding.elapsed();
    // As autovacuum would have by then on a live tenant: seeding rewrote the payments many
    // times over (their credit triggers), and a table read right after holds every dead
    // version (pgbench vacuums before its runs for the same reason).
    let pool = sqlx::PgPool::connect(POSTGRES_URL)
        .await
        .expect("PostgreSQL is up");
    for table in ["payments", "visitors", "touches", "visitor_days"] {
        sqlx::query(&format!("VACUUM ANALYZE {}.{table}", tenant.schema()))
            .execute(&pool)
            .await
            .expect("vacuum");
    }
    pool.close().await;

    let from = (now - time::Duration::days(29)).date();
    let range = format!("from={from}&to={}", now.date());
    let reports = [
        format!("/api/v1/overview?{range}"),
        format!("/api/v1/attribution?dimension=source&{range}"),
        format!("/api/v1/attribution?dimension=channel&{range}"),
        format!("/api/v1/attribution?dimension=medium&{range}"),
        format!("/api/v1/attribution?dimension=campaign&{range}"),
        format!("/api/v1/attribution?dimension=referrer&{range}"),
        format!("/api/v1/attribution?dimension=landing_page&{range}"),
        format!("/api/v1/timeseries?{range}"),
        format!("/api/v1/pages?{range}"),
        format!("/api/v1/events?{range}"),
        format!("/api/v1/countries?{range}"),
        format!("/api/v1/devices?{range}"),
        format!("/api/v1/customers?{range}"),
        format!("/api/v1/attribution?model=linear&{range}"),
        format!("/api/v1/attribution?model=time_decay&{range}"),
        format!("/api/v1/attribution/compare?{range}"),
        format!("/api/v1/spend?{range}"),
        format!("/api/v1/cohorts?{range}"),
        format!("/api/v1/mrr?{range}"),
        // Pages are /p/0../p/39; every fifth event of a visitor is a signup_click.
        format!("/api/v1/funnel?steps=page:/p/0,event:signup_click,paid&{range}"),
    ];
    record.line(&format!(
        "Size {}: {} events, {} visitors, {} payments over 30 days.\n",
        size_label(scale.events),
        scale.events,
        scale.visitors,
        scale.payments
    ));
    record.line(&format!(
        "Seeded through the real endpoints: {} events in {:.1}s ({:.0} events/s at ingest), \
         {} webhooks in {:.1}s, all in the stores after {:.1}s; then `VACUUM ANALYZE` of the \
         tenant's PostgreSQL tables.\n",
        scale.events,
        ingest_time.as_secs_f64(),
        scale.events as f64 / ingest_time.as_secs_f64(),
        scale.payments,
        webhook_time.as_secs_f64(),
        pipeline_time.as_secs_f64(),
    ));
    let bare = time_runs(|| async {
        ch.query("SELECT uniqExact(visitor_id) AS n FROM events")
            .fetch_one::<Count>()
            .await
            .expect("bare scan");
    })
    .await;
    record.line("| query (30 days) | p50 ms | p99 ms | p50 ratio to bare scan |");
    record.line("|---|---:|---:|---:|");
    record.line(&format!(
        "| bare ClickHouse `uniqExact(visitor_id)` over all events | {:.1} | {:.1} | 1.00 |",
        bare.0, bare.1
    ));
    for path in &reports {
        let (p50, p99) = time_runs(|| async {
            let response = http
                .get(format!("{}{path}", api.base_url))
                .bearer_auth(&tenant.api_token)
                .send()
                .await
                .expect("api answers");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.bytes().await.expect("body");
        })
        .await;
        record.line(&format!(
            "| `GET {}` | {p50:.1} | {p99:.1} | {:.2} |",
            report_label(path),
            p50 / bare.0
        ));
    }
    drop(api);
    drop(ingest);
    if std::env::var_os("ZORI_BENCH_KEEP").is_some() {
        // Kept to profile the reports' queries against the same data.
        record.line(&format!(
            "Kept (ZORI_BENCH_KEEP): PostgreSQL schema and ClickHouse database {}.",
            tenant.schema()
        ));
        return;
    }
    tenant.cleanup().await;
}

/// The route, with the dimension for attribution: `/api/v1/attribution?dimension=source`.
fn report_label(path: &str) -> String {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| p.starts_with("dimension=") || p.starts_with("model="))
        .collect();
    if kept.is_empty() {
        route.to_owned()
    } else {
        format!("{route}?{}", kept.join("&"))
    }
}

/// p50 and p99 in milliseconds over [`RUNS`] sequential runs (after one warm-up).
async fn time_runs<F, Fut>(op: F) -> (f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    op().await;
    let mut samples: Vec<f64> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        op().await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}
