//! Benchmarks, each beside the raw limit measured in the same run (see docs/benchmarks.md).
//!
//! - `ingest`: events/s and latency of `zori-ingest` beside a bare JetStream publish loop with
//!   the same concurrency and message size.
//! - `consumer`: rows/s of `zori-api`'s stream consumer into ClickHouse (and PostgreSQL) beside a
//!   bare batched RowBinary insert of the same rows.
//! - `reports [--size N]`: latency of the reports on a tenant with N events (default 1M; `10M`
//!   on request), N/10 visitors and N/100 payments, all sent through the real ingest and
//!   webhook endpoints, each report's p50/p99 beside a bare ClickHouse scan of the same run.
//!
//! - `soak`: ten minutes (`ZORI_SOAK_SECONDS`) of tracker traffic at 80 % of the maximum the
//!   stack sustains here, with memory sampled and exact counts at the end (see `soak.rs`).
//!
//! Each run's table is printed and recorded in `target/bench/<benchmark>[-<size>].md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

mod consumer;
mod ingest;
mod reports;
mod soak;

use zori_e2e::Profile;

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

/// The build the benchmarks start: release, unless `ZORI_BENCH_PROFILE=debug` asks for the
/// debug binaries (to check the harness itself at a small size; its figures mean nothing).
pub fn profile() -> Profile {
    match std::env::var("ZORI_BENCH_PROFILE").as_deref() {
        Ok("debug") => Profile::Debug,
        _ => Profile::Release,
    }
}

/// How long each throughput run lasts.
const SECONDS: u64 = 10;

const USAGE: &str =
    "usage: zori-bench ingest | consumer | soak | reports [--size N]  (N: 1M default, 10M, 100k, …)";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, size) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("error: {error}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut record = Record::new(&what, size, &args);
    match what.as_str() {
        "ingest" => ingest::run(&mut record).await,
        "consumer" => consumer::run(&mut record).await,
        "soak" => soak::run(&mut record).await,
        "reports" => reports::run(&mut record, size.unwrap_or(reports::DEFAULT_EVENTS)).await,
        _ => unreachable!("checked by parse_args"),
    }
    record.save();
}

/// The benchmark's name and, for `reports`, its size.
fn parse_args(args: &[String]) -> Result<(String, Option<usize>), String> {
    let mut what = None;
    let mut size = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--size" => {
                let value = rest.next().ok_or("--size needs a value such as 1M")?;
                size = Some(parse_size(value)?);
            }
            "ingest" | "consumer" | "soak" | "reports" if what.is_none() => {
                what = Some(arg.clone())
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let what = what.unwrap_or_else(|| "ingest".to_owned());
    if size.is_some() && what != "reports" {
        return Err(format!("--size applies to reports, not {what}"));
    }
    Ok((what, size))
}

/// `1M`, `10M`, `100k`, `250000`: a count of events.
pub fn parse_size(value: &str) -> Result<usize, String> {
    let value = value.trim();
    let (number, multiplier) = match value.char_indices().last() {
        Some((i, 'k' | 'K')) => (&value[..i], 1_000),
        Some((i, 'm' | 'M')) => (&value[..i], 1_000_000),
        _ => (value, 1),
    };
    number
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n >= 1_000)
        .ok_or_else(|| format!("{value:?} is not a size such as 1M, 10M or 100k (at least 1k)"))
}

/// Short form of a size for file names and titles: `1M`, `10M`, `100k`.
pub fn size_label(n: usize) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// What a run prints, also kept in `target/bench/` so each run's figures stay side by side.
pub struct Record {
    path: PathBuf,
    text: String,
}

impl Record {
    fn new(what: &str, size: Option<usize>, args: &[String]) -> Self {
        let name = match size {
            Some(n) => format!("{what}-{}", size_label(n)),
            None => what.to_owned(),
        };
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bench")
            .join(format!("{name}.md"));
        let started = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut record = Record {
            path,
            text: String::new(),
        };
        let build = match profile() {
            Profile::Release => "release build",
            Profile::Debug => "DEBUG build: a harness check only, its figures mean nothing",
        };
        record.line(&format!(
            "<!-- zori-bench {} at {started}, {build} -->",
            args.join(" ")
        ));
        record
    }

    /// Prints a line and keeps it.
    pub fn line(&mut self, line: &str) {
        println!("{line}");
        let _ = writeln!(self.text, "{line}");
    }

    fn save(&self) {
        let saved = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&self.path, &self.text));
        match saved {
            Ok(()) => eprintln!("recorded in {}", self.path.display()),
            Err(error) => eprintln!(
                "warning: failed to record in {}: {error}",
                self.path.display()
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Ok(1_000_000));
        assert_eq!(parse_size("10m"), Ok(10_000_000));
        assert_eq!(parse_size("100k"), Ok(100_000));
        assert_eq!(parse_size("250000"), Ok(250_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1G").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(size_label(10_000_000), "10M");
        assert_eq!(size_label(100_000), "100k");
        assert_eq!(size_label(123_456), "123456");
    }

    #[test]
    fn arguments() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&[]), Ok(("ingest".to_owned(), None)));
        assert_eq!(
            args(&["reports", "--size", "10M"]),
            Ok(("reports".to_owned(), Some(10_000_000)))
        );
        assert!(args(&["ingest", "--size", "1M"]).is_err());
        assert!(args(&["reports", "--size"]).is_err());
        assert!(args(&["bogus"]).is_err());
    }
}
