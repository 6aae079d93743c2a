//! Ad spend import (`PUT /api/v1/spend`, CSV and JSON, idempotent) and the CAC / ROAS report
//! (`GET /api/v1/spend`) for a scripted month, against the real services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    days_ago, insert_payment, page_view, range, session, visitor, From, Harness, GOOGLE, TWITTER,
};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use zori_core::channel::Channel;

const GOOGLE_ADS: From = From {
    utm_source: Some("google"),
    utm_medium: Some("cpc"),
    utm_campaign: Some("spring"),
    referrer: Some("google.com"),
    channel: Some(Channel::PaidSearch),
};

async fn put(h: &Harness, content_type: &str, body: String) -> (u16, Value) {
    let response = h
        .http
        .put(format!("{}/api/v1/spend", h.base_url))
        .bearer_auth(&h.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn day(n: i64) -> String {
    (OffsetDateTime::now_utc().date() - Duration::days(n)).to_string()
}

fn counts(v: &Value) -> (i64, i64, i64, i64) {
    (
        v["rows"].as_i64().unwrap(),
        v["inserted"].as_i64().unwrap(),
        v["updated"].as_i64().unwrap(),
        v["unchanged"].as_i64().unwrap(),
    )
}

fn campaign<'a>(report: &'a Value, source: &str, medium: &str, name: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == source && r["medium"] == medium && r["campaign"] == name)
        .unwrap_or_else(|| panic!("no row {source}/{medium}/{name}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_imports_idempotently_and_reports_cac_and_roas() {
    let h = Harness::start().await;
    let csv = |last: i64| {
        format!(
            "day,source,medium,campaign,currency,amount\n\
             {},google,cpc,spring,usd,10000\n\
             {},google,cpc,spring,usd,10000\n\
             {},google,cpc,spring,usd,{last}\n\
             {},google,cpc,spring,usd,99999\n",
            day(20),
            day(19),
            day(18),
            day(60),
        )
    };
    let (status, body) = put(&h, "text/csv", csv(10_000)).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(counts(&body), (4, 4, 0, 0));
    // The same file again changes nothing; a corrected day replaces its amount.
    let (_, body) = put(&h, "text/csv; charset=utf-8", csv(10_000)).await;
    assert_eq!(counts(&body), (4, 0, 0, 4));
    let (_, body) = put(&h, "text/csv", csv(12_000)).await;
    assert_eq!(counts(&body), (4, 0, 1, 3));

    let rows = json!([
        {"day": day(15), "source": "twitter", "medium": "paid_social", "campaign": "launch", "currency": "usd", "amount": 4000},
        {"day": day(14), "source": "twitter", "medium": "paid_social", "campaign": "launch", "currency": "usd", "amount": 6000}
    ])
    .to_string();
    let (status, body) = put(&h, "application/json", rows.clone()).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(counts(&body), (2, 2, 0, 0));
    let (_, body) = put(&h, "application/json", rows).await;
    assert_eq!(counts(&body), (2, 0, 0, 2));

    // Bad imports name what is wrong and change nothing.
    let (status, body) = put(
        &h,
        "text/csv",
        format!("day,source,currency,amount\n{},google,usd,12.50\n", day(3)),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("row 1: amount \"12.50\""),
        "{body:#}"
    );
    let (status, _) = h
        .http
        .put(format!("{}/api/v1/spend", h.base_url))
        .body("[]")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "imports need the bearer token");

    // The month: two new customers from the Google campaign ($99 and $61), a returning
    // customer from the Twitter campaign ($200; first paid $10 before the range), one organic.
    let (g1, g2, t1, o1) = (visitor(), visitor(), visitor(), visitor());
    for m in [
        page_view(&g1, &session(), days_ago(10), "/", &GOOGLE_ADS),
        page_view(&g2, &session(), days_ago(10), "/", &GOOGLE_ADS),
        page_view(&t1, &session(), days_ago(50), "/", &TWITTER),
        page_view(&o1, &session(), days_ago(9), "/", &GOOGLE),
    ] {
        h.publish(&m, m.id()).await;
    }
    h.drained().await;
    insert_payment(&h.pool, days_ago(5), 9900, "usd", 0, Some(&g1), None).await;
    insert_payment(&h.pool, days_ago(5), 6100, "usd", 0, Some(&g2), None).await;
    insert_payment(&h.pool, days_ago(45), 1000, "usd", 0, Some(&t1), None).await;
    insert_payment(&h.pool, days_ago(5), 20_000, "usd", 0, Some(&t1), None).await;
    insert_payment(&h.pool, days_ago(5), 3000, "usd", 0, Some(&o1), None).await;

    let report = h.report(&format!("/api/v1/spend?{}", range(29))).await;
    // Google: spend 10000 + 10000 + 12000 (the day 60 days ago is outside the range).
    let google = campaign(&report, "google", "cpc", "spring");
    assert_eq!(
        google["spend"],
        json!([{"currency": "usd", "net": 32000, "formatted": "320.00"}])
    );
    assert_eq!(
        (
            google["customers"].as_i64(),
            google["new_customers"].as_i64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(google["revenue"][0]["net"], 16_000);
    assert_eq!(
        google["cac"],
        json!([{"currency": "usd", "amount": 16000.0, "formatted": "160.00"}])
    );
    assert_eq!(google["roas"], json!([{"currency": "usd", "roas": 0.5}]));
    // CAC 16000; the new customers' 16000 over a 30-day range is 8000 each per 30 days, i.e.
    // 8000 × 30.4375 / 30 a month → payback 16000 / 8116.67 = 1.97 months.
    let payback = google["payback"][0]["months"].as_f64().unwrap();
    assert!(
        (payback - 16_000.0 / (8000.0 * 30.4375 / 30.0)).abs() < 1e-9,
        "{payback}"
    );
    let twitter = campaign(&report, "twitter", "paid_social", "launch");
    assert_eq!(twitter["spend"][0]["net"], 10_000);
    assert_eq!(
        (
            twitter["customers"].as_i64(),
            twitter["new_customers"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(twitter["cac"], json!([]), "no new customer, no CAC");
    assert_eq!(twitter["payback"], json!([]));
    assert_eq!(twitter["roas"], json!([{"currency": "usd", "roas": 2.0}]));
    let organic = campaign(&report, "google.com", "", "");
    assert_eq!(organic["spend"], json!([]));
    assert_eq!(organic["new_customers"], 1);
    assert_eq!(organic["roas"], json!([]));
    h.cleanup().await;
}
