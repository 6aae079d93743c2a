//! Test kit: `zori_api::run` in-process on 127.0.0.1:0 against the real PostgreSQL, ClickHouse
//! and NATS of this machine, with a random tenant (schema, database, stream) per test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use bytes::Bytes;
use clap::Parser;
use rand::{distr::Alphanumeric, RngExt};
use serde_json::{Map, Value};
use sqlx::{postgres::PgConnectOptions, PgPool};
use time::OffsetDateTime;
use tokio::{sync::oneshot, task::JoinHandle};
use zori_core::{
    channel::Channel,
    event::{
        ClientInfo, DeviceType, IdentifyRecord, Page, Referrer, StreamMessage, Subjects,
        TrackedEvent, Utm,
    },
};

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

pub fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect::<String>()
        .to_ascii_lowercase()
}

pub struct Harness {
    pub tenant: String,
    pub schema: String,
    pub token: String,
    pub salt: String,
    pub base_url: String,
    pub subjects: Subjects,
    pub http: reqwest::Client,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    /// Connected with `search_path` = the tenant schema.
    pub pool: PgPool,
    /// What `run` was started with.
    pub settings: zori_api::Settings,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), zori_api::Error>>>,
    cleaned: bool,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts `run` auditing the event-count rollup of every day that received events, five
    /// times a second (in production: suspect days each minute, the others within 10 minutes).
    pub async fn auditing_every_round() -> Self {
        Self::start_with(&[
            "--reconcile-interval",
            "200ms",
            "--rollup-audit-every",
            "0s",
        ])
        .await
    }

    /// Starts `run` with the default test settings plus `extra` flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        zori_service::telemetry::init("warn,zori_api=info");
        let tenant = format!("t_{}", random(12));
        let token = format!("tok_{}", random(32));
        let salt = random(24);
        let mut args: Vec<String> = [
            "zori-api",
            "--tenant-id",
            &tenant,
            "--api-token",
            &token,
            "--postgres-url",
            POSTGRES_URL,
            "--clickhouse-url",
            CLICKHOUSE_URL,
            "--nats-url",
            NATS_URL,
            "--email-salt",
            &salt,
            "--batch-wait",
            "200ms",
            "--ack-wait",
            "5s",
            "--create-schema",
            "--create-stream",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let settings = zori_api::Config::try_parse_from(&args)
            .expect("flags parse")
            .validate()
            .expect("settings are valid");
        let schema = settings.postgres_schema.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let started_with = settings.clone();
        let task = tokio::spawn(zori_api::run(settings, listener, async move {
            let _ = stop_rx.await;
        }));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(!task.is_finished(), "run ended before becoming ready");
            let ready = http
                .get(format!("{base_url}/readyz"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let nats = async_nats::connect(NATS_URL).await.unwrap();
        let js = jetstream::new(nats.clone());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(
                POSTGRES_URL
                    .parse::<PgConnectOptions>()
                    .unwrap()
                    .options([("search_path", schema.as_str())]),
            )
            .await
            .unwrap();
        Harness {
            settings: started_with,
            subjects: Subjects::for_tenant(&tenant),
            tenant,
            schema,
            token,
            salt,
            base_url,
            http,
            nats,
            js,
            pool,
            stop: Some(stop_tx),
            task: Some(task),
            cleaned: false,
        }
    }

    /// Publishes a stream message with the given `Nats-Msg-Id`; waits for the stream's ack.
    pub async fn publish(&self, message: &StreamMessage, msg_id: &str) {
        self.publish_raw(Bytes::from(serde_json::to_vec(message).unwrap()), msg_id)
            .await;
    }

    pub async fn publish_raw(&self, payload: Bytes, msg_id: &str) {
        self.js
            .send_publish(
                self.subjects.ingress.clone(),
                jetstream::context::Publish::build()
                    .payload(payload)
                    .message_id(msg_id),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// GET with the tenant's token; panics unless 200.
    pub async fn report(&self, path: &str) -> Value {
        let (status, value) = self.get(path, Some(&self.token)).await;
        assert_eq!(status, 200, "GET {path}: {value:#}");
        value
    }

    /// Polls a report until `done` holds.
    pub async fn until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.report(path).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not settle within 30 s; last: {value:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the consumer has acknowledged every message of the ingress subject.
    pub async fn drained(&self) {
        let stream = self.js.get_stream(&self.subjects.stream).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer("zori-api").await.unwrap();
            let info = consumer.info().await.unwrap().clone();
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "not all acknowledged: {info:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a query on ClickHouse in the tenant database; returns the text answer.
    pub async fn clickhouse(&self, sql: &str) -> String {
        let response = self
            .http
            .post(format!("{CLICKHOUSE_URL}/?database={}", self.schema))
            .body(sql.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {text}");
        text.trim().to_owned()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Asks `run` to shut down and waits for it to return.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("run returns within 30 s of shutdown")
                .expect("run does not panic")
                .expect("run ends cleanly");
        }
    }

    /// Stops and drops everything the test created.
    pub async fn cleanup(mut self) {
        self.stop().await;
        self.pool.close().await;
        drop_everything(self.schema.clone(), self.subjects.stream.clone()).await;
        self.cleaned = true;
    }
}

async fn drop_everything(schema: String, stream: String) {
    if let Ok(pool) = PgPool::connect(POSTGRES_URL).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await;
    }
    let _ = reqwest::Client::new()
        .post(CLICKHOUSE_URL)
        .body(format!("DROP DATABASE IF EXISTS {schema}"))
        .send()
        .await;
    if let Ok(client) = async_nats::connect(NATS_URL).await {
        let _ = jetstream::new(client).delete_stream(&stream).await;
    }
}

impl Drop for Harness {
    /// A failed test still drops its schema, database and stream.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let (schema, stream) = (self.schema.clone(), self.subjects.stream.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_everything(schema, stream));
            }
        })
        .join();
    }
}

/// A visitor id in the tracker's shape.
pub fn visitor() -> String {
    format!("vis_{}", uuid::Uuid::new_v4())
}

pub fn session() -> String {
    format!("ses_{}", random(12))
}

/// Where a page view came from.
#[derive(Default, Clone)]
pub struct From {
    pub utm_source: Option<&'static str>,
    pub utm_medium: Option<&'static str>,
    pub utm_campaign: Option<&'static str>,
    pub referrer: Option<&'static str>,
    pub channel: Option<Channel>,
}

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `n` days before now.
pub fn days_ago(n: i64) -> OffsetDateTime {
    now() - time::Duration::days(n)
}

/// A paid social visit from a UTM-tagged Twitter link.
pub const TWITTER: From = From {
    utm_source: Some("twitter"),
    utm_medium: Some("paid_social"),
    utm_campaign: Some("launch"),
    referrer: Some("t.co"),
    channel: Some(Channel::PaidSocial),
};

/// An organic search visit.
pub const GOOGLE: From = From {
    utm_source: None,
    utm_medium: None,
    utm_campaign: None,
    referrer: Some("google.com"),
    channel: Some(Channel::OrganicSearch),
};

/// A direct visit: no UTM, no referrer.
pub const DIRECT: From = From {
    utm_source: None,
    utm_medium: None,
    utm_campaign: None,
    referrer: None,
    channel: None,
};

pub fn event(
    name: &str,
    visitor: &str,
    session: &str,
    at: OffsetDateTime,
    path: &str,
    from: &From,
) -> TrackedEvent {
    TrackedEvent {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        visitor_id: visitor.to_owned(),
        session_id: session.to_owned(),
        occurred_at: at,
        received_at: at,
        page: Page {
            url: format!("https://shop.example{path}"),
            host: "shop.example".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            title: Some("Shop".to_owned()),
        },
        referrer: from.referrer.map(|host| Referrer {
            url: format!("https://{host}/"),
            host: host.to_owned(),
            path: "/".to_owned(),
        }),
        utm: Utm {
            source: from.utm_source.map(str::to_owned),
            medium: from.utm_medium.map(str::to_owned),
            campaign: from.utm_campaign.map(str::to_owned),
            term: None,
            content: None,
        },
        click_ids: BTreeMap::new(),
        channel: from.channel.unwrap_or(if from.utm_source.is_some() {
            Channel::Other
        } else if from.referrer.is_some() {
            Channel::Referral
        } else {
            Channel::Direct
        }),
        client: ClientInfo {
            browser: "Chrome".to_owned(),
            os: "Mac OSX".to_owned(),
            device: DeviceType::Desktop,
            is_bot: false,
        },
        country: Some("DE".to_owned()),
        properties: Map::new(),
        click: None,
    }
}

pub fn page_view(
    visitor: &str,
    session: &str,
    at: OffsetDateTime,
    path: &str,
    from: &From,
) -> StreamMessage {
    StreamMessage::Event(event("page_view", visitor, session, at, path, from))
}

pub fn identify(
    visitor: &str,
    app_id: Option<&str>,
    email_hash: Option<&str>,
    at: OffsetDateTime,
) -> StreamMessage {
    StreamMessage::Identify(IdentifyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        visitor_id: visitor.to_owned(),
        session_id: session(),
        occurred_at: at,
        received_at: at,
        app_id: app_id.map(str::to_owned),
        email_hash: email_hash.map(str::to_owned),
        fullname: Some("Jane Doe".to_owned()),
        traits: Map::new(),
        proof: Default::default(),
    })
}

/// Inserts a payment row the way the Stripe module stores one.
pub async fn insert_payment(
    pool: &PgPool,
    paid_at: OffsetDateTime,
    amount: i64,
    currency: &str,
    refunded: i64,
    visitor_id: Option<&str>,
    email_hash: Option<&str>,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO payments (paid_at, amount, currency, amount_refunded, visitor_id, email_hash,
                               livemode, amount_source)
         VALUES ($1, $2, $3, $4, $5, $6, false, 'charge')
         RETURNING payment_id",
    )
    .bind(paid_at)
    .bind(amount)
    .bind(currency)
    .bind(refunded)
    .bind(visitor_id)
    .bind(email_hash)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A report row by its `value` (attribution) or `name` (events) field.
pub fn row<'a>(report: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    report["rows"].as_array()?.iter().find(|r| r[key] == value)
}

/// Net revenue of a currency in a report row (0 when absent).
pub fn net(row: Option<&Value>, currency: &str) -> i64 {
    row.and_then(|r| r["revenue"].as_array())
        .and_then(|list| list.iter().find(|m| m["currency"] == currency))
        .and_then(|m| m["net"].as_i64())
        .unwrap_or(0)
}

/// `from=…&to=…` covering `days` days back to today.
pub fn range(days: i64) -> String {
    let today = OffsetDateTime::now_utc().date();
    format!("from={}&to={}", today - time::Duration::days(days), today)
}

/// A TCP proxy the test can cut (closing every open connection and refusing new ones) and
/// restore: a backend outage on demand.
pub struct Proxy {
    pub url: String,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(target: &'static str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, _) = tokio::sync::watch::channel(true);
        let up = std::sync::Arc::new(tx);
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = state.subscribe();
                if !*rx.borrow() {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { url, up }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
