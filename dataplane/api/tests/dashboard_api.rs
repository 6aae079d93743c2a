//! What the dashboard needs from `zori-api`, against the real services: report filters on every
//! report, countries and devices, the previous-period comparison, the live count, customers,
//! the session cookie (sign-in, sign-out, GET only) and the embedded assets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    days_ago, event, insert_payment, net, now, range, row, session, visitor, From, Harness, DIRECT,
    GOOGLE, TWITTER,
};
use serde_json::{json, Value};
use time::OffsetDateTime;
use zori_core::event::{DeviceType, StreamMessage, TrackedEvent};

#[allow(clippy::too_many_arguments)]
fn hit(
    name: &str,
    visitor: &str,
    session: &str,
    at: OffsetDateTime,
    path: &str,
    from: &From,
    country: Option<&str>,
    device: DeviceType,
) -> StreamMessage {
    let mut e: TrackedEvent = event(name, visitor, session, at, path, from);
    e.country = country.map(str::to_owned);
    e.client.device = device;
    StreamMessage::Event(e)
}

/// Three visitors in the last week and one the week before:
/// - `ad`: Twitter ad, desktop, DE, 3 days ago; pays $99 (refund $9).
/// - `search`: Google, mobile, FR, 2 days ago (landing on /blog, then /pricing); pays €20.
/// - `direct`: direct, mobile, DE, yesterday; signs up.
/// - `early`: direct, desktop, no country, 10 days ago; pays $10 then.
/// - one unattributed $5 payment yesterday.
struct World {
    h: Harness,
    ad: String,
    search: String,
    direct: String,
}

async fn world() -> World {
    let h = Harness::start().await;
    let (ad, search, direct, early) = (visitor(), visitor(), visitor(), visitor());
    let messages = [
        hit(
            "page_view",
            &ad,
            &session(),
            days_ago(3),
            "/",
            &TWITTER,
            Some("DE"),
            DeviceType::Desktop,
        ),
        hit(
            "page_view",
            &search,
            &session(),
            days_ago(2),
            "/blog",
            &GOOGLE,
            Some("FR"),
            DeviceType::Mobile,
        ),
        hit(
            "page_view",
            &search,
            &session(),
            days_ago(2) + time::Duration::minutes(1),
            "/pricing",
            &DIRECT,
            Some("FR"),
            DeviceType::Mobile,
        ),
        hit(
            "page_view",
            &direct,
            &session(),
            days_ago(1),
            "/signup",
            &DIRECT,
            Some("DE"),
            DeviceType::Mobile,
        ),
        hit(
            "signup",
            &direct,
            &session(),
            days_ago(1),
            "/signup",
            &DIRECT,
            Some("DE"),
            DeviceType::Mobile,
        ),
        hit(
            "page_view",
            &early,
            &session(),
            days_ago(10),
            "/",
            &DIRECT,
            None,
            DeviceType::Desktop,
        ),
    ];
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    h.until(&format!("/api/v1/overview?{}", range(14)), |r| {
        r["visitors"] == 4
    })
    .await;
    h.until(&format!("/api/v1/events?{}", range(14)), |r| {
        row(r, "name", "page_view").is_some_and(|p| p["count"] == 5)
            && row(r, "name", "signup").is_some()
    })
    .await;
    insert_payment(&h.pool, days_ago(1), 9900, "usd", 900, Some(&ad), None).await;
    insert_payment(&h.pool, days_ago(1), 2000, "eur", 0, Some(&search), None).await;
    insert_payment(&h.pool, days_ago(1), 500, "usd", 0, None, None).await;
    insert_payment(&h.pool, days_ago(10), 1000, "usd", 0, Some(&early), None).await;
    World {
        h,
        ad,
        search,
        direct,
    }
}

/// The last 7 days (today included).
fn week() -> String {
    range(6)
}

fn money(list: &Value, currency: &str) -> i64 {
    list.as_array()
        .and_then(|l| l.iter().find(|m| m["currency"] == currency))
        .and_then(|m| m["net"].as_i64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_apply_to_every_report() {
    let World {
        h,
        ad,
        search,
        direct,
    } = world().await;
    let week = week();

    // Channel: the first touch. Only the ad visitor and its payment; no unattributed.
    let o = h
        .report(&format!("/api/v1/overview?{week}&channel=paid_social"))
        .await;
    assert_eq!(o["visitors"], 1, "{o:#}");
    assert_eq!(o["customers"], 1);
    assert_eq!(money(&o["revenue"], "usd"), 9000);
    assert_eq!(money(&o["revenue"], "eur"), 0);
    assert_eq!(
        o["unattributed"]["payments"], 0,
        "unattributed drops out under a filter"
    );
    let a = h
        .report(&format!(
            "/api/v1/attribution?dimension=source&{week}&channel=paid_social"
        ))
        .await;
    assert_eq!(a["rows"].as_array().unwrap().len(), 1, "{a:#}");
    assert_eq!(net(row(&a, "value", "twitter"), "usd"), 9000);
    assert_eq!(a["totals"]["visitors"], 1);
    let ts = h
        .report(&format!("/api/v1/timeseries?{week}&channel=paid_social"))
        .await;
    let days = ts["days"].as_array().unwrap();
    assert_eq!(
        days.iter()
            .map(|d| d["visitors"].as_i64().unwrap())
            .sum::<i64>(),
        1
    );
    assert_eq!(ts["currencies"], json!(["usd"]), "{ts:#}");
    assert_eq!(
        days.iter()
            .map(|d| money(&d["revenue"], "usd"))
            .sum::<i64>(),
        9000
    );
    let unfiltered = h.report(&format!("/api/v1/timeseries?{week}")).await;
    assert_eq!(unfiltered["currencies"], json!(["eur", "usd"]));
    assert_eq!(
        unfiltered["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| money(&d["revenue"], "usd"))
            .sum::<i64>(),
        9500,
        "without filters every payment counts"
    );
    // ClickHouse reports: the first touch is the visitor's earliest event.
    let pages = h
        .report(&format!("/api/v1/pages?{week}&channel=paid_social"))
        .await;
    assert_eq!(
        pages["rows"],
        json!([{"path": "/", "views": 1, "visitors": 1}]),
        "{pages:#}"
    );
    // The search visitor's second page view was direct, but its first touch is Google.
    let pages = h
        .report(&format!("/api/v1/pages?{week}&channel=organic_search"))
        .await;
    assert_eq!(pages["rows"].as_array().unwrap().len(), 2, "{pages:#}");
    let pages = h
        .report(&format!("/api/v1/pages?{week}&source=google.com"))
        .await;
    assert_eq!(pages["rows"].as_array().unwrap().len(), 2, "{pages:#}");
    let pages = h
        .report(&format!("/api/v1/pages?{week}&source=(direct)"))
        .await;
    assert_eq!(
        pages["rows"],
        json!([{"path": "/signup", "views": 1, "visitors": 1}]),
        "{pages:#}"
    );

    // Source.
    let o = h
        .report(&format!("/api/v1/overview?{week}&source=google.com"))
        .await;
    assert_eq!(
        (o["visitors"].as_i64(), money(&o["revenue"], "eur")),
        (Some(1), 2000)
    );

    // Country: the visitor's latest country; event country in ClickHouse.
    let o = h
        .report(&format!("/api/v1/overview?{week}&country=DE"))
        .await;
    assert_eq!(o["visitors"], 2, "{o:#}");
    assert_eq!(money(&o["revenue"], "usd"), 9000);
    let pages = h.report(&format!("/api/v1/pages?{week}&country=DE")).await;
    let paths: Vec<&str> = pages["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/", "/signup"], "{pages:#}");
    let o = h
        .report(&format!("/api/v1/overview?{}&country=(unknown)", range(14)))
        .await;
    assert_eq!(o["visitors"], 1, "the early visitor has no country: {o:#}");

    // Device.
    let o = h
        .report(&format!("/api/v1/overview?{week}&device=mobile"))
        .await;
    assert_eq!(o["visitors"], 2);
    assert_eq!(money(&o["revenue"], "eur"), 2000);
    assert_eq!(money(&o["revenue"], "usd"), 0);
    let events = h
        .report(&format!(
            "/api/v1/events?{week}&channel=direct&device=mobile"
        ))
        .await;
    assert_eq!(
        row(&events, "name", "signup").unwrap()["count"],
        1,
        "{events:#}"
    );
    assert_eq!(
        row(&events, "name", "page_view").unwrap()["count"],
        1,
        "{events:#}"
    );
    let props = h
        .report(&format!(
            "/api/v1/events/signup/properties/plan?{week}&device=desktop"
        ))
        .await;
    assert_eq!(props["rows"], json!([]));

    // Filters combine.
    let o = h
        .report(&format!(
            "/api/v1/overview?{week}&channel=direct&device=mobile&country=DE"
        ))
        .await;
    assert_eq!(o["visitors"], 1);
    let o = h
        .report(&format!(
            "/api/v1/overview?{week}&channel=direct&country=FR"
        ))
        .await;
    assert_eq!(o["visitors"], 0);
    assert_eq!(o["conversion_rate"], Value::Null);

    // Customers: payers of the range, with the first touch credited and a visitor to open.
    let c = h.report(&format!("/api/v1/customers?{week}")).await;
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{c:#}");
    let of = |v: &str| rows.iter().find(|r| r["visitor_id"] == v).unwrap();
    assert_eq!(of(&ad)["channel"], "paid_social");
    assert_eq!(of(&ad)["source"], "twitter");
    assert_eq!(
        of(&ad)["revenue"][0]["net"],
        9000,
        "net of refunds, never multiplied"
    );
    assert_eq!(of(&search)["revenue"][0]["currency"], "eur");
    let unattributed = rows.iter().find(|r| r["visitor_id"].is_null()).unwrap();
    assert_eq!(unattributed["channel"], Value::Null);
    assert!(rows.iter().all(|r| r["visitor_id"] != json!(direct)));
    let c = h
        .report(&format!("/api/v1/customers?{week}&device=mobile"))
        .await;
    assert_eq!(c["rows"].as_array().unwrap().len(), 1);
    // `limit` keeps the payers with the latest payments, in the same order.
    let limited = h.report(&format!("/api/v1/customers?{week}&limit=2")).await;
    assert_eq!(
        limited["rows"].as_array().unwrap()[..],
        rows[..2],
        "{limited:#}"
    );

    // Bad filters are 400s that name the parameter.
    for (q, param) in [
        ("channel=tv", "channel"),
        ("device=fridge", "device"),
        ("compare=lastyear", "compare"),
    ] {
        let (status, body) = h
            .get(&format!("/api/v1/overview?{q}"), Some(&h.token))
            .await;
        assert_eq!(status, 400, "{q}: {body:#}");
        assert_eq!(body["error"]["param"], param, "{body:#}");
    }
    let (status, _) = h.get("/api/v1/pages?device=fridge", Some(&h.token)).await;
    assert_eq!(status, 400);
    h.cleanup().await;
}

/// The customers page reads the newest payments until it has `limit` payers: a payer owning
/// the newest payments many times over must not crowd out the next payers, and payers whose
/// latest payments tie are ordered by payer key, as the full grouping orders them.
#[tokio::test(flavor = "multi_thread")]
async fn customers_page_past_a_payer_with_many_recent_payments() {
    let h = Harness::start().await;
    let base = visitor();
    let (regular, second, third) = (visitor(), visitor(), visitor());
    let (tie_a, tie_b) = (format!("{base}-a"), format!("{base}-b"));
    for minute in 0..10 {
        let at = days_ago(1) + time::Duration::minutes(minute);
        insert_payment(&h.pool, at, 100, "usd", 0, Some(&regular), None).await;
    }
    insert_payment(&h.pool, days_ago(2), 2000, "usd", 0, Some(&second), None).await;
    insert_payment(&h.pool, days_ago(3), 3000, "usd", 0, Some(&third), None).await;
    let tie = days_ago(4);
    insert_payment(&h.pool, tie, 5000, "usd", 0, Some(&tie_b), None).await;
    insert_payment(&h.pool, tie, 4000, "usd", 0, Some(&tie_a), None).await;
    let page = |limit: usize| {
        let h = &h;
        async move {
            let c = h
                .report(&format!("/api/v1/customers?{}&limit={limit}", range(7)))
                .await;
            c["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["payments"].as_i64().unwrap(), net(Some(r), "usd")))
                .collect::<Vec<_>>()
        }
    };
    let all = [(10, 1000), (1, 2000), (1, 3000), (1, 4000), (1, 5000)];
    // limit 1 reads four payments, all the regular's; limit 2 needs a second read.
    for limit in 1..=5 {
        assert_eq!(page(limit).await, all[..limit], "limit {limit}");
    }
    assert_eq!(page(50).await, all);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn countries_devices_previous_period_and_live() {
    let World { h, .. } = world().await;
    let week = week();

    let countries = h.report(&format!("/api/v1/countries?{week}")).await;
    assert_eq!(countries["dimension"], "country");
    assert_eq!(
        row(&countries, "value", "DE").unwrap()["visitors"],
        2,
        "{countries:#}"
    );
    assert_eq!(net(row(&countries, "value", "DE"), "usd"), 9000);
    assert_eq!(net(row(&countries, "value", "FR"), "eur"), 2000);
    assert_eq!(countries["unattributed"]["payments"], 1);
    let all = h.report(&format!("/api/v1/countries?{}", range(14))).await;
    assert_eq!(row(&all, "value", "(unknown)").unwrap()["visitors"], 1);
    let devices = h.report(&format!("/api/v1/devices?{week}")).await;
    assert_eq!(devices["dimension"], "device");
    assert_eq!(row(&devices, "value", "mobile").unwrap()["visitors"], 2);
    assert_eq!(row(&devices, "value", "desktop").unwrap()["visitors"], 1);
    let mobile_de = h
        .report(&format!("/api/v1/devices?{week}&country=DE"))
        .await;
    assert_eq!(row(&mobile_de, "value", "mobile").unwrap()["visitors"], 1);

    // The previous period: the 7 days before the week.
    let o = h.report(&format!("/api/v1/overview?{week}")).await;
    assert!(o.get("previous").is_none() && o.get("change").is_none());
    let o = h
        .report(&format!("/api/v1/overview?{week}&compare=previous"))
        .await;
    let today = now().date();
    assert_eq!(
        o["previous"]["from"],
        (today - time::Duration::days(13)).to_string()
    );
    assert_eq!(
        o["previous"]["to"],
        (today - time::Duration::days(7)).to_string()
    );
    assert_eq!(o["previous"]["visitors"], 1, "{o:#}");
    assert_eq!(o["previous"]["customers"], 1);
    assert_eq!(money(&o["previous"]["revenue"], "usd"), 1000);
    assert_eq!(o["visitors"], 3);
    assert_eq!(o["change"]["visitors"], 2.0, "3 against 1: +200 %");
    assert_eq!(
        o["change"]["customers"], 2.0,
        "3 payers (one unattributed) against 1"
    );
    let usd = o["change"]["revenue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == "usd")
        .unwrap();
    assert!(
        (usd["change"].as_f64().unwrap() - 8.5).abs() < 1e-9,
        "9500 against 1000"
    );
    let eur = o["change"]["revenue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == "eur")
        .unwrap();
    assert_eq!(eur["change"], Value::Null, "nothing in eur before");
    let conversion = o["change"]["conversion_rate"].as_f64().unwrap();
    assert!((conversion - 0.0).abs() < 1e-9, "3/3 against 1/1");
    // Filters apply to both periods.
    let o = h
        .report(&format!(
            "/api/v1/overview?{week}&compare=previous&channel=direct"
        ))
        .await;
    assert_eq!(
        (o["visitors"].as_i64(), o["previous"]["visitors"].as_i64()),
        (Some(1), Some(1))
    );

    // Live: visitors with an event received in the last five minutes.
    let live = h.report("/api/v1/live").await;
    assert_eq!(
        live["visitors"], 0,
        "the world's events were received days ago: {live:#}"
    );
    assert_eq!(live["window_seconds"], 300);
    let (now_visitor, phone) = (visitor(), visitor());
    for m in [
        hit(
            "page_view",
            &now_visitor,
            &session(),
            now(),
            "/",
            &GOOGLE,
            Some("US"),
            DeviceType::Desktop,
        ),
        hit(
            "page_view",
            &phone,
            &session(),
            now(),
            "/",
            &DIRECT,
            Some("US"),
            DeviceType::Mobile,
        ),
        // Received now, but happened a week ago (a replay): not live.
        hit(
            "page_view",
            &visitor(),
            &session(),
            days_ago(7),
            "/",
            &DIRECT,
            Some("US"),
            DeviceType::Mobile,
        ),
    ] {
        let mut m = m;
        if let StreamMessage::Event(e) = &mut m {
            e.received_at = now();
        }
        h.publish(&m, m.id()).await;
    }
    h.until("/api/v1/live", |r| r["visitors"] == 2).await;
    let live = h.report("/api/v1/live?device=mobile").await;
    assert_eq!(live["visitors"], 1);
    let live = h.report("/api/v1/live?channel=organic_search").await;
    assert_eq!(live["visitors"], 1);
    let live = h.report("/api/v1/live?country=DE").await;
    assert_eq!(live["visitors"], 0);
    h.cleanup().await;
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("zori_session="))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_sets_a_signed_cookie_that_reads_reports() {
    let h = Harness::start().await;
    let http = no_redirects();
    let base = &h.base_url;

    // A wrong token: 401 with a message for people, no cookie.
    let r = http
        .post(format!("{base}/session"))
        .json(&json!({"token": "not-the-token-at-all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(session_cookie(&r).is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid"),
        "{body}"
    );
    let r = http
        .post(format!("{base}/session"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A form post without JavaScript gets a page back.
    let r = http
        .post(format!("{base}/session"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    // Another site may not sign anyone in.
    let r = http
        .post(format!("{base}/session"))
        .header("Origin", "https://evil.example")
        .json(&json!({"token": h.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(session_cookie(&r).is_none());

    // The right token, as JSON from the page (same origin).
    let r = http
        .post(format!("{base}/session"))
        .header("Origin", base.as_str())
        .json(&json!({"token": h.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = session_cookie(&r).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert!(!cookie.contains(&h.token), "never the raw token");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["signed_in"], true);
    let pair = cookie.split(';').next().unwrap().to_owned();

    // The cookie reads reports (GET), and only reads.
    let get = |path: &str, cookie: &str| {
        http.get(format!("{base}{path}"))
            .header("Cookie", cookie.to_owned())
            .send()
    };
    assert_eq!(get("/api/v1/overview", &pair).await.unwrap().status(), 200);
    assert_eq!(get("/session", &pair).await.unwrap().status(), 200);
    let r = http
        .post(format!("{base}/api/v1/overview"))
        .header("Cookie", pair.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the session is not a bearer token for writes"
    );
    // The dashboard's spend upload writes with the cookie only with its own header and from
    // its own origin: a form or script of another site can do neither.
    let csv =
        "day,source,medium,campaign,currency,amount\n2025-03-01,google,cpc,spring,usd,12550\n";
    let put = |cookie: &str, header: bool, origin: Option<&str>| {
        let mut request = http
            .put(format!("{base}/api/v1/spend"))
            .header("Cookie", cookie.to_owned())
            .header("Content-Type", "text/csv")
            .body(csv);
        if header {
            request = request.header("X-Zori-Dashboard", "1");
        }
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    let own = base.to_string();
    assert_eq!(
        put(&pair, false, None).await.unwrap().status(),
        401,
        "no header"
    );
    assert_eq!(
        put(&pair, true, Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        401,
        "another origin"
    );
    assert_eq!(put(&pair, true, Some("null")).await.unwrap().status(), 401);
    let r = put(&pair, true, Some(&own)).await.unwrap();
    assert_eq!(r.status(), 200);
    let imported: Value = r.json().await.unwrap();
    assert_eq!(imported["rows"], 1);
    assert_eq!(put(&pair, true, None).await.unwrap().status(), 200);
    let tampered = format!("{}0", pair);
    assert_eq!(
        get("/api/v1/overview", &tampered).await.unwrap().status(),
        401
    );
    assert_eq!(get("/session", &tampered).await.unwrap().status(), 401);
    assert_eq!(
        get("/api/v1/overview", "zori_session=v1.9999999999.x.00")
            .await
            .unwrap()
            .status(),
        401
    );
    // Bearer tokens keep working for scripts.
    assert_eq!(h.get("/api/v1/overview", Some(&h.token)).await.0, 200);

    // Behind an https proxy the cookie is Secure; a form sign-in redirects to the dashboard.
    let r = http
        .post(format!("{base}/session"))
        .header("X-Forwarded-Proto", "https")
        .form(&[("token", h.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    assert!(session_cookie(&r).unwrap().contains("; Secure"));

    // Sign-out clears the cookie.
    let r = http
        .post(format!("{base}/session/logout"))
        .header("Cookie", pair.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(session_cookie(&r).unwrap().contains("Max-Age=0"));
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_is_embedded_with_etags_and_a_strict_csp() {
    let h = Harness::start().await;
    let http = no_redirects();
    let base = &h.base_url;
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"signin\""));
    let r = http
        .get(format!("{base}/"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Every asset the page links to is served, versioned and cached for good.
    let links: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert_eq!(
        links.len(),
        5,
        "script, style and the icon (three times): {links:?}"
    );
    for (link, kind) in [
        (
            links.iter().find(|l| l.contains("app.js")).unwrap(),
            "text/javascript",
        ),
        (
            links.iter().find(|l| l.contains("app.css")).unwrap(),
            "text/css",
        ),
        (
            links.iter().find(|l| l.contains("favicon.svg")).unwrap(),
            "image/svg+xml",
        ),
    ] {
        let r = http.get(format!("{base}{link}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{link}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{link}"
        );
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let version = link.split("?v=").nth(1).unwrap();
        assert!(etag.contains(version), "{etag} {version}");
        let again = http
            .get(format!("{base}{link}"))
            .header("If-None-Match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
    let r = http
        .get(format!("{base}/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    h.cleanup().await;
}
