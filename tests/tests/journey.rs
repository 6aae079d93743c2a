//! The seed's journey, across the real binaries and services: a visitor arrives from a Twitter
//! ad on day 1, returns directly on day 5, comes from Google on day 12 and pays $99 through
//! Stripe Checkout on day 14. The $99 is credited to twitter / launch; google and direct get
//! nothing; the journey shows the three touches and the payment.

use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;
use zori_e2e::{page_view, session_id, visitor_id, Stack, SITE_ORIGIN};

fn row<'a>(report: &'a Value, value: &str) -> Option<&'a Value> {
    report["rows"]
        .as_array()?
        .iter()
        .find(|r| r["value"] == value)
}

fn net(row: Option<&Value>, currency: &str) -> i64 {
    row.and_then(|r| r["revenue"].as_array())
        .and_then(|list| list.iter().find(|m| m["currency"] == currency))
        .and_then(|m| m["net"].as_i64())
        .unwrap_or(0)
}

pub fn checkout_completed(visitor: &str, amount: i64, currency: &str) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
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
            "customer_details": {"email": "buyer@example.com"},
            "metadata": {"zori_visitor_id": visitor}
        }}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn twitter_ad_brings_the_99_dollars() {
    let stack = Stack::start("journey").await;
    let now = OffsetDateTime::now_utc();
    let day = |n: i64| now - time::Duration::days(14 - n);
    let visitor = visitor_id();

    let visits = [
        page_view(
            &visitor,
            &session_id(),
            &format!(
                "{SITE_ORIGIN}/?utm_source=twitter&utm_medium=paid_social&utm_campaign=launch"
            ),
            Some("https://t.co/xyz"),
            day(1),
        ),
        page_view(
            &visitor,
            &session_id(),
            &format!("{SITE_ORIGIN}/pricing"),
            None,
            day(5),
        ),
        page_view(
            &visitor,
            &session_id(),
            &format!("{SITE_ORIGIN}/features"),
            Some("https://www.google.com/"),
            day(12),
        ),
    ];
    for visit in &visits {
        let response = stack.track(visit).await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }

    // The payment arrives before the consumer may even have written the visits: order must
    // not matter.
    let response = stack
        .stripe_webhook(&checkout_completed(&visitor, 9900, "usd"))
        .await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );

    let range = format!("from={}&to={}", day(0).date(), now.date());
    let sources = stack
        .report_until(
            &format!("/api/v1/attribution?dimension=source&{range}"),
            Duration::from_secs(30),
            |r| {
                net(row(r, "twitter"), "usd") == 9900
                    && row(r, "twitter").is_some_and(|t| t["visitors"] == 1)
            },
        )
        .await;
    assert_eq!(net(row(&sources, "google.com"), "usd"), 0, "{sources:#}");
    assert_eq!(net(row(&sources, "(direct)"), "usd"), 0, "{sources:#}");
    assert!(
        row(&sources, "google.com").is_none(),
        "google is not a first touch: {sources:#}"
    );

    let campaigns = stack
        .report(&format!("/api/v1/attribution?dimension=campaign&{range}"))
        .await;
    assert_eq!(net(row(&campaigns, "launch"), "usd"), 9900, "{campaigns:#}");
    let channels = stack
        .report(&format!("/api/v1/attribution?dimension=channel&{range}"))
        .await;
    assert_eq!(
        net(row(&channels, "paid_social"), "usd"),
        9900,
        "{channels:#}"
    );
    assert_eq!(net(row(&channels, "direct"), "usd"), 0, "{channels:#}");

    let journey = stack
        .report_until(
            &format!("/api/v1/visitors/{visitor}/journey"),
            Duration::from_secs(30),
            |j| j["touches"].as_array().is_some_and(|t| t.len() == 3),
        )
        .await;
    let touches = journey["touches"].as_array().expect("touches");
    let sources_in_order: Vec<&str> = touches
        .iter()
        .filter_map(|t| t["source"].as_str())
        .collect();
    assert_eq!(
        sources_in_order,
        ["twitter", "(direct)", "google.com"],
        "{journey:#}"
    );
    let payments = journey["payments"].as_array().expect("payments");
    assert_eq!(payments.len(), 1, "{journey:#}");
    assert_eq!(payments[0]["amount"], 9900, "{journey:#}");
    assert_eq!(payments[0]["currency"], "usd", "{journey:#}");

    stack.tenant.cleanup().await;
}
