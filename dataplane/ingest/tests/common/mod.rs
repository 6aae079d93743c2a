//! Test kit: a `zori-ingest` server started in-process with `run` on 127.0.0.1:0 for a fresh
//! tenant on the real NATS and Redis, plus a reader of what reached the tenant's stream.

#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use async_nats::jetstream;
use clap::Parser;
use serde_json::{json, Value};
use tokio::{sync::oneshot, task::JoinHandle};
use zori_core::event::StreamMessage;
use zori_ingest::{Config, Settings};

pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const ORIGIN: &str = "https://shop.example.com";
pub const HOST: &str = "shop.example.com";
pub const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

pub fn random_tenant() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Settings for a fresh tenant; `extra` flags override the defaults (last one wins).
pub fn settings(tenant: &str, extra: &[&str]) -> Settings {
    let key = format!("zori_pt_{tenant}_0123456789");
    let mut args: Vec<String> = [
        "zori-ingest",
        "--tenant-id",
        tenant,
        "--listen",
        "127.0.0.1:0",
        "--publishable-key",
        &key,
        "--allowed-origins",
        ORIGIN,
        "--nats-url",
        NATS_URL,
        "--redis-url",
        REDIS_URL,
        "--email-salt",
        "test-salt-0123456789",
        "--create-stream",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::try_parse_from(args)
        .expect("flags parse")
        .validate()
        .expect("settings are valid")
}

pub struct TestServer {
    pub tenant: String,
    pub key: String,
    pub stream: String,
    pub base: String,
    pub http: reqwest::Client,
    pub js: jetstream::Context,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), zori_ingest::Error>>>,
}

impl TestServer {
    pub async fn start(extra: &[&str]) -> TestServer {
        Self::start_with(&random_tenant(), extra).await
    }

    pub async fn start_with(tenant: &str, extra: &[&str]) -> TestServer {
        let settings = settings(tenant, extra);
        Self::start_settings(settings).await
    }

    pub async fn start_settings(settings: Settings) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let tenant = settings.tenant_id.clone();
        let key = settings.publishable_key.expose().to_owned();
        let stream = settings.subjects.stream.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(zori_ingest::run(settings, listener, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .user_agent(CHROME)
            .build()
            .expect("http client");
        let base = format!("http://{addr}");
        // The server answers as soon as `run` has connected and bound its routes.
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(response) = http.get(format!("{base}/healthz")).send().await {
                if response.status() == 200 {
                    ready = true;
                    break;
                }
            }
            if task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !ready {
            let outcome = task.await;
            panic!("zori-ingest did not start: {outcome:?}");
        }
        let nats = async_nats::connect(NATS_URL).await.expect("NATS is up");
        TestServer {
            tenant,
            key,
            stream,
            base,
            http,
            js: jetstream::new(nats),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST with the key header and the allowed Origin.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("X-Zori-PT", &self.key)
            .header("Origin", ORIGIN)
    }

    pub async fn track(&self, event: &Value) -> reqwest::Response {
        self.post("/ingest")
            .json(event)
            .send()
            .await
            .expect("ingest answers")
    }

    /// Every message in the tenant's stream, read with an ephemeral pull consumer.
    pub async fn published(&self) -> Vec<Published> {
        read_stream(&self.js, &self.stream).await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts the server down (draining in-flight requests) and checks `run` ended cleanly.
    pub async fn wait_stopped(&mut self) {
        self.trigger_shutdown();
        if let Some(task) = self.task.take() {
            let outcome = tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("run returns after shutdown")
                .expect("run does not panic");
            outcome.expect("run ends without error");
        }
    }

    /// [`Self::wait_stopped`], then deletes the tenant's stream.
    pub async fn stop(mut self) {
        self.wait_stopped().await;
        let _ = self.js.delete_stream(&self.stream).await;
        self.stream.clear();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that failed before `stop`: still remove its stream.
        if !self.stream.is_empty() {
            let stream = self.stream.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        if let Ok(client) = async_nats::connect(NATS_URL).await {
                            let _ = jetstream::new(client).delete_stream(&stream).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

pub struct Published {
    pub msg_id: Option<String>,
    pub payload: String,
    pub message: StreamMessage,
}

pub async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<Published> {
    // Direct reads by sequence: they consume nothing, so they work on the work-queue stream
    // (where a second consumer is not allowed) without changing what it holds.
    let mut stream = js.get_stream(stream).await.expect("stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue; // removed (deleted or interior gap)
        };
        let msg_id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string());
        let payload = String::from_utf8(message.payload.to_vec()).expect("utf-8 payload");
        let parsed: StreamMessage = serde_json::from_str(&payload).expect("a StreamMessage");
        out.push(Published {
            msg_id,
            payload,
            message: parsed,
        });
    }
    out
}

/// Sends a raw HTTP/1.1 request in pieces (each written after its delay) and returns the raw
/// response (the connection is closed by the request's `Connection: close`).
pub async fn raw_http(base: String, pieces: Vec<(Duration, Vec<u8>)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for (delay, piece) in pieces {
        tokio::time::sleep(delay).await;
        if tcp.write_all(&piece).await.is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An event as the original script sends it (zori-spec §1.3), on an allowed page.
pub fn event(name: &str, visitor: &str) -> Value {
    json!({
        "event_name": name,
        "client_generated_event_id": new_id(),
        "visitor_id": visitor,
        "session_id": "ses_lx2k9a_abc1234",
        "client_timestamp_utc": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("timestamp"),
        "user_agent": CHROME,
        "referrer": "https://www.google.com/",
        "page_url": "/pricing",
        "host": HOST,
        "utm_parameters": {"utm_source": "newsletter", "utm_medium": "email"},
        "custom_properties": {"page_title": "Pricing"},
    })
}

pub fn visitor() -> String {
    format!("vis_{}", new_id())
}

pub async fn error_of(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("json error body");
    body["error"].as_str().expect("error field").to_owned()
}
