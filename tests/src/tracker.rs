//! Test kit of the browser tracker tests (tests/tests/tracker_*.rs): real headless Chromium
//! driven over the W3C WebDriver protocol (Debian's `chromium` + `chromium-driver`, installed by
//! scripts/browsers.sh), a tiny site serving the test pages and the committed tracker, and
//! readers for what reached ClickHouse and zori-ingest's metrics.
//!
//! The WebDriver client speaks the protocol with reqwest: the few commands these tests need,
//! plus chromedriver's CDP passthrough for network emulation and the browser's Do-Not-Track
//! preference. (The dashboard tests use `crate::browser`, built on fantoccini.)

use std::{
    collections::HashMap,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};

use crate::{free_port, Stack, CLICKHOUSE_URL};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The committed tracker, as zori-ingest embeds and serves it.
pub fn tracker_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tracker/zori.js")
}

/// How to launch Chromium.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    /// Extra command-line switches, e.g. `--host-resolver-rules=MAP *.shop.test 127.0.0.1`.
    pub args: Vec<String>,
    /// Sets the browser's Do-Not-Track preference (`navigator.doNotTrack == "1"`).
    pub do_not_track: bool,
}

/// A chromedriver process with one Chromium session. Dropping it kills both (their process
/// group, which this kit started); [`Browser::close`] ends the session cleanly first.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session on a fresh profile.
    pub async fn launch(options: BrowserOptions) -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/browsers.sh (scripts/test.sh does)"
        );
        let port = free_port();
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let log = std::fs::File::create(log_dir.join(format!("chromedriver-{port}.log")))
            .expect("chromedriver log");
        // A shell leads a new process group holding chromedriver and the Chromium it starts;
        // it kills the group once this test process is gone, even if it died without running
        // destructors (a killed or timed-out test run leaves no browser behind).
        let watchdog = format!(
            "{CHROMEDRIVER} --port={port} --allowed-ips=127.0.0.1 & \
             while kill -0 {test} 2>/dev/null; do sleep 1; done; kill -s KILL -- -$$",
            test = std::process::id()
        );
        let driver = Command::new("sh")
            .arg("-c")
            .arg(watchdog)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {CHROMEDRIVER}: {e}"));
        let profile = std::env::temp_dir().join(format!(
            "zori-tracker-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http: http.clone(),
            session: String::new(),
            driver,
            profile: profile.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start on {base}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut args: Vec<String> = [
            // The network is closed: without these Chromium waits on Google hosts.
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(options.args.iter().cloned());
        let body = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {"enable_do_not_track": options.do_not_track},
            }
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("json");
        let id = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session))
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path} → {status}: {value}");
        value["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    /// Navigates and waits for the load event.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn refresh(&self) {
        self.post("/refresh", json!({})).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs `script`, which ends by calling `arguments[arguments.length - 1](result)`.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// Clicks the element matching `css` as a user would (the mouse at its centre).
    pub async fn click(&self, css: &str) {
        let element = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        let id = element[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {element}"))
            .to_owned();
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// The cookies visible to the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        self.command(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn cookie(&self, name: &str) -> Option<Value> {
        self.cookies().await.into_iter().find(|c| c["name"] == name)
    }

    pub async fn delete_cookie(&self, name: &str) {
        self.command(reqwest::Method::DELETE, &format!("/cookie/{name}"), None)
            .await;
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    /// Network emulation: offline (`navigator.onLine` false, every request fails) or online.
    pub async fn set_offline(&self, offline: bool) {
        self.cdp("Network.enable", json!({})).await;
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
        )
        .await;
    }

    /// Polls the JavaScript `expression` until it is truthy; returns its value.
    pub async fn wait_for(&self, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(&format!("return {expression};"), vec![]).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "`{expression}` still falsy after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the tracker has booted on the current page.
    pub async fn wait_tracker(&self) {
        self.wait_for(
            "window.ZoriHQ && window.ZoriHQ.version",
            Duration::from_secs(10),
        )
        .await;
    }

    /// `ZoriHQ.getVisitorId()`, awaited.
    pub async fn visitor_id(&self) -> Option<String> {
        self.execute_async(
            "const done = arguments[arguments.length - 1]; ZoriHQ.getVisitorId().then(done);",
            vec![],
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// The page's localStorage and sessionStorage entries whose key starts with `zori`.
    pub async fn zori_storage(&self) -> Value {
        self.execute(
            "const out = {}; for (const s of [localStorage, sessionStorage]) \
             for (let i = 0; i < s.length; i++) { const k = s.key(i); \
             if (k.startsWith('zori')) out[k] = s.getItem(k); } return out;",
            vec![],
        )
        .await
    }

    /// Ends the session (Chromium exits), then stops chromedriver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(&self.session)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: the watchdog shell, chromedriver and Chromium. (procps `kill` needs
        // `--` before a negative process-group id.)
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        for _ in 0..100 {
            if !matches!(self.driver.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test site: HTML pages by path (any host, query ignored) and the committed tracker at
/// `/zori.js`, read from disk at each request so that tests run the current build.
pub struct PageServer {
    pub port: u16,
    pages: Arc<Mutex<HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    pub async fn start() -> PageServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the page server");
        let port = listener.local_addr().expect("addr").port();
        let pages: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let app = Router::new().fallback(serve).with_state(pages.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PageServer { port, pages, task }
    }

    /// `http://127.0.0.1:<port>`: the origin the tests allow on their tenant.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Serves `html` at `path`.
    pub fn add(&self, path: &str, html: String) {
        self.pages
            .lock()
            .expect("pages")
            .insert(path.to_owned(), html);
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    State(pages): State<Arc<Mutex<HashMap<String, String>>>>,
    request: Request,
) -> Response {
    let no_store = (header::CACHE_CONTROL, "no-store");
    let path = request.uri().path();
    if path == "/zori.js" {
        let source = std::fs::read_to_string(tracker_path()).expect("dataplane/tracker/zori.js");
        return (
            [(header::CONTENT_TYPE, "application/javascript"), no_store],
            source,
        )
            .into_response();
    }
    let page = pages.lock().expect("pages").get(path).cloned();
    match page {
        Some(html) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8"), no_store],
            html,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

/// A whole page; `head` goes before `tracker` (a clock hook or a command queue, say).
pub fn page(title: &str, head: &str, body: &str, tracker: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>{head}{tracker}\
         </head><body>{body}</body></html>"
    )
}

/// The install snippet for `stack`'s tenant: the tracker from the page's own origin, sending
/// to zori-ingest. `attributes` are extra `data-…` attributes.
pub fn tracker_tag(stack: &Stack, attributes: &str) -> String {
    format!(
        "<script async src=\"/zori.js\" data-key=\"{}\" data-base-url=\"{}\" {attributes}></script>",
        stack.tenant.publishable_key, stack.ingest.base_url
    )
}

/// The clock hook: the tracker's time is the real time plus `sessionStorage.zori_test_skew` ms.
pub const CLOCK_HOOK: &str = "<script>window.__zoriNow = () => Date.now() + \
     Number(sessionStorage.getItem('zori_test_skew') || 0);</script>";

/// Runs `sql` on the tenant's ClickHouse database; rows as JSON objects.
pub async fn clickhouse(stack: &Stack, sql: &str) -> Vec<Value> {
    let response = stack
        .http
        .post(CLICKHOUSE_URL)
        .query(&[("database", stack.tenant.schema())])
        .body(format!("{sql} FORMAT JSONEachRow"))
        .send()
        .await
        .expect("ClickHouse answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{sql} → {status}: {text}");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// The visitor's events in time order, one row per event id as the reports count them (the
/// api may store a redelivered message twice until ClickHouse merges the copies).
pub async fn events_of(stack: &Stack, visitor: &str) -> Vec<Value> {
    clickhouse(
        stack,
        &format!(
            "SELECT * FROM events WHERE visitor_id = '{}' ORDER BY occurred_ms, event_id \
             LIMIT 1 BY event_id",
            visitor.replace(['\'', '\\'], "")
        ),
    )
    .await
}

/// Polls [`events_of`] until `done` holds; returns the events.
pub async fn events_until(
    stack: &Stack,
    visitor: &str,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let events = events_of(stack, visitor).await;
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "events of {visitor} did not reach the expected state within {timeout:?}: {}",
            summary(&events)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `name path?query` per event, for assertion messages.
pub fn summary(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            let query = e["page_query"].as_str().unwrap_or_default();
            format!(
                "{} {}{}{}",
                e["name"].as_str().unwrap_or_default(),
                e["page_path"].as_str().unwrap_or_default(),
                if query.is_empty() { "" } else { "?" },
                query
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events called `name`, in order.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["name"] == name).collect()
}

/// The custom properties of an event row (stored as JSON text).
pub fn properties(event: &Value) -> Value {
    serde_json::from_str(event["properties"].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
}

/// Requests zori-ingest counted on its event routes (`/ingest`, `/identify`, `/batch` and CORS
/// preflights), read from its Prometheus metrics.
pub async fn ingest_requests(stack: &Stack) -> u64 {
    let text = stack
        .http
        .get(format!("{}/metrics", stack.ingest.base_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("zori_ingest_requests_total{"))
        .filter(|l| {
            ["ingest", "identify", "batch", "preflight"]
                .iter()
                .any(|r| l.contains(&format!("route=\"{r}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
