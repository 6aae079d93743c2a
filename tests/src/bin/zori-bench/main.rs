//! Benchmarks, each beside the raw limit measured in the same run (see docs/benchmarks.md).
//!
//! - `ingest`: events/s and latency of `zori-ingest` beside a bare JetStream publish loop with
//!   the same concurrency and message size.
//! - `consumer`: rows/s of `zori-api`'s stream consumer into ClickHouse (and PostgreSQL) beside a
//!   bare batched RowBinary insert of the same rows.
//! - `reports`: latency of the reports on a tenant with 1M events and 10k payments, all sent
//!   through the real ingest and webhook endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod consumer;
mod ingest;
mod reports;

/// Throughput and latency of one run.
pub struct Figures {
    pub label: String,
    pub events: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Figures {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency percentile; `latencies_us` must be sorted.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
}

/// How long each throughput run lasts.
const SECONDS: u64 = 10;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let what = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ingest".to_owned());
    match what.as_str() {
        "ingest" => ingest::run().await,
        "consumer" => consumer::run().await,
        "reports" => reports::run().await,
        other => {
            eprintln!("error: unknown benchmark {other:?}; expected: ingest, consumer or reports");
            std::process::exit(2);
        }
    }
}

/// Runs `op` from `concurrency` tasks for [`SECONDS`]; each call counts `events_per_op` events.
pub async fn run_for<F, Fut>(
    label: &str,
    concurrency: usize,
    events_per_op: usize,
    op: F,
) -> Figures
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
