//! Real headless Chromium for browser tests, driven over WebDriver by `fantoccini`.
//!
//! [`Browser::start`] runs Debian's `chromedriver` (`/usr/bin/chromedriver`, driving
//! `/usr/bin/chromium`; `scripts/browsers.sh` installs both; `ZORI_CHROMEDRIVER` and
//! `ZORI_CHROMIUM` override the paths) on a free loopback port, in its own process group, and
//! opens a session with a fresh profile. Screenshots go to `target/screenshots/<test>-<view>.png`
//! so a person can look at them.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::free_port;

/// Window size of every session (CSS pixels).
pub const WINDOW: (u32, u32) = (1440, 1000);

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Where screenshots are written.
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("screenshots")
}

fn path_from_env(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// A chromedriver process and one Chromium session; both end when dropped.
pub struct Browser {
    pub client: Client,
    /// chromedriver's base URL.
    pub driver_url: String,
    /// Names screenshots: `<test>-<view>.png`.
    pub test: String,
    driver: Child,
    profile: PathBuf,
}

/// How to start a [`Browser`].
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// Names screenshots and logs.
    pub name: String,
    /// More Chromium flags (e.g. `--host-resolver-rules=…`).
    pub args: Vec<String>,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        Self {
            name: "browser".to_owned(),
            args: Vec::new(),
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session named after `test`.
    pub async fn start(test: &str) -> Browser {
        Self::launch(BrowserOptions {
            name: test.to_owned(),
            ..BrowserOptions::default()
        })
        .await
    }

    /// Starts chromedriver and a headless Chromium session with `options`.
    pub async fn launch(options: BrowserOptions) -> Browser {
        let test = options.name.as_str();
        let chromedriver = path_from_env("ZORI_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = path_from_env("ZORI_CHROMIUM", "/usr/bin/chromium");
        for path in [&chromedriver, &chromium] {
            assert!(
                path.exists(),
                "{} is missing: run scripts/browsers.sh (installs Debian's chromium and chromium-driver)",
                path.display()
            );
        }
        let port = free_port();
        let logs = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                logs.join(format!("chromedriver-{test}-{port}.log"))
                    .display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that dropping the browser ends chromedriver and every
        // Chromium process it started, and nothing else.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", chromedriver.display()));
        let profile = std::env::temp_dir().join(format!(
            "zori-chromium-{test}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let mut guard = DriverGuard {
            driver: Some(driver),
            profile: profile.clone(),
        };

        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {url} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(options.args.iter().cloned());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        };
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let client = builder
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no Chromium session from chromedriver: {e}"));
        client
            .set_window_size(WINDOW.0, WINDOW.1)
            .await
            .expect("set window size");
        Browser {
            client,
            driver_url: url,
            test: test.to_owned(),
            driver: guard.driver.take().expect("driver"),
            profile,
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("failed to open {url}: {e}"));
    }

    /// Clicks the first element matching the CSS `selector` (waiting for it to exist).
    pub async fn click(&self, selector: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.client.find(Locator::Css(selector)).await {
                Ok(element) => {
                    element
                        .click()
                        .await
                        .unwrap_or_else(|e| panic!("failed to click {selector}: {e}"));
                    return;
                }
                Err(e) if Instant::now() >= deadline => panic!("no element {selector}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A cookie of the current page as JSON (`name`, `value`, `path`, `domain`, `http_only`,
    /// `secure`, `same_site`), as the browser holds it (HttpOnly ones included).
    pub async fn cookie(&self, name: &str) -> Option<Value> {
        let cookies = self.client.get_all_cookies().await.ok()?;
        cookies.into_iter().find(|c| c.name() == name).map(|c| {
            json!({
                "name": c.name(),
                "value": c.value(),
                "path": c.path(),
                "domain": c.domain(),
                "http_only": c.http_only(),
                "secure": c.secure(),
                "same_site": c.same_site().map(|s| s.to_string()),
            })
        })
    }

    /// Polls `script` until it returns something other than null / false / "" / 0 and returns
    /// that; on timeout, writes a `<view>-timeout` screenshot and panics with `what`.
    pub async fn wait_until(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            let done = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if done {
                return value;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("timeout").await;
                let text = self
                    .client
                    .execute(
                        "return document.body ? document.body.innerText.slice(0, 4000) : ''",
                        vec![],
                    )
                    .await
                    .unwrap_or(Value::Null);
                let url = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {what} at {url} (screenshot {})\npage text:\n{}",
                    shot.display(),
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a PNG of the whole page to `target/screenshots/<test>-<view>.png`.
    pub async fn screenshot(&self, view: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{view}.png", self.test));
        // Grow the window to the page's height (plus the browser's own frame) so the picture
        // shows all of it.
        let sizes = self
            .client
            .execute(
                "return [Math.ceil(Math.max(document.documentElement.scrollHeight, \
                   document.body ? document.body.scrollHeight : 0)), \
                   Math.max(0, window.outerHeight - window.innerHeight)]",
                vec![],
            )
            .await
            .unwrap_or(Value::Null);
        let page = sizes[0].as_u64().unwrap_or(u64::from(WINDOW.1)) as u32;
        let frame = sizes[1].as_u64().unwrap_or(0) as u32;
        let height = (page + frame).clamp(WINDOW.1, 8000);
        let _ = self.client.set_window_size(WINDOW.0, height).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let _ = self.client.set_window_size(WINDOW.0, WINDOW.1).await;
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session and chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills the process group led by `child` (chromedriver and the browsers it started).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Cleans up if starting the session fails half way.
struct DriverGuard {
    driver: Option<Child>,
    profile: PathBuf,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            kill_group(&mut driver);
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}
