//! `GET /api/v1/mrr` over a scripted subscription life delivered as real webhooks: Stripe's
//! example subscription objects (both API versions, `zori_core::stripe::fixtures`) are signed and
//! posted to the webhook endpoint, shuffled and some twice, and the report must show every
//! movement written out below, per currency and per acquisition channel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{page_view, session, visitor, Harness, GOOGLE, TWITTER};
use serde_json::{json, Value};
use time::{Date, Duration, OffsetDateTime};
use zori_core::{
    saas::month_of,
    stripe::{fixtures::ApiVersion, signature::sign},
};

const SECRET: &str = "whsec_mrr";

/// The first day of the month `n` months before this one.
fn months_ago(n: u32) -> Date {
    let mut month = month_of(OffsetDateTime::now_utc());
    for _ in 0..n {
        month = month_of((month - Duration::days(1)).midnight().assume_utc());
    }
    month
}

fn label(month: Date) -> String {
    format!("{:04}-{:02}", month.year(), month.month() as u8)
}

/// Noon on day `day` of `month`, as a unix time.
fn at(month: Date, day: i64) -> i64 {
    (month.midnight().assume_utc() + Duration::days(day - 1) + Duration::hours(12)).unix_timestamp()
}

struct Sub<'a> {
    version: ApiVersion,
    id: &'a str,
    customer: &'a str,
    visitor: Option<&'a str>,
    currency: &'a str,
}

impl Sub<'_> {
    /// A `customer.subscription.*` event: `status`, one item of `unit` × `quantity` per
    /// `interval`.
    fn event(
        &self,
        event_type: &str,
        created: i64,
        status: &str,
        (unit, quantity, interval): (Value, i64, &str),
    ) -> Value {
        let mut object = self
            .version
            .object("subscription")
            .unwrap()
            .with("id", self.id)
            .with("customer", self.customer)
            .with("currency", self.currency)
            .with("status", status)
            .with("items.data.0.price.unit_amount", unit)
            .with("items.data.0.price.currency", self.currency)
            .with("items.data.0.price.recurring.interval", interval)
            .with("items.data.0.quantity", quantity);
        if let Some(v) = self.visitor {
            object = object.with("metadata.zori_visitor_id", v);
        }
        object.event(
            event_type,
            &format!("evt_{}_{created}_{status}", self.id),
            created,
        )
    }
}

async fn post(h: &Harness, event: &Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign(&body, SECRET, OffsetDateTime::now_utc().unix_timestamp());
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", h.base_url))
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let reply: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{}: {reply}", event["type"]);
    assert!(
        ["processed", "duplicate"].contains(&reply["status"].as_str().unwrap_or("")),
        "{}: {reply}",
        event["type"]
    );
}

/// One month of one currency: [opening, new, expansion, contraction, churn, reactivation,
/// closing, subscribers, new customers, churned customers].
fn month(m: Date, currency: &str, v: [i64; 10]) -> Value {
    json!({
        "month": label(m), "currency": currency,
        "opening": v[0], "new": v[1], "expansion": v[2], "contraction": v[3], "churn": v[4],
        "reactivation": v[5], "closing": v[6], "subscribers": v[7],
        "new_customers": v[8], "churned_customers": v[9],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_subscription_life_gives_every_movement_by_currency_and_channel() {
    let h = Harness::start_with(&["--stripe-webhook-secrets", SECRET]).await;
    let m: Vec<Date> = (0..5).rev().map(months_ago).collect(); // m[0] four months ago … m[4] now
    let (ann, bruno) = (visitor(), visitor());
    for message in [
        page_view(
            &ann,
            &session(),
            OffsetDateTime::from_unix_timestamp(at(m[0], 1)).unwrap(),
            "/",
            &TWITTER,
        ),
        page_view(
            &bruno,
            &session(),
            OffsetDateTime::from_unix_timestamp(at(m[0], 1)).unwrap(),
            "/",
            &GOOGLE,
        ),
    ] {
        h.publish(&message, message.id()).await;
    }
    h.drained().await;

    let ann1 = Sub {
        version: ApiVersion::Basil,
        id: "sub_ann1",
        customer: "cus_ann",
        visitor: Some(&ann),
        currency: "usd",
    };
    let ann2 = Sub {
        id: "sub_ann2",
        ..ann1
    };
    let bruno1 = Sub {
        version: ApiVersion::Acacia,
        id: "sub_bruno",
        customer: "cus_bruno",
        visitor: Some(&bruno),
        currency: "eur",
    };
    let carla = Sub {
        version: ApiVersion::Basil,
        id: "sub_carla",
        customer: "cus_carla",
        visitor: None,
        currency: "usd",
    };
    let dana = Sub {
        id: "sub_dana",
        customer: "cus_dana",
        ..carla
    };
    let monthly = |unit: i64| (json!(unit), 1, "month");
    let mut events = vec![
        // Ann (Twitter, usd): $50 a month, upgraded to $80, downgraded to $60, canceled, and
        // back on a new subscription at $60.
        ann1.event(
            "customer.subscription.created",
            at(m[0], 3),
            "active",
            monthly(5000),
        ),
        ann1.event(
            "customer.subscription.updated",
            at(m[1], 10),
            "active",
            monthly(8000),
        ),
        ann1.event(
            "customer.subscription.updated",
            at(m[2], 5),
            "active",
            monthly(6000),
        ),
        ann1.event(
            "customer.subscription.deleted",
            at(m[3], 20),
            "canceled",
            monthly(6000),
        ),
        ann2.event(
            "customer.subscription.created",
            at(m[4], 1),
            "active",
            monthly(6000),
        ),
        // Bruno (Google, eur): a trial of €100 a month, billed from the next month.
        bruno1.event(
            "customer.subscription.created",
            at(m[0], 10),
            "trialing",
            monthly(10_000),
        ),
        bruno1.event(
            "customer.subscription.updated",
            at(m[1], 10),
            "active",
            monthly(10_000),
        ),
        // Carla (no visitor, usd): $120 a year = $10 a month.
        carla.event(
            "customer.subscription.created",
            at(m[2], 2),
            "active",
            (json!(12_000), 1, "year"),
        ),
        // Dana (usd): a tiered price MRR cannot price.
        dana.event(
            "customer.subscription.created",
            at(m[2], 2),
            "active",
            (Value::Null, 1, "month"),
        ),
    ];
    // Delivered newest first, and the first three twice: order and redelivery change nothing.
    events.reverse();
    let again: Vec<Value> = events[..3].to_vec();
    for event in events.iter().chain(&again) {
        post(&h, event).await;
    }

    let query = format!("from={}&to={}", m[0], OffsetDateTime::now_utc().date());
    let report = h.report(&format!("/api/v1/mrr?{query}")).await;
    assert_eq!(report["from"], label(m[0]));
    assert_eq!(report["to"], label(m[4]));
    assert_eq!(report["unpriced_subscriptions"], 1, "{report:#}");
    let eur = |i: usize, v| month(m[i], "eur", v);
    let usd = |i: usize, v| month(m[i], "usd", v);
    // [opening, new, expansion, contraction, churn, reactivation, closing, subs, new, churned]
    let expected = json!([
        eur(0, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        usd(0, [0, 5000, 0, 0, 0, 0, 5000, 1, 1, 0]),
        eur(1, [0, 10_000, 0, 0, 0, 0, 10_000, 1, 1, 0]),
        usd(1, [5000, 0, 3000, 0, 0, 0, 8000, 1, 0, 0]),
        eur(2, [10_000, 0, 0, 0, 0, 0, 10_000, 1, 0, 0]),
        usd(2, [8000, 1000, 0, 2000, 0, 0, 7000, 2, 1, 0]),
        eur(3, [10_000, 0, 0, 0, 0, 0, 10_000, 1, 0, 0]),
        usd(3, [7000, 0, 0, 0, 6000, 0, 1000, 1, 0, 1]),
        eur(4, [10_000, 0, 0, 0, 0, 0, 10_000, 1, 0, 0]),
        usd(4, [1000, 0, 0, 0, 0, 6000, 7000, 2, 0, 0]),
    ]);
    assert_eq!(report["months"], expected, "{report:#}");
    // Bruno's trial started in m[0] and was billed.
    assert_eq!(
        report["trials"][0],
        json!({"month": label(m[0]), "trials": 1, "converted": 1, "rate": 1.0})
    );
    assert_eq!(report["trials"][1]["rate"], Value::Null);

    // By channel: Ann's movements under paid_social, Bruno's under organic_search, Carla and
    // Dana unattributed; ordered by closing MRR.
    let by = h
        .report(&format!("/api/v1/mrr?{query}&dimension=channel"))
        .await;
    assert_eq!(by["dimension"], "channel");
    let values: Vec<&str> = by["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["organic_search", "paid_social", "(unattributed)"]);
    let paid = &by["segments"][1]["months"];
    assert_eq!(paid[2], usd(2, [8000, 0, 0, 2000, 0, 0, 6000, 1, 0, 0]));
    assert_eq!(paid[3], usd(3, [6000, 0, 0, 0, 6000, 0, 0, 0, 0, 1]));
    assert_eq!(paid[4], usd(4, [0, 0, 0, 0, 0, 6000, 6000, 1, 0, 0]));
    // The unattributed customers' history starts with their currency, in m[2].
    let unattributed = &by["segments"][2]["months"];
    assert_eq!(
        unattributed[0],
        usd(2, [0, 1000, 0, 0, 0, 0, 1000, 1, 1, 0])
    );
    // The segments add up to the totals.
    assert_eq!(by["months"], expected);

    // A filter keeps only the customers whose visitor matches it.
    let filtered = h
        .report(&format!("/api/v1/mrr?{query}&channel=organic_search"))
        .await;
    let currencies: Vec<&str> = filtered["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["currency"].as_str().unwrap())
        .collect();
    assert!(currencies.iter().all(|c| *c == "eur"), "{filtered:#}");
    assert_eq!(filtered["months"][4]["closing"], 10_000);

    // Bad input is named.
    let (status, body) = h.get("/api/v1/mrr?dimension=planet", Some(&h.token)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "dimension");
    h.cleanup().await;
}
