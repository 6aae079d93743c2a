//! The dashboard in real headless Chromium, served by the real zori-api binary, for a tenant
//! seeded through the real zori-ingest and signed Stripe webhooks. Every number the page shows
//! is compared with what the reports API answers for the same query. Screenshots of every view
//! land in target/screenshots/dashboard_*.png.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use fantoccini::Locator;
use serde_json::{json, Value};
use time::{Date, OffsetDateTime};
use zori_core::stripe::fixtures::ApiVersion;
use zori_e2e::{
    browser::Browser, free_port, session_id, visitor_id, Process, Stack, StackOptions, Tenant,
    SITE_ORIGIN,
};

const WAIT: Duration = Duration::from_secs(30);
/// The `--reconcile-interval` these tests give zori-api (60 s by default), so that a payment
/// whose webhook raced its visitor's first batch is credited within seconds.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
const DESKTOP: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
const MOBILE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const TABLET: &str = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// A seeded tenant: the seed's journey plus a few more visitors, currencies and an
/// unattributed payment.
struct Seed {
    stack: Stack,
    from: Date,
    to: Date,
    /// The seed's visitor: Twitter day 1, direct day 5, Google day 12, $99 on day 14.
    journey_visitor: String,
    /// An organic-search visitor on a phone.
    mobile_visitor: String,
}

impl Seed {
    /// `from=…&to=…` of the seeded fortnight.
    fn range(&self) -> String {
        format!("from={}&to={}", self.from, self.to)
    }

    fn base(&self) -> &str {
        &self.stack.api.base_url
    }

    fn token(&self) -> &str {
        &self.stack.tenant.api_token
    }
}

/// Both binaries for a fresh tenant; zori-ingest reads the client address from
/// X-Forwarded-For so visitors can come from several countries.
async fn start_stack(prefix: &str) -> Stack {
    let tenant = Tenant::new(prefix);
    let ingest_port = free_port();
    let api_port = free_port();
    let mut ingest_args = tenant.ingest_args(ingest_port);
    ingest_args.extend([
        "--client-ip-header".to_owned(),
        "X-Forwarded-For".to_owned(),
    ]);
    let ingest = Process::start("zori-ingest", ingest_port, &ingest_args).await;
    let mut api_args = tenant.api_args(api_port);
    api_args.extend([
        "--reconcile-interval".to_owned(),
        format!("{}s", RECONCILE_INTERVAL.as_secs()),
    ]);
    let api = Process::start("zori-api", api_port, &api_args).await;
    Stack {
        tenant,
        ingest,
        api,
        api_port,
        ingest_port,
        options: StackOptions::default(),
        http: reqwest::Client::new(),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

struct Hit<'a> {
    name: &'a str,
    visitor: &'a str,
    session: &'a str,
    url: String,
    referrer: Option<&'a str>,
    at: OffsetDateTime,
    user_agent: &'a str,
    ip: &'a str,
    props: Value,
}

async fn send(stack: &Stack, hit: Hit<'_>) {
    let parsed = url::Url::parse(&hit.url).unwrap();
    let mut props = json!({"page_title": "Shop", "page_path": parsed.path()});
    if let (Value::Object(p), Value::Object(extra)) = (&mut props, hit.props) {
        p.extend(extra);
    }
    let body = json!({
        "event_name": hit.name,
        "client_generated_event_id": uuid::Uuid::new_v4().to_string(),
        "visitor_id": hit.visitor,
        "session_id": hit.session,
        "client_timestamp_utc": rfc3339(hit.at),
        "referrer": hit.referrer,
        "page_url": hit.url,
        "host": parsed.host_str().unwrap_or_default(),
        "custom_properties": props,
    });
    let response = stack
        .http
        .post(format!("{}/ingest", stack.ingest.base_url))
        .header("X-Zori-PT", &stack.tenant.publishable_key)
        .header("Origin", SITE_ORIGIN)
        .header("User-Agent", hit.user_agent)
        .header("X-Forwarded-For", hit.ip)
        .json(&body)
        .send()
        .await
        .expect("ingest answers");
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
}

/// A paid Stripe Checkout session (`zori_visitor_id` in its metadata when given).
fn checkout_completed(visitor: Option<&str>, amount: i64, currency: &str) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let metadata = match visitor {
        Some(v) => json!({"zori_visitor_id": v}),
        None => json!({}),
    };
    json!({
        "id": format!("evt_{suffix}"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": false,
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": format!("cs_test_{suffix}"),
            "object": "checkout.session",
            "amount_total": amount,
            "currency": currency,
            "created": now,
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "payment_intent": format!("pi_{suffix}"),
            "customer": format!("cus_{suffix}"),
            "customer_details": {"email": format!("buyer-{suffix}@example.com")},
            "metadata": metadata
        }}
    })
    .to_string()
}

async fn seed(prefix: &str) -> Seed {
    let stack = start_stack(prefix).await;
    let now = OffsetDateTime::now_utc();
    let day = |n: i64| now - time::Duration::days(14 - n);
    let page = |path: &str| format!("{SITE_ORIGIN}{path}");
    let none = || json!({});

    let journey = visitor_id();
    let (g1, g2, news, d1, d2, live) = (
        visitor_id(),
        visitor_id(),
        visitor_id(),
        visitor_id(),
        visitor_id(),
        visitor_id(),
    );
    let hit = |name, visitor, session, url: String, referrer, at, user_agent, ip| Hit {
        name,
        visitor,
        session,
        url,
        referrer,
        at,
        user_agent,
        ip,
        props: none(),
    };
    let (s1, s2, s3) = (session_id(), session_id(), session_id());
    let (sg1, sg2, sn, sd1, sd2, sl) = (
        session_id(),
        session_id(),
        session_id(),
        session_id(),
        session_id(),
        session_id(),
    );
    let hits = vec![
        // The seed's journey.
        hit(
            "page_view",
            &journey,
            &s1,
            page("/?utm_source=twitter&utm_medium=paid_social&utm_campaign=launch"),
            Some("https://t.co/xyz"),
            day(1),
            DESKTOP,
            "8.8.8.8",
        ),
        hit(
            "page_view",
            &journey,
            &s2,
            page("/pricing"),
            None,
            day(5),
            DESKTOP,
            "8.8.8.8",
        ),
        hit(
            "page_view",
            &journey,
            &s3,
            page("/features"),
            Some("https://www.google.com/"),
            day(12),
            DESKTOP,
            "8.8.8.8",
        ),
        hit(
            "page_view",
            &journey,
            &s3,
            page("/pricing"),
            None,
            day(12) + time::Duration::minutes(2),
            DESKTOP,
            "8.8.8.8",
        ),
        // Organic search: one on a desktop who pays in euros, one on a phone.
        hit(
            "page_view",
            &g1,
            &sg1,
            page("/blog/attribution"),
            Some("https://www.google.com/"),
            day(10),
            DESKTOP,
            "46.4.0.1",
        ),
        hit(
            "page_view",
            &g1,
            &sg1,
            page("/pricing"),
            None,
            day(10) + time::Duration::minutes(3),
            DESKTOP,
            "46.4.0.1",
        ),
        hit(
            "page_view",
            &g2,
            &sg2,
            page("/blog/attribution"),
            Some("https://www.google.com/"),
            day(11),
            MOBILE,
            "46.4.0.1",
        ),
        // A newsletter reader on a phone who pays in yen (a zero-decimal currency).
        hit(
            "page_view",
            &news,
            &sn,
            page("/?utm_source=newsletter&utm_medium=email&utm_campaign=spring"),
            None,
            now - time::Duration::hours(40),
            MOBILE,
            "133.11.0.1",
        ),
        // Direct visitors; one signs up today on a tablet.
        hit(
            "page_view",
            &d1,
            &sd1,
            page("/"),
            None,
            day(3),
            DESKTOP,
            "81.2.69.160",
        ),
        hit(
            "page_view",
            &d2,
            &sd2,
            page("/signup"),
            None,
            now - time::Duration::minutes(20),
            TABLET,
            "81.2.69.160",
        ),
        Hit {
            props: json!({"plan": "pro"}),
            ..hit(
                "signup",
                &d2,
                &sd2,
                page("/signup"),
                None,
                now - time::Duration::minutes(19),
                TABLET,
                "81.2.69.160",
            )
        },
        // Someone on the site right now.
        hit(
            "page_view",
            &live,
            &sl,
            page("/"),
            Some("https://news.ycombinator.com/"),
            now - time::Duration::seconds(30),
            DESKTOP,
            "8.8.8.8",
        ),
    ];
    let page_views = hits.iter().filter(|h| h.name == "page_view").count() as u64;
    for h in hits {
        send(&stack, h).await;
    }
    for body in [
        checkout_completed(Some(&journey), 9900, "usd"),
        checkout_completed(Some(&g1), 4900, "eur"),
        checkout_completed(Some(&news), 5000, "jpy"),
        checkout_completed(None, 5000, "usd"),
    ] {
        let response = stack.stripe_webhook(&body).await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }

    let seed = Seed {
        stack,
        from: day(0).date(),
        to: now.date(),
        journey_visitor: journey,
        mobile_visitor: g2,
    };
    let range = seed.range();
    seed.stack
        .report_until(&format!("/api/v1/overview?{range}"), WAIT, |r| {
            r["visitors"] == 7 && r["payments"] == 4
        })
        .await;
    // A payment whose webhook raced its visitor's first batch is credited by zori-api's next
    // reconcile round (docs/api.md), not at once.
    seed.stack
        .report_until(
            &format!("/api/v1/attribution?{range}&dimension=source"),
            WAIT + RECONCILE_INTERVAL,
            |r| r["unattributed"]["payments"] == 1,
        )
        .await;
    seed.stack
        .report_until(&format!("/api/v1/events?{range}"), WAIT, |r| {
            r["rows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|row| row["name"] == "page_view" && row["count"] == page_views)
        })
        .await;
    seed.stack
        .report_until(
            &format!("/api/v1/visitors/{}/journey", seed.journey_visitor),
            WAIT,
            |j| {
                j["touches"].as_array().is_some_and(|t| t.len() == 3)
                    && j["payments"].as_array().is_some_and(|p| p.len() == 1)
            },
        )
        .await;
    seed
}

// ---------- Browser helpers ----------

/// Waits until the view shows what its URL asks for.
async fn ready(b: &Browser) {
    b.wait_until(
        "the view to be ready",
        "const v = document.getElementById('view');
         return !document.getElementById('app').hidden && v.dataset.ready === location.search;",
        WAIT,
    )
    .await;
}

async fn sign_in(b: &Browser, token: &str) {
    b.wait_until(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
        WAIT,
    )
    .await;
    let input = b.client.find(Locator::Id("token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    b.client
        .find(Locator::Id("signin-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn open_signed_in(b: &Browser, seed: &Seed, path: &str) {
    b.goto(&format!("{}{path}", seed.base())).await;
    sign_in(b, seed.token()).await;
    ready(b).await;
}

/// Clicks `selector` and waits for the view it leads to.
async fn click(b: &Browser, selector: &str) {
    b.click(selector).await;
    ready(b).await;
}

async fn select(b: &Browser, id: &str, value: &str) {
    b.client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
    ready(b).await;
}

/// Types into a filter box and leaves it (which applies it).
async fn type_filter(b: &Browser, id: &str, value: &str) {
    let input = b.client.find(Locator::Id(id)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(&format!("{value}\t")).await.unwrap();
    ready(b).await;
}

/// The query string of the page's URL.
async fn query(b: &Browser) -> String {
    b.client
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or_default()
        .to_owned()
}

/// A table as `row key → column → visible text`.
async fn table(b: &Browser, id: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let rows = b
        .js(
            "const t = document.getElementById(arguments[0]);
             if (!t) return [];
             return [...t.querySelectorAll('tbody tr, tfoot tr')].map((tr) => [
               tr.dataset.row || '',
               Object.fromEntries([...tr.cells].map((td) => [td.dataset.col, td.innerText.trim()])),
             ]);",
            vec![json!(id)],
        )
        .await;
    serde_json::from_value::<Vec<(String, BTreeMap<String, String>)>>(rows)
        .unwrap()
        .into_iter()
        .collect()
}

/// Row keys of a table, in the order shown.
async fn row_order(b: &Browser, id: &str) -> Vec<String> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr')].map((tr) => tr.dataset.row || '')",
            vec![json!(id)],
        )
        .await;
    serde_json::from_value(v).unwrap()
}

// ---------- Expected text, formatted as the page formats it (en-US) ----------

fn group(int: &str) -> String {
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// How the page shows an API money value (`currency`, `formatted`).
fn shown(m: &Value) -> String {
    let currency = m["currency"].as_str().unwrap();
    let formatted = m["formatted"].as_str().unwrap();
    let (int, frac) = formatted
        .split_once('.')
        .map_or((formatted, None), |(i, f)| (i, Some(f)));
    let number = match frac {
        Some(f) => format!("{}.{f}", group(int)),
        None => group(int),
    };
    let symbol = match currency {
        "usd" => "$",
        "eur" => "€",
        "jpy" => "¥",
        "gbp" => "£",
        other => panic!("add a symbol for {other}"),
    };
    format!("{symbol}{number}")
}

fn money_cell(list: &Value) -> String {
    let list = list.as_array().unwrap();
    if list.is_empty() {
        return "—".to_owned();
    }
    list.iter().map(shown).collect::<Vec<_>>().join("\n")
}

/// A percentage as the page shows it, read back as a fraction.
fn percent(text: &str) -> Option<f64> {
    text.strip_suffix('%')
        .map(|n| n.replace(',', "").parse::<f64>().unwrap() / 100.0)
}

fn assert_rate(ui: &str, api: &Value, what: &str) {
    match api.as_f64() {
        None => assert_eq!(ui, "—", "{what}"),
        Some(rate) => {
            let shown = percent(ui).unwrap_or_else(|| panic!("{what}: {ui:?} is not a percentage"));
            assert!(
                (shown - rate).abs() < 0.00006,
                "{what}: page {ui}, API {rate}"
            );
        }
    }
}

/// The page's breakdown table shows exactly the API's rows, unattributed and totals.
fn assert_breakdown(ui: &BTreeMap<String, BTreeMap<String, String>>, api: &Value) {
    let rows = api["rows"].as_array().unwrap();
    assert_eq!(
        ui.len(),
        rows.len() + 2,
        "one row per API row, plus unattributed and total: {ui:#?}\n{api:#}"
    );
    for row in rows {
        let value = row["value"].as_str().unwrap();
        let cells = ui
            .get(value)
            .unwrap_or_else(|| panic!("no row {value} on the page: {ui:#?}"));
        assert_eq!(
            cells["visitors"],
            group(&row["visitors"].to_string()),
            "{value}"
        );
        assert_eq!(
            cells["customers"],
            group(&row["customers"].to_string()),
            "{value}"
        );
        assert_rate(&cells["conversion_rate"], &row["conversion_rate"], value);
        assert_eq!(cells["revenue"], money_cell(&row["revenue"]), "{value}");
        assert_eq!(
            cells["revenue_per_visitor"],
            money_cell(&row["revenue_per_visitor"]),
            "{value}"
        );
    }
    let unattributed = &ui["(unattributed)"];
    assert_eq!(
        unattributed["customers"],
        api["unattributed"]["customers"].to_string()
    );
    assert_eq!(
        unattributed["revenue"],
        money_cell(&api["unattributed"]["revenue"])
    );
    let total = &ui["(total)"];
    assert_eq!(total["visitors"], api["totals"]["visitors"].to_string());
    assert_eq!(total["customers"], api["totals"]["customers"].to_string());
    assert_eq!(total["revenue"], money_cell(&api["totals"]["revenue"]));
    assert_rate(
        &total["conversion_rate"],
        &api["totals"]["conversion_rate"],
        "total",
    );
}

/// The overview's cards show the API's numbers and changes.
async fn assert_overview(b: &Browser, api: &Value) {
    let kpis = b
        .js(
            "const kpi = (k) => document.querySelector(`[data-kpi=\"${k}\"]`);
             const value = (k) => kpi(k).querySelector('.kpi-value');
             const money = (k) => [...kpi(k).querySelectorAll('.change-line')].map((l) => ({
               currency: l.dataset.currency,
               text: l.querySelector('.money-line').innerText.trim(),
               change: l.querySelector('[data-change]') ? Number(l.querySelector('[data-change]').dataset.change) : null,
             }));
             const change = (k) => { const c = kpi(k).querySelector('[data-change]'); return c ? Number(c.dataset.change) : null; };
             return {
               visitors: value('visitors').innerText.trim(),
               customers: value('customers').innerText.trim(),
               conversion: value('conversion_rate').innerText.trim(),
               visitors_change: change('visitors'),
               customers_change: change('customers'),
               revenue: money('revenue'),
               per_visitor: money('revenue_per_visitor'),
               days: document.querySelectorAll('#chart .day').length,
             };",
            vec![],
        )
        .await;
    assert_eq!(
        kpis["visitors"],
        group(&api["visitors"].to_string()),
        "{kpis:#}"
    );
    assert_eq!(
        kpis["customers"],
        group(&api["customers"].to_string()),
        "{kpis:#}"
    );
    assert_rate(
        kpis["conversion"].as_str().unwrap(),
        &api["conversion_rate"],
        "conversion rate",
    );
    let close = |ui: &Value, api: &Value| match (ui.as_f64(), api.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (None, None) => true,
        // A change of 0 is shown as "± 0%" without a data-change value.
        (None, Some(b)) => b.abs() < 0.0005,
        _ => false,
    };
    assert!(
        close(&kpis["visitors_change"], &api["change"]["visitors"]),
        "{kpis:#}\n{api:#}"
    );
    assert!(
        close(&kpis["customers_change"], &api["change"]["customers"]),
        "{kpis:#}\n{api:#}"
    );
    for (key, api_key) in [
        ("revenue", "revenue"),
        ("per_visitor", "revenue_per_visitor"),
    ] {
        let shown_list = kpis[key].as_array().unwrap();
        let api_list = api[api_key].as_array().unwrap();
        assert_eq!(shown_list.len(), api_list.len(), "{key}: {kpis:#}");
        for (ui, m) in shown_list.iter().zip(api_list) {
            assert_eq!(ui["currency"], m["currency"]);
            assert_eq!(ui["text"].as_str().unwrap(), shown(m), "{key}");
            let change = api["change"][api_key]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["currency"] == m["currency"])
                .map_or(Value::Null, |c| c["change"].clone());
            assert!(
                close(&ui["change"], &change),
                "{key} change: {ui} vs {change}"
            );
        }
    }
    let days = (|| {
        let from = Date::parse(
            api["from"].as_str()?,
            &time::format_description::well_known::Iso8601::DATE,
        )
        .ok()?;
        let to = Date::parse(
            api["to"].as_str()?,
            &time::format_description::well_known::Iso8601::DATE,
        )
        .ok()?;
        Some((to - from).whole_days() + 1)
    })()
    .unwrap();
    assert_eq!(kpis["days"], days, "one chart column per day");
}

/// Waits for the live badge to show what the API says (both move as time passes).
async fn assert_live(b: &Browser, seed: &Seed, filters: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let api = seed.stack.report(&format!("/api/v1/live?{filters}")).await["visitors"].clone();
        let ui = b
            .js(
                "const l = document.getElementById('live'); return [l.dataset.live, l.dataset.query, document.getElementById('live-count').innerText];",
                vec![],
            )
            .await;
        let expected = api.to_string();
        let shown = |i: usize| ui[i].as_str() == Some(expected.as_str());
        if shown(0) && ui[1] == filters && shown(2) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "live badge {ui} never matched the API's {api}"
        );
        // The badge refreshes every 30 s, and on every sign-in: nudge it through a reload.
        b.client.refresh().await.unwrap();
        ready(b).await;
    }
}

// ---------- Tests ----------

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_sign_in_and_overview_match_the_api() {
    let seed = seed("dash_overview").await;
    let b = Browser::start("dashboard_overview").await;

    // A wrong token: a clear message, no cookie.
    b.goto(seed.base()).await;
    sign_in(&b, "zori_at_this-is-not-the-token").await;
    let message = b
        .wait_until(
            "the wrong-token message",
            "const e = document.getElementById('signin-error'); return !e.hidden && e.innerText;",
            WAIT,
        )
        .await;
    assert!(message.as_str().unwrap().contains("not valid"), "{message}");
    assert!(b.cookie("zori_session").await.is_none());
    b.screenshot("signin-wrong-token").await;

    // The right token: the overview of the last 7 days, with the previous 7 to compare.
    sign_in(&b, seed.token()).await;
    ready(&b).await;
    let cookie = b.cookie("zori_session").await.expect("a session cookie");
    assert_eq!(cookie["http_only"], true, "{cookie}");
    assert_eq!(cookie["same_site"], "Strict", "{cookie}");
    assert_eq!(cookie["secure"], false, "plain http here: {cookie}");
    assert!(!cookie["value"].as_str().unwrap().contains(seed.token()));
    assert_eq!(
        b.js("return document.cookie", vec![]).await,
        "",
        "HttpOnly: scripts never see the session"
    );

    // Default: the last 30 days.
    let api = seed
        .stack
        .report(&format!(
            "/api/v1/overview?from={}&to={}&compare=previous",
            seed.to - time::Duration::days(29),
            seed.to
        ))
        .await;
    assert_overview(&b, &api).await;
    assert_eq!(api["visitors"], 7);
    assert_eq!(api["unattributed"]["payments"], 1);
    let note = b
        .js(
            "return document.querySelector('[data-kpi=\"revenue\"] .kpi-sub').innerText",
            vec![],
        )
        .await;
    assert!(
        note.as_str().unwrap().contains("$50.00 unattributed"),
        "{note}"
    );

    // Last 7 days: a previous period with data, so changes are real numbers.
    select(&b, "range", "7d").await;
    assert_eq!(query(&b).await, "range=7d");
    let api = seed
        .stack
        .report(&format!(
            "/api/v1/overview?from={}&to={}&compare=previous",
            seed.to - time::Duration::days(6),
            seed.to
        ))
        .await;
    assert!(api["change"]["visitors"].as_f64().is_some(), "{api:#}");
    assert_overview(&b, &api).await;
    assert_live(&b, &seed, "").await;
    b.screenshot("overview").await;

    // Signing out ends the session for the page.
    b.click("#signout").await;
    b.wait_until(
        "the sign-in form after signing out",
        "return !document.getElementById('signin').hidden",
        WAIT,
    )
    .await;
    assert!(b.cookie("zori_session").await.is_none());

    b.close().await;
    seed.stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_the_seed_journey_twitter_and_99_dollars() {
    let seed = seed("dash_journey").await;
    let b = Browser::start("dashboard_journey").await;
    let range = seed.range();

    open_signed_in(
        &b,
        &seed,
        &format!("/?view=attribution&dimension=source&{range}"),
    )
    .await;
    let api = seed
        .stack
        .report(&format!("/api/v1/attribution?dimension=source&{range}"))
        .await;
    let ui = table(&b, "breakdown").await;
    assert_breakdown(&ui, &api);
    assert_eq!(ui["twitter"]["revenue"], "$99.00", "{ui:#?}");
    assert_eq!(ui["twitter"]["visitors"], "1");
    assert!(!ui.contains_key("google.com") || ui["google.com"]["revenue"] != "$99.00");
    assert_eq!(
        ui["(unattributed)"]["revenue"], "$50.00",
        "shown, never folded into direct"
    );
    assert_eq!(
        ui["newsletter"]["revenue"], "¥5,000",
        "zero-decimal currency"
    );
    b.screenshot("attribution-source").await;

    // Sort by visitors, ascending and descending: the URL keeps the order.
    click(&b, "th[data-col=visitors] button").await;
    assert!(query(&b).await.contains("sort=visitors&dir=desc"));
    let order = row_order(&b, "breakdown").await;
    let visitors = |key: &str| {
        api["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["value"] == key)
            .map(|r| r["visitors"].as_i64().unwrap())
    };
    let shown_visitors: Vec<i64> = order.iter().filter_map(|k| visitors(k)).collect();
    assert!(
        shown_visitors.windows(2).all(|w| w[0] >= w[1]),
        "{order:?} {shown_visitors:?}"
    );
    assert_eq!(
        order.last().unwrap(),
        "(unattributed)",
        "unattributed stays last"
    );
    click(&b, "th[data-col=visitors] button").await;
    assert!(query(&b).await.contains("dir=asc"));
    let order = row_order(&b, "breakdown").await;
    let shown_visitors: Vec<i64> = order.iter().filter_map(|k| visitors(k)).collect();
    assert!(shown_visitors.windows(2).all(|w| w[0] <= w[1]), "{order:?}");

    // Other dimensions, from the tabs.
    for (dimension, expect) in [("campaign", "launch"), ("channel", "paid_social")] {
        click(&b, &format!("button[data-dimension={dimension}]")).await;
        let api = seed
            .stack
            .report(&format!(
                "/api/v1/attribution?dimension={dimension}&{range}"
            ))
            .await;
        let ui = table(&b, "breakdown").await;
        assert_breakdown(&ui, &api);
        assert_eq!(ui[expect]["revenue"], "$99.00", "{dimension}: {ui:#?}");
    }
    b.screenshot("attribution-channel").await;

    // Customers, then the journey of the one who paid $99.
    click(&b, "#nav a[data-view=journey]").await;
    let customers = seed
        .stack
        .report(&format!("/api/v1/customers?{range}&limit=100"))
        .await;
    let links = b
        .js(
            "return [...document.querySelectorAll('#customers a[data-visitor]')].map((a) => a.dataset.visitor)",
            vec![],
        )
        .await;
    let with_journey: Vec<&Value> = customers["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["visitor_id"].is_null())
        .map(|c| &c["visitor_id"])
        .collect();
    assert_eq!(
        links.as_array().unwrap().iter().collect::<Vec<_>>(),
        with_journey
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#customers tbody tr').length",
            vec![]
        )
        .await,
        customers["rows"].as_array().unwrap().len()
    );
    b.screenshot("customers").await;
    click(
        &b,
        &format!("#customers a[data-visitor=\"{}\"]", seed.journey_visitor),
    )
    .await;
    assert!(query(&b)
        .await
        .contains(&format!("visitor={}", seed.journey_visitor)));
    let shown_journey = b
        .js(
            "return {
               touches: [...document.querySelectorAll('#touches > li.touch')].map((li) => li.dataset.source),
               credited: document.querySelector('#touches > li.first') ? document.querySelector('#touches > li.first').dataset.source : null,
               payments: [...document.querySelectorAll('#payments > li.payment .payment-amount')].map((e) => e.innerText),
               order: [...document.querySelectorAll('#touches > li, #payments > li')].map((li) => li.className),
             }",
            vec![],
        )
        .await;
    let journey = seed
        .stack
        .report(&format!(
            "/api/v1/visitors/{}/journey",
            seed.journey_visitor
        ))
        .await;
    let api_sources: Vec<&Value> = journey["touches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["source"])
        .collect();
    assert_eq!(
        shown_journey["touches"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        api_sources
    );
    assert_eq!(
        shown_journey["touches"],
        json!(["twitter", "(direct)", "google.com"]),
        "{shown_journey:#}"
    );
    assert_eq!(shown_journey["credited"], "twitter");
    assert_eq!(shown_journey["payments"], json!(["$99.00"]));
    let order = shown_journey["order"].as_array().unwrap();
    assert_eq!(
        order.last().unwrap(),
        "payment",
        "the payment comes after the touches"
    );
    let events_shown = b
        .js(
            "return document.querySelectorAll('#touches .events li').length",
            vec![],
        )
        .await;
    assert_eq!(events_shown, journey["events"].as_array().unwrap().len());
    b.screenshot("journey").await;

    b.close().await;
    seed.stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_filters_follow_the_api_and_a_copied_url_reopens_the_view() {
    let seed = seed("dash_filters").await;
    let b = Browser::start("dashboard_filters").await;
    let range = seed.range();

    open_signed_in(
        &b,
        &seed,
        &format!("/?view=attribution&dimension=source&{range}"),
    )
    .await;
    let unfiltered = table(&b, "breakdown").await;

    // Channel: first touch from organic search.
    select(&b, "f-channel", "organic_search").await;
    assert!(query(&b).await.contains("channel=organic_search"));
    let api = seed
        .stack
        .report(&format!(
            "/api/v1/attribution?dimension=source&{range}&channel=organic_search"
        ))
        .await;
    let filtered = table(&b, "breakdown").await;
    assert_breakdown(&filtered, &api);
    assert_ne!(filtered, unfiltered, "the filter changed the numbers");
    assert_eq!(filtered["google.com"]["visitors"], "2", "{filtered:#?}");
    assert_eq!(filtered["google.com"]["revenue"], "€49.00");
    assert_eq!(filtered["(unattributed)"]["revenue"], "—");
    assert!(!filtered.contains_key("twitter"));
    b.screenshot("attribution-filtered").await;

    // The copied URL, opened by someone else: sign in, same view, same filter, same numbers.
    let url = b.client.current_url().await.unwrap().to_string();
    let other = Browser::start("dashboard_filters_reopened").await;
    other.goto(&url).await;
    sign_in(&other, seed.token()).await;
    ready(&other).await;
    assert_eq!(other.client.current_url().await.unwrap().to_string(), url);
    assert_eq!(table(&other, "breakdown").await, filtered);
    assert_eq!(
        other
            .js("return document.getElementById('f-channel').value", vec![])
            .await,
        "organic_search"
    );
    assert_eq!(
        other
            .js("return document.querySelector('button[data-dimension=source]').getAttribute('aria-pressed')", vec![])
            .await,
        "true"
    );
    other.screenshot("reopened").await;
    other.close().await;

    // The overview with the same filter.
    click(&b, "#nav a[data-view=overview]").await;
    let q = query(&b).await;
    assert!(
        q.contains("channel=organic_search") && q.contains("from="),
        "{q}"
    );
    let api = seed
        .stack
        .report(&format!(
            "/api/v1/overview?{range}&channel=organic_search&compare=previous"
        ))
        .await;
    assert_eq!(api["visitors"], 2);
    assert_overview(&b, &api).await;

    // Device and country too: the phone visitor from organic search.
    select(&b, "f-device", "mobile").await;
    let journey = seed
        .stack
        .report(&format!("/api/v1/visitors/{}/journey", seed.mobile_visitor))
        .await;
    let country = journey["visitor"]["country"]
        .as_str()
        .unwrap_or("(unknown)")
        .to_owned();
    type_filter(&b, "f-country", &country).await;
    let q = query(&b).await;
    assert!(q.contains("device=mobile") && q.contains("country="), "{q}");
    let filters = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("channel", "organic_search")
        .append_pair("device", "mobile")
        .append_pair("country", &country)
        .finish();
    let api = seed
        .stack
        .report(&format!(
            "/api/v1/overview?{range}&{filters}&compare=previous"
        ))
        .await;
    assert_eq!(api["visitors"], 1, "{api:#}");
    assert_overview(&b, &api).await;
    let live_query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("channel", "organic_search")
        .append_pair("country", &country)
        .append_pair("device", "mobile")
        .finish();
    assert_live(&b, &seed, &live_query).await;
    b.screenshot("overview-filtered").await;

    // Pages with the same filters (ClickHouse side: event country/device, first-touch channel).
    click(&b, "#nav a[data-view=pages]").await;
    let api = seed
        .stack
        .report(&format!("/api/v1/pages?{range}&{filters}&limit=200"))
        .await;
    let ui = table(&b, "pages").await;
    assert_eq!(ui.len(), api["rows"].as_array().unwrap().len(), "{ui:#?}");
    for row in api["rows"].as_array().unwrap() {
        let path = row["path"].as_str().unwrap();
        assert_eq!(ui[path]["views"], row["views"].to_string());
        assert_eq!(ui[path]["visitors"], row["visitors"].to_string());
    }
    assert_eq!(ui["/blog/attribution"]["visitors"], "1", "{ui:#?}");

    // Clearing the filters brings the whole picture back.
    click(&b, "#clear-filters").await;
    let q = query(&b).await;
    assert!(
        !q.contains("channel") && !q.contains("device") && !q.contains("country"),
        "{q}"
    );
    let api = seed
        .stack
        .report(&format!("/api/v1/pages?{range}&limit=200"))
        .await;
    let ui = table(&b, "pages").await;
    assert_eq!(ui.len(), api["rows"].as_array().unwrap().len());

    b.close().await;
    seed.stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_pages_events_countries_and_devices_match_the_api() {
    let seed = seed("dash_views").await;
    let b = Browser::start("dashboard_views").await;
    let range = seed.range();

    open_signed_in(&b, &seed, &format!("/?view=pages&{range}")).await;
    let api = seed
        .stack
        .report(&format!("/api/v1/pages?{range}&limit=200"))
        .await;
    let ui = table(&b, "pages").await;
    assert_eq!(ui.len(), api["rows"].as_array().unwrap().len(), "{ui:#?}");
    for row in api["rows"].as_array().unwrap() {
        let path = row["path"].as_str().unwrap();
        assert_eq!(ui[path]["views"], row["views"].to_string(), "{path}");
        assert_eq!(ui[path]["visitors"], row["visitors"].to_string(), "{path}");
    }
    assert_eq!(ui["/pricing"]["views"], "3");
    b.screenshot("pages").await;

    click(&b, "#nav a[data-view=events]").await;
    let api = seed.stack.report(&format!("/api/v1/events?{range}")).await;
    let custom = table(&b, "custom-events").await;
    let automatic = table(&b, "auto-events").await;
    for row in api["rows"].as_array().unwrap() {
        let name = row["name"].as_str().unwrap();
        let shown = if row["automatic"] == true {
            &automatic
        } else {
            &custom
        };
        assert_eq!(shown[name]["count"], row["count"].to_string(), "{name}");
        assert_eq!(
            shown[name]["visitors"],
            row["visitors"].to_string(),
            "{name}"
        );
    }
    assert_eq!(custom["signup"]["count"], "1");
    assert_eq!(
        custom.len() + automatic.len(),
        api["rows"].as_array().unwrap().len()
    );
    b.screenshot("events").await;

    for (view, path) in [("countries", "countries"), ("devices", "devices")] {
        click(&b, &format!("#nav a[data-view={view}]")).await;
        let api = seed.stack.report(&format!("/api/v1/{path}?{range}")).await;
        assert_breakdown(&table(&b, "breakdown").await, &api);
        b.screenshot(view).await;
    }
    let devices = table(&b, "breakdown").await;
    assert_eq!(devices["mobile"]["visitors"], "2", "{devices:#?}");
    assert_eq!(devices["tablet"]["visitors"], "1", "{devices:#?}");
    assert_eq!(
        devices["mobile"]["revenue"], "¥5,000",
        "only the newsletter reader paid on a phone: {devices:#?}"
    );

    // A row's value applies it as a filter.
    click(&b, "#breakdown tr[data-row=mobile] button.link").await;
    assert!(query(&b).await.contains("device=mobile"));
    let api = seed
        .stack
        .report(&format!("/api/v1/devices?{range}&device=mobile"))
        .await;
    assert_breakdown(&table(&b, "breakdown").await, &api);
    assert_live(&b, &seed, "device=mobile").await;

    b.close().await;
    seed.stack.tenant.cleanup().await;
}

/// The credited money of `value` in `model` for `currency`, as the page shows it ("—" when none).
fn credit_shown(model: &Value, value: &str, currency: &str) -> String {
    model["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["value"] == value)
        .and_then(|r| {
            r["revenue"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["currency"] == currency)
        })
        .map_or_else(|| "—".to_owned(), shown)
}

/// The CSV the page builds for a table (clicking its CSV button), as lines.
async fn csv_of(b: &Browser, table_id: &str) -> Vec<String> {
    b.click(&format!("button[data-csv-for={table_id}]")).await;
    let csv = b
        .js(
            "return document.querySelector('button[data-csv-for=' + arguments[0] + ']').dataset.csv || ''",
            vec![json!(table_id)],
        )
        .await;
    csv.as_str()
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_models_spend_cohorts_and_funnel_match_the_api() {
    let seed = seed("dash_i15").await;
    let range = seed.range();
    // Ad spend on the seed's Twitter campaign: $50 on its first day.
    let spend = json!([{"day": seed.from.to_string(), "source": "twitter", "medium": "paid_social",
                        "campaign": "launch", "currency": "usd", "amount": 5000}]);
    let response = seed
        .stack
        .http
        .put(format!("{}/api/v1/spend", seed.base()))
        .bearer_auth(seed.token())
        .json(&spend)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let b = Browser::start("dashboard_i15").await;

    // Models side by side: every model's credit per channel, in the first currency.
    open_signed_in(&b, &seed, &format!("/?view=models&{range}")).await;
    let api = seed
        .stack
        .report(&format!("/api/v1/attribution/compare?{range}"))
        .await;
    let models = api["models"].as_array().unwrap();
    assert_eq!(models.len(), 6);
    let mut currencies: Vec<&str> = models
        .iter()
        .flat_map(|m| m["totals"]["revenue"].as_array().unwrap())
        .map(|c| c["currency"].as_str().unwrap())
        .collect();
    currencies.sort_unstable();
    let currency = currencies[0];
    let ui = table(&b, "models").await;
    for model in models {
        let name = model["model"].as_str().unwrap();
        for row in model["rows"].as_array().unwrap() {
            let value = row["value"].as_str().unwrap();
            let cell = &ui[value][name];
            if model.get("not_enough_data").is_some() {
                assert_eq!(cell, "—", "{name} {value}");
            } else {
                assert!(
                    cell.starts_with(&credit_shown(model, value, currency)),
                    "{name} {value}: page {cell:?}"
                );
            }
        }
        if model.get("not_enough_data").is_none() {
            let total = model["totals"]["revenue"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["currency"] == currency)
                .map_or_else(|| "—".to_owned(), shown);
            assert_eq!(ui["(total)"][name], total, "{name} total");
        }
    }
    // The seed is far too small for the data-driven model: the page says so.
    b.wait_until(
        "the data-driven note",
        "return !!document.querySelector('[data-not-enough=data_driven]')",
        WAIT,
    )
    .await;
    b.screenshot("models").await;
    // CSV: the header and one line per row (channels, unattributed, total).
    let csv = csv_of(&b, "models").await;
    assert!(
        csv[0].starts_with("Channel,First touch,Last non-direct,Linear"),
        "{csv:?}"
    );
    assert_eq!(csv.len(), 1 + ui.len(), "{csv:?}");
    // The picker drops a model from the table and the URL.
    click(&b, "#model-picker button[data-model=linear]").await;
    assert!(query(&b).await.contains(
        "models=first_touch%2Clast_non_direct%2Cposition_based%2Ctime_decay%2Cdata_driven"
    ));
    let ui = table(&b, "models").await;
    assert!(
        ui.values().all(|cols| !cols.contains_key("linear")),
        "{ui:#?}"
    );

    // Spend, CAC and ROAS by campaign.
    click(&b, "#nav a[data-view=spend]").await;
    let api = seed.stack.report(&format!("/api/v1/spend?{range}")).await;
    let ui = table(&b, "spend").await;
    assert_eq!(ui.len(), api["rows"].as_array().unwrap().len(), "{ui:#?}");
    for row in api["rows"].as_array().unwrap() {
        let key = format!(
            "{}/{}/{}",
            row["source"].as_str().unwrap(),
            row["medium"].as_str().unwrap(),
            row["campaign"].as_str().unwrap()
        );
        assert_eq!(ui[&key]["spend"], money_cell(&row["spend"]), "{key}");
        assert_eq!(ui[&key]["customers"], row["customers"].to_string(), "{key}");
        assert_eq!(ui[&key]["revenue"], money_cell(&row["revenue"]), "{key}");
    }
    assert_eq!(ui["twitter/paid_social/launch"]["spend"], "$50.00");
    b.screenshot("spend").await;

    // Spend from a CSV file chosen in the page: imported, then shown in the table.
    let upload = |csv: String| {
        let b = &b;
        async move {
            let path = std::env::temp_dir()
                .join(format!("zori-spend-{}.csv", uuid::Uuid::new_v4().simple()));
            std::fs::write(&path, csv).unwrap();
            b.client
                .find(Locator::Css("#spend-file"))
                .await
                .unwrap()
                .send_keys(path.to_str().unwrap())
                .await
                .unwrap();
            b.click("#spend-upload button[type=submit]").await;
            let outcome = b
                .wait_until(
                    "the import's outcome",
                    "const s = document.getElementById('spend-upload-status');
                     return s && /^(ok|error)$/.test(s.className) ? s.className + ': ' + s.textContent : null",
                    WAIT,
                )
                .await;
            let _ = std::fs::remove_file(&path);
            outcome.as_str().unwrap().to_owned()
        }
    };
    let outcome = upload(format!(
        "day,source,medium,campaign,currency,amount\n{},google,cpc,spring,usd,12550\n",
        seed.from
    ))
    .await;
    assert!(
        outcome.starts_with("ok: Imported 1 rows: 1 new"),
        "{outcome}"
    );
    b.wait_until(
        "the imported row",
        "return !!document.querySelector('#spend tr[data-row=\"google/cpc/spring\"]')",
        WAIT,
    )
    .await;
    let ui = table(&b, "spend").await;
    assert_eq!(ui["google/cpc/spring"]["spend"], "$125.50");
    // A bad file is refused with the API's own words, naming the row.
    let outcome = upload(format!(
        "day,source,currency,amount\n{},google,usd,12.50\n",
        seed.from
    ))
    .await;
    assert!(
        outcome.starts_with("error: Import refused:") && outcome.contains("row 1"),
        "{outcome}"
    );

    // Cohorts as a heat map.
    click(&b, "#nav a[data-view=cohorts]").await;
    let api = seed.stack.report(&format!("/api/v1/cohorts?{range}")).await;
    let ui = table(&b, "cohorts").await;
    assert_eq!(
        ui.len(),
        api["cohorts"].as_array().unwrap().len(),
        "{ui:#?}"
    );
    for c in api["cohorts"].as_array().unwrap() {
        let key = format!(
            "{}/{}/{}",
            c["month"].as_str().unwrap(),
            c["channel"].as_str().unwrap(),
            c["currency"].as_str().unwrap()
        );
        assert_eq!(ui[&key]["customers"], c["customers"].to_string(), "{key}");
    }
    let heated = b
        .js(
            "return [...document.querySelectorAll('#cohorts td.heat')].every((td) => td.style.backgroundColor !== '')",
            vec![],
        )
        .await;
    assert_eq!(heated, json!(true));
    b.screenshot("cohorts").await;

    // The funnel: pricing, then paid.
    b.goto(&format!(
        "{}/?view=funnel&{range}&steps=page%3A%2Fpricing%2Cpaid",
        seed.base()
    ))
    .await;
    ready(&b).await;
    let api = seed
        .stack
        .report(&format!("/api/v1/funnel?{range}&steps=page:/pricing,paid"))
        .await;
    let ui = table(&b, "funnel").await;
    let totals = &api["totals"];
    assert_eq!(
        ui["(total)"]["s0"],
        totals["steps"][0]["visitors"].to_string()
    );
    assert!(ui["(total)"]["s1"].starts_with(&totals["steps"][1]["visitors"].to_string()));
    assert_eq!(ui["(total)"]["revenue"], money_cell(&totals["revenue"]));
    for row in api["rows"].as_array().unwrap() {
        let value = row["value"].as_str().unwrap();
        assert_eq!(
            ui[value]["s0"],
            row["steps"][0]["visitors"].to_string(),
            "{value}"
        );
    }
    assert!(
        totals["steps"][0]["visitors"].as_u64().unwrap() > 0,
        "{api:#}"
    );
    b.screenshot("funnel").await;
    let csv = csv_of(&b, "funnel").await;
    assert!(
        csv[0].contains("page:/pricing,paid") || csv[0].contains("\"page:/pricing\""),
        "{csv:?}"
    );

    // MRR: the journey visitor subscribes at $29 a month and upgrades to $49 a minute later.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let subscription = |status: &str, unit: i64| {
        ApiVersion::Basil
            .object("subscription")
            .unwrap()
            .with("id", "sub_dash")
            .with("customer", "cus_dash")
            .with("status", status)
            .with("items.data.0.price.unit_amount", unit)
            .with("metadata.zori_visitor_id", seed.journey_visitor.as_str())
    };
    for (event_type, created, unit) in [
        ("customer.subscription.created", now - 120, 2900),
        ("customer.subscription.updated", now - 60, 4900),
    ] {
        let event =
            subscription("active", unit).event(event_type, &format!("evt_dash_{created}"), created);
        let response = seed.stack.stripe_webhook(&event.to_string()).await;
        assert_eq!(response.status(), 200);
    }
    click(&b, "#nav a[data-view=mrr]").await;
    let api = seed.stack.report(&format!("/api/v1/mrr?{range}")).await;
    let ui = table(&b, "mrr").await;
    let months = api["months"].as_array().unwrap();
    assert_eq!(ui.len(), months.len(), "{ui:#?} {api:#}");
    let this_month = months.last().unwrap();
    let key = this_month["month"].as_str().unwrap();
    assert_eq!(this_month["closing"], 4900, "{api:#}");
    assert_eq!(ui[key]["closing"], "$49.00");
    assert_eq!(ui[key]["new"], "+$49.00");
    let bars = b
        .js(
            "return document.querySelectorAll('#mrr-chart rect[data-movement=new]').length",
            vec![],
        )
        .await;
    assert_eq!(bars, json!(1));
    b.screenshot("mrr").await;
    let csv = csv_of(&b, "mrr").await;
    assert!(csv[0].starts_with("Month,Opening,New,Expansion"), "{csv:?}");

    b.close().await;
    seed.stack.tenant.cleanup().await;
}
