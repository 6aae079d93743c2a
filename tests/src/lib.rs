//! Test kit for end-to-end journeys: a fresh tenant on the real services, the real `zori-ingest`
//! and `zori-api` binaries started with exactly the settings an operator would give them, and
//! helpers to send what browsers and Stripe send.
//!
//! The binaries are the ones `cargo build --workspace --bins` produced (scripts/test.sh builds
//! them first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rand::{distr::Alphanumeric, RngExt};
use serde_json::Value;

pub mod browser;
pub mod delivery;
pub mod faults;
pub mod operator;
pub mod tracker;

pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
/// The site every test tenant tracks.
pub const SITE_ORIGIN: &str = "https://shop.example";

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// One tenant's names and secrets, unique per test so tests run in parallel.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub publishable_key: String,
    pub api_token: String,
    pub email_salt: String,
    pub stripe_secret: String,
    /// Services and flags that differ from the machine's defaults.
    pub overrides: Overrides,
}

impl Tenant {
    pub fn new(prefix: &str) -> Self {
        let id = format!("{prefix}_{}", random(10).to_ascii_lowercase());
        Self {
            id,
            publishable_key: format!("zori_pt_{}", random(24)),
            api_token: format!("zori_at_{}", random(32)),
            email_salt: random(24),
            stripe_secret: format!("whsec_{}", random(32)),
            overrides: Overrides::default(),
        }
    }

    pub fn stream(&self) -> String {
        format!("ZORI_{}", self.id.to_ascii_uppercase())
    }

    pub fn schema(&self) -> String {
        format!("zori_{}", self.id)
    }

    /// Settings of `zori-ingest` for this tenant, as flag/value pairs.
    pub fn ingest_args(&self, port: u16) -> Vec<String> {
        self.ingest_args_with(port, &[])
    }

    /// [`Tenant::ingest_args`] with more allowed origins than [`SITE_ORIGIN`] (browser tests
    /// serve their pages from `http://127.0.0.1:<port>`).
    pub fn ingest_args_with(&self, port: u16, extra_origins: &[String]) -> Vec<String> {
        self.ingest_args_for(
            port,
            &StackOptions {
                allowed_origins: extra_origins.to_vec(),
            },
        )
    }

    /// Settings of `zori-ingest` for this tenant with `options` (and its [`Overrides`]).
    pub fn ingest_args_for(&self, port: u16, options: &StackOptions) -> Vec<String> {
        let overrides = &self.overrides;
        let origins = std::iter::once(SITE_ORIGIN.to_owned())
            .chain(options.allowed_origins.iter().cloned())
            .collect::<Vec<_>>()
            .join(",");
        [
            ("--tenant-id", self.id.as_str()),
            ("--listen", &format!("127.0.0.1:{port}")),
            ("--publishable-key", &self.publishable_key),
            ("--allowed-origins", &origins),
            (
                "--nats-url",
                overrides.nats_url.as_deref().unwrap_or(NATS_URL),
            ),
            (
                "--redis-url",
                overrides.redis_url.as_deref().unwrap_or(REDIS_URL),
            ),
            ("--email-salt", &self.email_salt),
            ("--max-past-skew", "30d"),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .chain((!overrides.stream_made_elsewhere).then(|| "--create-stream".to_owned()))
        .chain(overrides.ingest_args.iter().cloned())
        .collect()
    }

    /// Settings of `zori-api` for this tenant (with its [`Overrides`]), as flag/value pairs.
    pub fn api_args(&self, port: u16) -> Vec<String> {
        let overrides = &self.overrides;
        [
            ("--tenant-id", self.id.as_str()),
            ("--listen", &format!("127.0.0.1:{port}")),
            ("--api-token", &self.api_token),
            (
                "--nats-url",
                overrides.nats_url.as_deref().unwrap_or(NATS_URL),
            ),
            (
                "--postgres-url",
                overrides.postgres_url.as_deref().unwrap_or(POSTGRES_URL),
            ),
            (
                "--clickhouse-url",
                overrides
                    .clickhouse_url
                    .as_deref()
                    .unwrap_or(CLICKHOUSE_URL),
            ),
            ("--stripe-webhook-secrets", &self.stripe_secret),
            ("--email-salt", &self.email_salt),
            ("--batch-wait", "200ms"),
            ("--ack-wait", "5s"),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .chain(["--create-schema".to_owned()])
        .chain((!overrides.stream_made_elsewhere).then(|| "--create-stream".to_owned()))
        .chain(overrides.api_args.iter().cloned())
        .collect()
    }

    /// Drops everything this tenant created on the services (best effort).
    pub async fn cleanup(&self) {
        if let Ok(pool) = sqlx::PgPool::connect(POSTGRES_URL).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema()))
                .execute(&pool)
                .await;
        }
        let _ = reqwest::Client::new()
            .post(CLICKHOUSE_URL)
            .body(format!("DROP DATABASE IF EXISTS {}", self.schema()))
            .send()
            .await;
        if let Ok(client) = async_nats::connect(NATS_URL).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(self.stream())
                .await;
        }
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Which build of the binaries to start: `debug` for tests, `release` for benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

fn binary(name: &str, profile: Profile) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let (dir, build) = match profile {
        Profile::Debug => ("debug", "cargo build --workspace --bins"),
        Profile::Release => ("release", "cargo build --release --workspace --bins"),
    };
    let path = target.join(dir).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `{build}` first (scripts/test.sh and scripts/bench.sh do)",
        path.display()
    );
    path
}

/// Path of a debug binary (asserts that it was built).
pub fn debug_binary(name: &str) -> PathBuf {
    binary(name, Profile::Debug)
}

/// A running binary; killed when dropped.
pub struct Process {
    pub name: &'static str,
    pub base_url: String,
    child: Child,
}

impl Process {
    /// Starts `name` with `args` and waits until its `/readyz` answers 200.
    pub async fn start(name: &'static str, port: u16, args: &[String]) -> Process {
        Self::start_profile(name, Profile::Debug, port, args).await
    }

    /// Like [`Process::start`], with the given build profile.
    pub async fn start_profile(
        name: &'static str,
        profile: Profile,
        port: u16,
        args: &[String],
    ) -> Process {
        Self::spawn(name, profile, port, args, &[]).await
    }

    /// Starts a debug build configured only through environment variables, the way a
    /// Deployment configures it, and waits until `/readyz` answers 200.
    pub async fn start_with_env(
        name: &'static str,
        port: u16,
        env: &[(String, String)],
    ) -> Process {
        Self::spawn(name, Profile::Debug, port, &[], env).await
    }

    async fn spawn(
        name: &'static str,
        profile: Profile,
        port: u16,
        args: &[String],
        env: &[(String, String)],
    ) -> Process {
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::File::create(log_dir.join(format!("{name}-{port}.log"))).unwrap();
        let child = Command::new(binary(name, profile))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        let mut process = Process {
            name,
            base_url: format!("http://127.0.0.1:{port}"),
            child,
        };
        process.wait_ready(Duration::from_secs(60)).await;
        process
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before becoming ready; see target/e2e-logs",
                    self.name
                );
            }
            let ready = client
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {timeout:?}; see target/e2e-logs",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id (to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no draining, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for child")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tenant with both binaries running.
pub struct Stack {
    pub tenant: Tenant,
    pub ingest: Process,
    pub api: Process,
    pub api_port: u16,
    pub ingest_port: u16,
    pub options: StackOptions,
    pub http: reqwest::Client,
}

/// How [`Stack::start_with`] sets the tenant up beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Origins allowed besides [`SITE_ORIGIN`], e.g. `http://127.0.0.1:8080`.
    pub allowed_origins: Vec<String>,
}

/// Other services and more flags for [`Stack::start_overriding`] (fault and retention tests).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// NATS of both binaries instead of [`NATS_URL`] (a test's own server).
    pub nats_url: Option<String>,
    /// Redis of zori-ingest instead of [`REDIS_URL`].
    pub redis_url: Option<String>,
    /// PostgreSQL of zori-api instead of [`POSTGRES_URL`] (e.g. through a [`faults::Proxy`]).
    pub postgres_url: Option<String>,
    /// ClickHouse of zori-api instead of [`CLICKHOUSE_URL`].
    pub clickhouse_url: Option<String>,
    /// More flags of zori-ingest; they override the defaults.
    pub ingest_args: Vec<String>,
    /// More flags of zori-api; they override the defaults.
    pub api_args: Vec<String>,
    /// The test made the tenant stream (as the operator does): the binaries run without
    /// `--create-stream`, so they never change its settings.
    pub stream_made_elsewhere: bool,
}

impl Overrides {
    /// The same stream flags for both binaries (both pass `--create-stream`).
    pub fn stream_args(mut self, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.ingest_args.extend(args.iter().cloned());
        self.api_args.extend(args);
        self
    }

    /// More flags of zori-ingest.
    pub fn ingest_args(mut self, args: &[&str]) -> Self {
        self.ingest_args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

impl Stack {
    pub async fn start(prefix: &str) -> Stack {
        Self::start_with(prefix, StackOptions::default()).await
    }

    /// Like [`Stack::start`], with [`StackOptions`].
    pub async fn start_with(prefix: &str, options: StackOptions) -> Stack {
        Self::start_overriding(prefix, options, Overrides::default()).await
    }

    /// Like [`Stack::start_with`], on other services or with more flags.
    pub async fn start_overriding(
        prefix: &str,
        options: StackOptions,
        overrides: Overrides,
    ) -> Stack {
        let mut tenant = Tenant::new(prefix);
        tenant.overrides = overrides;
        let ingest_port = free_port();
        let api_port = free_port();
        let ingest = Process::start(
            "zori-ingest",
            ingest_port,
            &tenant.ingest_args_for(ingest_port, &options),
        )
        .await;
        let api = Process::start("zori-api", api_port, &tenant.api_args(api_port)).await;
        Stack {
            tenant,
            ingest,
            api,
            api_port,
            ingest_port,
            options,
            http: reqwest::Client::new(),
        }
    }

    /// Kills zori-ingest with SIGKILL (clients then get connection errors).
    pub fn stop_ingest(&mut self) {
        self.ingest.kill();
    }

    /// Starts zori-ingest again on the same port with the same settings.
    pub async fn start_ingest(&mut self) {
        self.ingest.kill();
        self.ingest = Process::start(
            "zori-ingest",
            self.ingest_port,
            &self.tenant.ingest_args_for(self.ingest_port, &self.options),
        )
        .await;
    }

    /// Kills the api with SIGKILL and starts a new one with the same settings.
    pub async fn restart_api_hard(&mut self) {
        self.api.kill();
        self.api = Process::start(
            "zori-api",
            self.api_port,
            &self.tenant.api_args(self.api_port),
        )
        .await;
    }

    /// A client of this tenant's ingest endpoint that can be handed to other tasks.
    pub fn sender(&self) -> Sender {
        Sender {
            http: self.http.clone(),
            ingest_url: self.ingest.base_url.clone(),
            publishable_key: self.tenant.publishable_key.clone(),
        }
    }

    /// See [`Sender::send_batch`].
    pub async fn send_batch(&self, events: &[Value]) -> Result<reqwest::Response, reqwest::Error> {
        self.sender().send_batch(events).await
    }

    /// See [`Sender::send_batch_until_accepted`].
    pub async fn send_batch_until_accepted(
        &self,
        events: &[Value],
        timeout: Duration,
    ) -> Vec<(u16, Option<String>)> {
        self.sender()
            .send_batch_until_accepted(events, timeout)
            .await
    }

    /// The value of an unlabelled metric on zori-api's `/metrics` (`None` if absent).
    pub async fn api_metric(&self, name: &str) -> Option<f64> {
        self.metric(&self.api, name).await
    }

    /// The value of an unlabelled metric on zori-ingest's `/metrics` (`None` if absent).
    pub async fn ingest_metric(&self, name: &str) -> Option<f64> {
        self.metric(&self.ingest, name).await
    }

    async fn metric(&self, process: &Process, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", process.base_url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric_value(&text, name)
    }

    /// Rows of `page_view` in the events report over the last day: `(events, visitors)`.
    pub async fn page_views(&self) -> (i64, i64) {
        let now = time::OffsetDateTime::now_utc();
        let report = self
            .report(&format!(
                "/api/v1/events?from={}&to={}",
                now.date() - time::Duration::days(1),
                now.date()
            ))
            .await;
        let row = report["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == "page_view"));
        let field = |f: &str| row.and_then(|r| r[f].as_i64()).unwrap_or(0);
        (field("count"), field("visitors"))
    }

    /// Waits until the events report counts at least `events` page views (and at most
    /// `timeout`), then checks the counts hold still: exactly `events` and `visitors`.
    pub async fn assert_page_views_exactly(
        &self,
        events: usize,
        visitors: usize,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let (count, _) = self.page_views().await;
            if count >= events as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {count} of {events} page views arrived within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Redeliveries after the ack wait must not add anything.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            self.page_views().await,
            (events as i64, visitors as i64),
            "page views and visitors after recovery"
        );
    }

    /// Sends one event in the original script's wire format; returns the HTTP status.
    pub async fn track(&self, event: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/ingest", self.ingest.base_url))
            .header("X-Zori-PT", &self.tenant.publishable_key)
            .header("Origin", SITE_ORIGIN)
            .header(
                "User-Agent",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            )
            .json(event)
            .send()
            .await
            .expect("ingest answers")
    }

    /// Posts a Stripe event body signed exactly as Stripe signs it.
    pub async fn stripe_webhook(&self, body: &str) -> reqwest::Response {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature =
            zori_core::stripe::signature::sign(body.as_bytes(), &self.tenant.stripe_secret, now);
        self.http
            .post(format!("{}/webhooks/stripe", self.api.base_url))
            .header("Stripe-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("api answers")
    }

    /// GET on the reports API with the tenant's token; panics unless 200.
    pub async fn report(&self, path_and_query: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.api.base_url))
            .bearer_auth(&self.tenant.api_token)
            .send()
            .await
            .expect("api answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "GET {path_and_query} → {status}: {body}"
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    /// Polls a report until `done` holds (events flow through the stream asynchronously).
    pub async fn report_until(
        &self,
        path_and_query: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.report(path_and_query).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{path_and_query} did not reach the expected state within {timeout:?}; last: {value:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Sends events to one tenant's zori-ingest the way the tracker does.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    ingest_url: String,
    publishable_key: String,
}

impl Sender {
    /// Posts events (and no identifies) the way the tracker delivers them: one `/batch`
    /// request, `text/plain`, key and origin as a browser sends them.
    pub async fn send_batch(&self, events: &[Value]) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .post(format!(
                "{}/batch?key={}",
                self.ingest_url, self.publishable_key
            ))
            .header("Origin", SITE_ORIGIN)
            .header("Content-Type", "text/plain")
            .header(
                "User-Agent",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            )
            .timeout(Duration::from_secs(10))
            .body(serde_json::json!({ "events": events, "identifies": [] }).to_string())
            .send()
            .await
    }

    /// Sends a batch until it is accepted, retrying connection errors, `429` and `5xx` the way
    /// the tracker does (with the same event ids, so the server de-duplicates). Returns the
    /// answers that were not `200`, as `(status or 0 for a connection error, Retry-After)`.
    /// Panics on any other `4xx`, or when not accepted within `timeout`.
    pub async fn send_batch_until_accepted(
        &self,
        events: &[Value],
        timeout: Duration,
    ) -> Vec<(u16, Option<String>)> {
        let deadline = Instant::now() + timeout;
        let mut refusals = Vec::new();
        loop {
            match self.send_batch(events).await {
                Ok(response) if response.status() == 200 => return refusals,
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = response.text().await.unwrap_or_default();
                    assert!(
                        status == 429 || status >= 500,
                        "batch refused for good: {status} {body}"
                    );
                    refusals.push((status, retry_after));
                }
                Err(_) => refusals.push((0, None)),
            }
            assert!(
                Instant::now() < deadline,
                "batch not accepted within {timeout:?}; answers: {refusals:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends every batch in order, `pause` apart, each until accepted; returns all refusals.
    pub async fn stream(
        &self,
        batches: &[Vec<Value>],
        pause: Duration,
    ) -> Vec<(u16, Option<String>)> {
        let mut refusals = Vec::new();
        for batch in batches {
            refusals.extend(
                self.send_batch_until_accepted(batch, Duration::from_secs(90))
                    .await,
            );
            tokio::time::sleep(pause).await;
        }
        refusals
    }
}

/// A page view as the tracker sends it, at `at` (client clock).
pub fn page_view(
    visitor: &str,
    session: &str,
    url: &str,
    referrer: Option<&str>,
    at: time::OffsetDateTime,
) -> Value {
    let parsed = url::Url::parse(url).expect("absolute url");
    serde_json::json!({
        "event_name": "page_view",
        "client_generated_event_id": uuid::Uuid::new_v4().to_string(),
        "visitor_id": visitor,
        "session_id": session,
        "client_timestamp_utc": at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "referrer": referrer,
        "page_url": url,
        "host": parsed.host_str().unwrap_or_default(),
        "custom_properties": {"page_title": "Shop", "page_path": parsed.path()},
    })
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
}

/// `visitors` visitors with `per_visitor` page views each, one batch per view round, all within
/// the last minutes: `per_visitor` batches of `visitors` events.
pub fn page_view_batches(visitors: usize, per_visitor: usize) -> Vec<Vec<Value>> {
    let now = time::OffsetDateTime::now_utc();
    let people: Vec<(String, String)> = (0..visitors)
        .map(|_| (visitor_id(), session_id()))
        .collect();
    (0..per_visitor)
        .map(|i| {
            people
                .iter()
                .map(|(visitor, session)| {
                    page_view(
                        visitor,
                        session,
                        &format!("{SITE_ORIGIN}/page/{i}"),
                        None,
                        now - time::Duration::seconds((per_visitor - i) as i64),
                    )
                })
                .collect()
        })
        .collect()
}

/// A new visitor id in the tracker's shape.
pub fn visitor_id() -> String {
    format!("vis_{}", uuid::Uuid::new_v4())
}

/// A new session id.
pub fn session_id() -> String {
    format!("ses_{}", random(12).to_ascii_lowercase())
}
