//! docs/site-owner-guide.md, followed by a newcomer on the demo shop, with the real binaries and
//! services.
//!
//! `the_guide_walkthrough_credits_the_order_to_its_source` runs the guide's "Try it on the demo
//! shop" section word for word: its first block (`scripts/demo.sh` and the exports it prints) is
//! replaced by the same setup on a fresh tenant and free ports (`zori_e2e::Stack`, and the demo
//! shop started with the settings the guide names), then every later `sh` block runs in bash,
//! as written and in order; the last one (the report) is repeated until the consumer has
//! written the events. The $99 order must be credited to `twitter`, the source of the page the
//! visitor landed on.
//!
//! `the_guide_in_a_browser_credits_the_order_to_its_source` does the same steps the way the
//! guide tells a newcomer with a browser (headless Chromium, `zori_e2e::browser`): open the
//! pricing page at the guide's campaign URL, let the real tracker record the visit and hand its
//! visitor id to the page, click the button the guide names, and read the report.
//!
//! `every_payment_flow_of_the_guide_is_credited` takes the guide's other claims through the
//! same shop: Checkout, Payment Intents, Payment Links (`client_reference_id`) and
//! Subscriptions (`subscription_data.metadata`) are each credited to their own visitor's first
//! touch and counted once (Stripe sends several events per payment), and a payment without a
//! visitor id is unattributed, never "direct".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use time::OffsetDateTime;
use zori_e2e::{
    browser::Browser, free_port, page_view, session_id, visitor_id, Stack, StackOptions,
};

const GUIDE: &str = "docs/site-owner-guide.md";
const WALKTHROUGH: &str = "## Try it on the demo shop";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The demo shop, started as the guide says; killed when dropped.
struct Shop {
    child: Child,
    url: String,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh tenant whose allowed origins include the shop's, and the shop on that origin.
async fn start(prefix: &str) -> (Stack, Shop) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let stack = Stack::start_with(
        prefix,
        StackOptions {
            allowed_origins: vec![url.clone()],
        },
    )
    .await;
    let log_dir = repo().join("target/e2e-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = std::fs::File::create(log_dir.join(format!("demo-shop-{port}.log"))).unwrap();
    let child = Command::new("python3")
        .arg(repo().join("examples/demo-shop/server.py"))
        .env("ZORI_DEMO_PORT", port.to_string())
        .env("ZORI_INGEST_URL", &stack.ingest.base_url)
        .env("ZORI_API_URL", &stack.api.base_url)
        .env("ZORI_PUBLISHABLE_KEY", &stack.tenant.publishable_key)
        .env("ZORI_STRIPE_WEBHOOK_SECRET", &stack.tenant.stripe_secret)
        .env_remove("STRIPE_SECRET_KEY")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("python3 runs the demo shop");
    let mut shop = Shop { child, url };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = shop.child.try_wait() {
            panic!("the demo shop exited with {status}; see target/e2e-logs/demo-shop-{port}.log");
        }
        assert!(
            Instant::now() < deadline,
            "the demo shop did not listen on {}",
            shop.url
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (stack, shop)
}

/// The guide's walkthrough section.
fn walkthrough() -> String {
    let guide = std::fs::read_to_string(repo().join(GUIDE)).unwrap();
    let start = guide
        .find(&format!("\n{WALKTHROUGH}\n"))
        .unwrap_or_else(|| panic!("{GUIDE} has no section {WALKTHROUGH:?}"));
    let section = &guide[start + 1..];
    match section[3..].find("\n## ") {
        Some(end) => section[..end + 3].to_owned(),
        None => section.to_owned(),
    }
}

/// The fenced `sh` blocks of the guide's walkthrough section, in order.
fn walkthrough_blocks() -> Vec<String> {
    let section = walkthrough();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block in {WALKTHROUGH}");
    blocks
}

/// `export NAME=value` of a shell block.
fn exported(block: &str, name: &str) -> String {
    block
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("the setup block exports no {name}:\n{block}"))
        .to_owned()
}

/// Runs shell blocks as written, in one bash, with the setup's variables; returns the output.
fn run_steps(env: &[(&str, &str)], steps: &[String]) -> String {
    let mut script = String::from("set -euo pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!("echo '>>> step {}'\n{step}\n", i + 1));
    }
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repo())
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "a step of {GUIDE} ({WALKTHROUGH}) failed, after the last '>>> step' line:\n{text}\n\n\
         the steps:\n{script}"
    );
    text
}

fn row<'a>(report: &'a Value, value: &str) -> Option<&'a Value> {
    report["rows"]
        .as_array()?
        .iter()
        .find(|r| r["value"] == value)
}

fn net(money: Option<&Value>, currency: &str) -> i64 {
    money
        .and_then(|r| r["revenue"].as_array())
        .and_then(|list| list.iter().find(|m| m["currency"] == currency))
        .and_then(|m| m["net"].as_i64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guide_walkthrough_credits_the_order_to_its_source() {
    let blocks = walkthrough_blocks();
    assert!(
        blocks.len() >= 4,
        "setup, steps and the report: {blocks:#?}"
    );

    // The setup block is README command (a) and the values it prints: check they agree with
    // scripts/demo.sh, then do the same on a fresh tenant.
    let setup = &blocks[0];
    assert!(setup.lines().next() == Some("scripts/demo.sh"), "{setup}");
    let demo = std::fs::read_to_string(repo().join("scripts/demo.sh")).unwrap();
    for name in ["ZORI_PUBLISHABLE_KEY", "ZORI_API_TOKEN"] {
        let value = exported(setup, name);
        assert!(
            demo.contains(&format!("export {name}={value}\n")),
            "the guide's {name}={value} is not what scripts/demo.sh sets"
        );
    }
    assert_eq!(exported(setup, "SHOP"), "http://localhost:8080");
    assert!(demo.contains("ZORI_DEMO_PORT=8080 start demo-shop"));
    assert_eq!(exported(setup, "ZORI_INGEST_URL"), "http://localhost:1324");
    assert!(demo.contains("--listen 127.0.0.1:1324"));
    assert_eq!(exported(setup, "ZORI_API_URL"), "http://localhost:1323");
    assert!(demo.contains("--listen 127.0.0.1:1323"));

    let (stack, shop) = start("guide").await;
    let env = [
        ("SHOP", shop.url.as_str()),
        ("ZORI_INGEST_URL", stack.ingest.base_url.as_str()),
        ("ZORI_API_URL", stack.api.base_url.as_str()),
        (
            "ZORI_PUBLISHABLE_KEY",
            stack.tenant.publishable_key.as_str(),
        ),
        ("ZORI_API_TOKEN", stack.tenant.api_token.as_str()),
    ];

    // Steps 1 and 2, word for word.
    let (report_step, steps) = blocks[1..].split_last().unwrap();
    let output = run_steps(&env, steps);
    assert!(
        output.contains(&format!(
            "<script async src=\"{}/zori.js\" data-key=\"{}\">",
            stack.ingest.base_url, stack.tenant.publishable_key
        )),
        "step 1 shows the page's script tag:\n{output}"
    );
    assert!(
        output.contains("ACCEPTED "),
        "the page view was accepted:\n{output}"
    );
    assert!(
        output.contains("Paid Pro plan"),
        "the checkout went through:\n{output}"
    );

    // Step 3, the report, until the consumer has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let text = run_steps(&env, std::slice::from_ref(report_step));
        let json = &text[text.find('{').unwrap_or_else(|| panic!("no JSON:\n{text}"))..];
        let report: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        if net(row(&report, "twitter"), "usd") == 9900
            && row(&report, "twitter").unwrap()["visitors"] == 1
        {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the guide's report never credited the $99 to twitter:\n{report:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let twitter = row(&report, "twitter").unwrap();
    assert_eq!(twitter["customers"], 1, "{report:#}");
    assert_eq!(
        twitter["payments"], 1,
        "one payment, although Stripe sent three events: {report:#}"
    );
    assert_eq!(report["unattributed"]["payments"], 0, "{report:#}");
    assert_eq!(report["totals"]["payments"], 1, "{report:#}");
    assert!(row(&report, "(direct)").is_none(), "{report:#}");

    drop(shop);
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guide_in_a_browser_credits_the_order_to_its_source() {
    // What the guide tells a browser user: the page to open and the button to click.
    let section = walkthrough();
    let open = section
        .split('`')
        .find(|t| t.starts_with("http://localhost:8080/pricing?utm_source="))
        .unwrap_or_else(|| panic!("the walkthrough names no page to open:\n{section}"))
        .to_owned();
    let button = section
        .split('*')
        .find(|t| t.starts_with("Buy ") && t.ends_with(" with Checkout"))
        .unwrap_or_else(|| panic!("the walkthrough names no button to click:\n{section}"))
        .to_owned();
    let source = url::Url::parse(&open)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "utm_source")
        .map(|(_, v)| v.into_owned())
        .unwrap();

    let (stack, shop) = start("browser").await;
    let browser = Browser::start("site-owner-guide").await;
    browser
        .goto(&open.replace("http://localhost:8080", &shop.url))
        .await;
    // The tracker hands the page its visitor id (getVisitorId fills the order forms).
    let visitor = browser
        .wait_until(
            "the tracker's visitor id in the order form",
            "return document.querySelector('input[name=visitor_id]').value",
            Duration::from_secs(15),
        )
        .await;
    let visitor = visitor.as_str().unwrap().to_owned();
    assert!(visitor.starts_with("vis_"), "{visitor}");
    browser.screenshot("pricing").await;
    let clicked = browser
        .js(
            "const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === arguments[0]);\
             if (!b) return false; b.click(); return true;",
            vec![Value::from(button.clone())],
        )
        .await;
    assert_eq!(
        clicked,
        Value::Bool(true),
        "no button {button:?} on the pricing page"
    );
    let shown = browser
        .wait_until(
            "the thank-you page",
            "const v = document.getElementById('visitor'); return v && v.textContent",
            Duration::from_secs(15),
        )
        .await;
    browser.screenshot("thanks").await;
    assert_eq!(
        shown,
        Value::from(visitor.clone()),
        "the order carried the page's visitor id"
    );
    let webhooks = browser
        .js(
            "return document.getElementById('webhooks').textContent",
            vec![],
        )
        .await;
    assert!(
        webhooks
            .as_str()
            .unwrap()
            .contains("checkout.session.completed → 200"),
        "{webhooks}"
    );

    let report = stack
        .report_until(
            "/api/v1/attribution?dimension=source",
            Duration::from_secs(30),
            |r| {
                net(row(r, &source), "usd") == 9900
                    && row(r, &source).is_some_and(|t| t["visitors"] == 1)
            },
        )
        .await;
    assert_eq!(row(&report, &source).unwrap()["payments"], 1, "{report:#}");
    assert_eq!(report["totals"]["visitors"], 1, "{report:#}");
    let journey = stack
        .report(&format!("/api/v1/visitors/{visitor}/journey"))
        .await;
    assert_eq!(
        journey["first_touch"]["source"],
        source.as_str(),
        "{journey:#}"
    );
    assert_eq!(journey["first_touch"]["campaign"], "launch", "{journey:#}");
    assert_eq!(journey["payments"][0]["amount"], 9900, "{journey:#}");

    browser.close().await;
    drop(shop);
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_payment_flow_of_the_guide_is_credited() {
    let (stack, shop) = start("flows").await;
    let http = reqwest::Client::new();
    let now = OffsetDateTime::now_utc();

    // Each buyer lands from its own campaign (as the tracker reports a landing page).
    let buyers = [
        ("twitter", "checkout", "pro", 9900),
        ("newsletter", "payment_intent", "starter", 4900),
        ("google", "payment_link", "pro", 9900),
        ("podcast", "subscription", "team", 2900),
    ];
    let mut visitors = Vec::new();
    for (source, ..) in buyers {
        let visitor = visitor_id();
        let landing = format!(
            "{}/pricing?utm_source={source}&utm_medium=cpc",
            zori_e2e::SITE_ORIGIN
        );
        let response = stack
            .track(&page_view(&visitor, &session_id(), &landing, None, now))
            .await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        visitors.push(visitor);
    }

    for ((source, flow, product, _), visitor) in buyers.iter().zip(&visitors) {
        let response = if *flow == "payment_link" {
            // The Payment Link as the pricing page rewrote it: ?client_reference_id=<visitor id>.
            http.get(format!(
                "{}/pay/{product}?client_reference_id={visitor}",
                shop.url
            ))
            .send()
            .await
            .unwrap()
        } else {
            http.post(format!("{}/checkout", shop.url))
                .form(&[
                    ("product", *product),
                    ("flow", *flow),
                    ("visitor_id", visitor.as_str()),
                ])
                .send()
                .await
                .unwrap()
        };
        let status = response.status();
        let page = response.text().await.unwrap();
        assert_eq!(status, 200, "{source} / {flow}:\n{page}");
        assert!(
            page.contains("zori_visitor_id") || *flow == "payment_link",
            "{page}"
        );
        assert!(
            page.contains(&format!("<code id=\"visitor\">{visitor}</code>")),
            "{page}"
        );
    }
    // A buyer who refused tracking: no visitor id anywhere.
    let response = http
        .post(format!("{}/checkout", shop.url))
        .form(&[
            ("product", "starter"),
            ("flow", "checkout"),
            ("visitor_id", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );

    let report = stack
        .report_until(
            "/api/v1/attribution?dimension=source",
            Duration::from_secs(30),
            |r| {
                buyers
                    .iter()
                    .all(|(source, _, _, amount)| net(row(r, source), "usd") == *amount)
                    && r["unattributed"]["payments"] == 1
            },
        )
        .await;
    for (source, flow, _, amount) in buyers {
        let row = row(&report, source).unwrap();
        assert_eq!(row["payments"], 1, "{flow} counted once: {report:#}");
        assert_eq!(row["customers"], 1, "{flow}: {report:#}");
        assert_eq!(net(Some(row), "usd"), amount, "{flow}: {report:#}");
    }
    assert_eq!(
        net(Some(&report["unattributed"]), "usd"),
        4900,
        "{report:#}"
    );
    assert!(
        row(&report, "(direct)").is_none(),
        "nothing is folded into direct: {report:#}"
    );
    assert_eq!(report["totals"]["payments"], 5, "{report:#}");

    drop(shop);
    stack.tenant.cleanup().await;
}
