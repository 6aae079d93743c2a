//! Backfill and replay end to end: zori-api "down for 4 days" misses Stripe's webhooks; the
//! events arrive through `POST /api/v1/stripe/backfill` from a local HTTP double of Stripe's
//! `GET /v1/events` (serving events built from Stripe's own example objects, see
//! `zori_core::stripe::fixtures`), count once even when the webhooks arrive too, and a run cut
//! short resumes where it stopped. Events an older version stored as ignored are read again by
//! `POST /api/v1/stripe/replay`.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Json, Router,
};
use common::{days_ago, page_view, range, session, visitor, From, Harness};
use serde_json::{json, Value};
use time::OffsetDateTime;
use zori_core::stripe::{fixtures::ApiVersion, signature::sign};

const SECRET: &str = "whsec_backfill";
const API_KEY: &str = "rk_test_backfill_events_read";
/// Events per page the double serves (Stripe serves up to `limit`; fewer with `has_more` is
/// what Stripe does too, and it makes paging visible with a handful of events).
const DOUBLE_PAGE: usize = 2;

/// The double's state: every event newest first, the requests it saw, and failures to inject.
#[derive(Default)]
struct Double {
    events: Vec<Value>,
    requests: Vec<HashMap<String, String>>,
    /// Answer 500 to the n-th request (0-based), once.
    fail_request: Option<usize>,
}

type Shared = Arc<Mutex<Double>>;

/// `GET /v1/events` as Stripe serves it: bearer key, `limit`, `created[gte]`, `starting_after`,
/// newest first, `{object: "list", data, has_more, url}`.
async fn list_events(
    State(double): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let mut double = double.lock().expect("double lock");
    let n = double.requests.len();
    double.requests.push(query.clone());
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
            ),
        );
    }
    if double.fail_request == Some(n) {
        double.fail_request = None;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"type": "api_error", "message": "An unknown error occurred"}})),
        );
    }
    let since: i64 = query
        .get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let matching: Vec<&Value> = double
        .events
        .iter()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= since)
        .collect();
    let start = match query.get("starting_after") {
        Some(after) => match matching.iter().position(|e| e["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"error": {"type": "invalid_request_error", "message": "No such event"}}),
                    ),
                )
            }
        },
        None => 0,
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit.min(DOUBLE_PAGE))
        .map(|e| (*e).clone())
        .collect();
    let has_more = start + page.len() < matching.len();
    (
        StatusCode::OK,
        Json(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page})),
    )
}

async fn start_double(double: Shared) -> String {
    let app = Router::new()
        .route("/v1/events", get(list_events))
        .with_state(double);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the Stripe double");
    let address = listener.local_addr().expect("double address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve the double");
    });
    format!("http://{address}")
}

/// A paid one-off Checkout payment on `version`: session, payment intent, charge, `at` seconds.
fn checkout(version: ApiVersion, tag: &str, amount: i64, visitor: &str, at: i64) -> Vec<Value> {
    let object = |name: &str, fields: Vec<(&str, Value)>| {
        let mut o = version
            .object(name)
            .unwrap_or_else(|e| panic!("fixture: {e}"))
            .with("livemode", false);
        for (path, value) in fields {
            o = o.with(path, value);
        }
        o
    };
    let (cs, pi, ch, cus) = (
        format!("cs_test_{tag}"),
        format!("pi_{tag}"),
        format!("ch_{tag}"),
        format!("cus_{tag}"),
    );
    let session = object(
        "checkout.session",
        vec![
            ("id", json!(cs)),
            ("created", json!(at)),
            ("mode", json!("payment")),
            ("status", json!("complete")),
            ("payment_status", json!("paid")),
            ("amount_subtotal", json!(amount)),
            ("amount_total", json!(amount)),
            ("currency", json!("eur")),
            ("customer", json!(cus)),
            ("customer_details.email", json!("payer@example.com")),
            ("payment_intent", json!(pi)),
            ("subscription", Value::Null),
            ("invoice", Value::Null),
            ("metadata", json!({ "zori_visitor_id": visitor })),
        ],
    );
    let intent = object(
        "payment_intent",
        vec![
            ("id", json!(pi)),
            ("created", json!(at)),
            ("amount", json!(amount)),
            ("amount_received", json!(amount)),
            ("amount_capturable", json!(0)),
            ("currency", json!("eur")),
            ("customer", json!(cus)),
            ("latest_charge", json!(ch)),
            ("status", json!("succeeded")),
            ("metadata", json!({})),
        ],
    );
    let charge = object(
        "charge",
        vec![
            ("id", json!(ch)),
            ("created", json!(at)),
            ("amount", json!(amount)),
            ("amount_captured", json!(amount)),
            ("captured", json!(true)),
            ("amount_refunded", json!(0)),
            ("refunded", json!(false)),
            ("currency", json!("eur")),
            ("customer", json!(cus)),
            ("payment_intent", json!(pi)),
            ("paid", json!(true)),
            ("status", json!("succeeded")),
            ("metadata", json!({})),
        ],
    );
    let id = || format!("evt_{}", uuid::Uuid::new_v4().simple());
    vec![
        session.event("checkout.session.completed", &id(), at),
        intent.event("payment_intent.succeeded", &id(), at + 1),
        charge.event("charge.succeeded", &id(), at + 2),
    ]
}

async fn post_webhook(h: &Harness, event: &Value) -> String {
    let body = serde_json::to_vec(event).expect("event json");
    let signature = sign(&body, SECRET, OffsetDateTime::now_utc().unix_timestamp());
    let response = h
        .http
        .post(format!("{}/webhooks/stripe", h.base_url))
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .expect("post webhook");
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json reply");
    reply["status"].as_str().unwrap_or_default().to_owned()
}

/// POSTs an admin route with the tenant's token (or none).
async fn admin(h: &Harness, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = h.http.post(format!("{}{path}", h.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post admin route");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json reply"))
}

/// (payments, customers, gross, net) of `campaign` in the attribution report.
async fn campaign(h: &Harness, campaign: &str) -> (i64, i64, i64, i64) {
    let report = h
        .report(&format!(
            "/api/v1/attribution?dimension=campaign&{}",
            range(8)
        ))
        .await;
    let row = common::row(&report, "value", campaign)
        .cloned()
        .unwrap_or(Value::Null);
    let eur = row["revenue"]
        .as_array()
        .and_then(|list| list.iter().find(|m| m["currency"] == "eur"))
        .cloned()
        .unwrap_or(Value::Null);
    (
        row["payments"].as_i64().unwrap_or(0),
        row["customers"].as_i64().unwrap_or(0),
        eur["gross"].as_i64().unwrap_or(0),
        eur["net"].as_i64().unwrap_or(0),
    )
}

async fn arrive(h: &Harness, visitor: &str, campaign: &'static str, days: i64) {
    let from = From {
        utm_source: Some("newsletter"),
        utm_medium: Some("email"),
        utm_campaign: Some(campaign),
        referrer: None,
        channel: None,
    };
    let message = page_view(visitor, &session(), days_ago(days), "/pricing", &from);
    h.publish(&message, &uuid::Uuid::new_v4().to_string()).await;
    h.drained().await;
}

#[tokio::test]
async fn events_missed_for_four_days_arrive_by_backfill_once_and_resume_after_a_failure() {
    let double: Shared = Arc::default();
    let stripe_url = start_double(double.clone()).await;
    let h = Harness::start_with(&[
        "--stripe-webhook-secrets",
        SECRET,
        "--stripe-api-key",
        API_KEY,
        "--stripe-api-url",
        &stripe_url,
    ])
    .await;
    let visitor = visitor();
    arrive(&h, &visitor, "backfilled", 6).await;

    // While zori-api was down (4 days ago to 1 day ago) the visitor paid twice, once on each API
    // version; one older payment lies before the backfill's start date.
    let day = 24 * 3600;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut missed = checkout(ApiVersion::Acacia, "bf_a", 2900, &visitor, now - 4 * day);
    missed.extend(checkout(
        ApiVersion::Basil,
        "bf_b",
        4900,
        &visitor,
        now - 2 * day,
    ));
    let before = checkout(
        ApiVersion::Basil,
        "bf_old",
        100_000,
        &visitor,
        now - 9 * day,
    );
    // An event of a type that says nothing about a payment, as the account's list holds many.
    let other = ApiVersion::Basil
        .object("payment_intent")
        .unwrap_or_else(|e| panic!("fixture: {e}"))
        .with("id", json!("pi_bf_other"))
        .event(
            "payment_intent.created",
            &format!("evt_{}", uuid::Uuid::new_v4().simple()),
            now - 3 * day,
        );
    {
        let mut d = double.lock().expect("double lock");
        d.events = missed
            .iter()
            .chain(&before)
            .chain([&other])
            .cloned()
            .collect();
        d.events
            .sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64().unwrap_or(0)));
        // The third page request fails once.
        d.fail_request = Some(2);
    }
    // An older zori-api received the first session but could not read it, and kept no payload:
    // the backfill reads Stripe's copy. Without it that payment would have no visitor.
    sqlx::query(
        "INSERT INTO stripe_events (event_id, event_type, livemode, outcome) \
         VALUES ($1, 'checkout.session.completed', false, 'unreadable')",
    )
    .bind(missed[0]["id"].as_str().expect("id"))
    .execute(&h.pool)
    .await
    .expect("store an unreadable event");
    // One of the missed events did reach the webhook (Stripe's last retry).
    assert_eq!(post_webhook(&h, &missed[4]).await, "processed");

    let since = (OffsetDateTime::now_utc() - time::Duration::days(5)).date();
    let path = |pages: u32| format!("/api/v1/stripe/backfill?since={since}&max_pages={pages}");

    // Without the token nothing is read.
    let (status, _) = admin(&h, &path(1), None).await;
    assert_eq!(status, 401);
    assert!(double.lock().expect("double lock").requests.is_empty());

    // A bounded run: one page, not finished.
    let (status, first) = admin(&h, &path(1), Some(&h.token)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["pages"], 1);
    assert_eq!(first["events_read"], 2);
    assert_eq!(first["finished"], false);

    // The next run reads one page, then Stripe fails: 502 naming Stripe's answer.
    let (status, failed) = admin(&h, &path(5), Some(&h.token)).await;
    assert_eq!(status, 502, "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("500") && e.contains("An unknown error occurred")),
        "{failed}"
    );

    // The last run resumes after the last recorded event and finishes.
    let (status, last) = admin(&h, &path(5), Some(&h.token)).await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["finished"], true, "{last}");
    let requests = double.lock().expect("double lock").requests.clone();
    let starts: Vec<Option<&str>> = requests
        .iter()
        .map(|q| q.get("starting_after").map(String::as_str))
        .collect();
    // What the double lists from `since` on, newest first: 7 events in pages of 2.
    let mut listed: Vec<&Value> = missed.iter().chain([&other]).collect();
    listed.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64().unwrap_or(0)));
    let ids: Vec<&str> = listed
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default())
        .collect();
    // Page 1 from the top, page 2 after it, the failed page 3, page 3 again (resumed), page 4.
    assert_eq!(
        starts,
        vec![None, Some(ids[1]), Some(ids[3]), Some(ids[3]), Some(ids[5])],
        "{requests:?}"
    );
    assert!(requests.iter().all(|q| q.get("created[gte]")
        == Some(&since.midnight().assume_utc().unix_timestamp().to_string())));

    // Every missed event was read once; the one the webhook had delivered is a duplicate.
    let read =
        first["events_read"].as_i64().unwrap_or(0) + last["events_read"].as_i64().unwrap_or(0);
    assert_eq!(
        read + 2,
        7,
        "page 2 was recorded before the failure: {first} {last}"
    );
    assert_eq!(
        first["duplicates"], 1,
        "the webhook had delivered one: {first}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE event_id = $1")
        .bind(other["id"].as_str().expect("id"))
        .fetch_one(&h.pool)
        .await
        .expect("count stored events");
    assert_eq!(
        stored, 0,
        "a backfilled event of another type is not stored"
    );
    assert_eq!(campaign(&h, "backfilled").await, (2, 1, 7800, 7800));
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE event_id = $1")
            .bind(missed[0]["id"].as_str().expect("id"))
            .fetch_one(&h.pool)
            .await
            .expect("outcome of the once unreadable session");
    assert!(outcome.starts_with("payment_"), "{outcome}");

    // The webhooks arrive after all: each is a duplicate, nothing counts twice.
    for event in &missed {
        assert_eq!(post_webhook(&h, event).await, "duplicate");
    }
    // A finished backfill run again reads from the top, all duplicates.
    let (status, again) = admin(&h, &path(5), Some(&h.token)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (
            again["duplicates"].as_i64(),
            again["recorded"].as_i64(),
            again["ignored"].as_i64()
        ),
        (Some(6), Some(0), Some(1))
    );
    assert_eq!(campaign(&h, "backfilled").await, (2, 1, 7800, 7800));
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&h.pool)
        .await
        .expect("count payments");
    assert_eq!(payments, 2, "the payment before `since` is not backfilled");

    let metrics = h.metrics().await;
    for line in [
        r#"zori_stripe_backfilled_events_total{outcome="processed"} 5"#,
        r#"zori_stripe_backfilled_events_total{outcome="duplicate"} 7"#,
        r#"zori_stripe_backfilled_events_total{outcome="ignored"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }

    for query in [
        "since=last-week",
        "",
        "since=2026-01-01&max_pages=0",
        "since=2026-01-01&max_pages=51",
        "since=2026-01-01&max_pages=many",
    ] {
        let (status, bad) = admin(
            &h,
            &format!("/api/v1/stripe/backfill?{query}"),
            Some(&h.token),
        )
        .await;
        assert_eq!(status, 400, "{query}: {bad}");
        assert!(
            bad["error"]["code"] == "bad_request"
                && bad["error"]["message"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
            "{bad}"
        );
    }
    h.cleanup().await;
}

#[tokio::test]
async fn replay_reads_events_an_older_version_ignored_and_leaves_the_rest() {
    let h = Harness::start_with(&["--stripe-webhook-secrets", SECRET]).await;
    let visitor = visitor();
    arrive(&h, &visitor, "replayed", 3).await;
    let at = days_ago(1).unix_timestamp();
    let events = checkout(ApiVersion::Basil, "rp", 1500, &visitor, at);

    // An older zori-api acknowledged this session as ignored and kept its payload (as the
    // webhook does now for every event it does not process).
    let session = serde_json::to_string(&events[0]).expect("json");
    sqlx::query(
        "INSERT INTO stripe_events (event_id, event_type, livemode, outcome, payload) \
         VALUES ($1, 'checkout.session.completed', false, 'ignored', $2)",
    )
    .bind(events[0]["id"].as_str().expect("id"))
    .bind(&session)
    .execute(&h.pool)
    .await
    .expect("store an ignored event");
    // Stripe's redelivery of it is a duplicate: only a replay takes it up again.
    assert_eq!(post_webhook(&h, &events[0]).await, "duplicate");
    // An event this version cannot read either is stored with its payload.
    let mut broken = events[2].clone();
    broken["id"] = json!(format!("evt_{}", uuid::Uuid::new_v4().simple()));
    let charge = broken["data"]["object"].as_object_mut().expect("charge");
    charge.remove("amount");
    charge.remove("amount_captured");
    assert_eq!(post_webhook(&h, &broken).await, "unreadable");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT payload FROM stripe_events WHERE event_id = $1")
            .bind(broken["id"].as_str().expect("id"))
            .fetch_one(&h.pool)
            .await
            .expect("stored payload");
    assert!(stored.is_some_and(|p| p.contains("ch_rp")));
    assert_eq!(campaign(&h, "replayed").await, (0, 0, 0, 0));

    let (status, _) = admin(&h, "/api/v1/stripe/replay", None).await;
    assert_eq!(status, 401);
    // Without --stripe-api-key there is nothing to backfill from.
    let (status, unconfigured) = admin(
        &h,
        "/api/v1/stripe/backfill?since=2026-01-01",
        Some(&h.token),
    )
    .await;
    assert_eq!(status, 503, "{unconfigured}");
    assert!(
        unconfigured["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("--stripe-api-key")),
        "{unconfigured}"
    );
    let (status, summary) = admin(&h, "/api/v1/stripe/replay", Some(&h.token)).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary,
        json!({"examined": 2, "processed": 1, "still_ignored": 0, "still_unreadable": 1, "finished": true})
    );
    assert_eq!(campaign(&h, "replayed").await, (1, 1, 1500, 1500));
    let metrics = h.metrics().await;
    for line in [
        r#"zori_stripe_replayed_events_total{outcome="processed"} 1"#,
        r#"zori_stripe_replayed_events_total{outcome="unreadable"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }

    // Replayed once: a second replay finds only the unreadable one; the rest of the payment's
    // events fold into the same payment.
    let (_, again) = admin(&h, "/api/v1/stripe/replay", Some(&h.token)).await;
    assert_eq!(
        again,
        json!({"examined": 1, "processed": 0, "still_ignored": 0, "still_unreadable": 1, "finished": true})
    );
    for event in &events[1..] {
        assert_eq!(post_webhook(&h, event).await, "processed");
    }
    assert_eq!(campaign(&h, "replayed").await, (1, 1, 1500, 1500));

    // A bounded replay stops after `max_events` processed and the next call goes on.
    for event in &checkout(ApiVersion::Acacia, "rp2", 700, &visitor, at)[..2] {
        sqlx::query(
            "INSERT INTO stripe_events (event_id, event_type, livemode, outcome, payload) \
             VALUES ($1, $2, false, 'ignored', $3)",
        )
        .bind(event["id"].as_str().expect("id"))
        .bind(event["type"].as_str().expect("type"))
        .bind(serde_json::to_string(event).expect("json"))
        .execute(&h.pool)
        .await
        .expect("store an ignored event");
    }
    let (_, bounded) = admin(&h, "/api/v1/stripe/replay?max_events=1", Some(&h.token)).await;
    assert_eq!(
        (&bounded["processed"], &bounded["finished"]),
        (&json!(1), &json!(false)),
        "{bounded}"
    );
    let (_, rest) = admin(&h, "/api/v1/stripe/replay?max_events=1", Some(&h.token)).await;
    assert_eq!(
        (&rest["processed"], &rest["finished"]),
        (&json!(1), &json!(true)),
        "{rest}"
    );
    assert_eq!(campaign(&h, "replayed").await, (2, 1, 2200, 2200));
    let (status, bad) = admin(&h, "/api/v1/stripe/replay?max_events=0", Some(&h.token)).await;
    assert_eq!(
        (status, &bad["error"]["param"]),
        (400, &json!("max_events")),
        "{bad}"
    );
    h.cleanup().await;
}
