//! Verified identify, end to end (`zori-ingest --identity-verification ignore` → stream →
//! `zori-api`): a user signed in on the site is identified with their server's signature; an
//! attacker holding only the public key identifies their own visitor, whose first touch is
//! older, as that user: unsigned, then with a wrong signature. Neither claim links the
//! attacker's visitor, renames the user or moves the user's payment to the attacker's source;
//! both are kept apart for the site owner. The site's server, with the API token, stays trusted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use zori_core::identity;
use zori_e2e::{
    free_port, page_view, session_id, visitor_id, Process, Stack, StackOptions, Tenant,
    POSTGRES_URL, SITE_ORIGIN,
};

const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

async fn start_stack(identity_secret: &str) -> Stack {
    let tenant = Tenant::new("identity_verification");
    let ingest_port = free_port();
    let api_port = free_port();
    let mut ingest_args = tenant.ingest_args(ingest_port);
    ingest_args.extend(
        [
            "--identity-verification",
            "ignore",
            "--identity-secret",
            identity_secret,
            "--api-token",
            &tenant.api_token,
        ]
        .map(str::to_owned),
    );
    let ingest = Process::start("zori-ingest", ingest_port, &ingest_args).await;
    let api = Process::start("zori-api", api_port, &tenant.api_args(api_port)).await;
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

fn identify(visitor: &str, app_id: &str, fullname: &str, at: OffsetDateTime) -> Value {
    json!({
        "client_generated_event_id": uuid::Uuid::new_v4().to_string(),
        "visitor_id": visitor,
        "session_id": session_id(),
        "client_timestamp_utc": at.format(&Rfc3339).unwrap(),
        "page_url": format!("{SITE_ORIGIN}/account"),
        "app_id": app_id,
        "fullname": fullname,
    })
}

fn checkout_completed(visitor: &str, amount: i64) -> String {
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
            "currency": "usd",
            "created": now,
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "payment_intent": format!("pi_{suffix}"),
            "customer": format!("cus_{suffix}"),
            "metadata": {"zori_visitor_id": visitor}
        }}
    })
    .to_string()
}

/// POST from the site's page (browser headers).
async fn from_page(stack: &Stack, path: &str, body: &Value) -> reqwest::Response {
    stack
        .http
        .post(format!("{}{path}", stack.ingest.base_url))
        .header("X-Zori-PT", &stack.tenant.publishable_key)
        .header("Origin", SITE_ORIGIN)
        .header("User-Agent", CHROME)
        .json(body)
        .send()
        .await
        .expect("ingest answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_identify_cannot_move_an_existing_users_attribution() {
    let secret = format!("zori_is_{}", uuid::Uuid::new_v4().simple());
    let stack = start_stack(&secret).await;
    let now = OffsetDateTime::now_utc();
    let days_ago = |n: i64| now - time::Duration::days(n);
    let (laptop, attacker, phone) = (visitor_id(), visitor_id(), visitor_id());

    // Jane arrives from the Twitter ad and signs up; the site's server signs her id.
    let visit = page_view(
        &laptop,
        &session_id(),
        &format!("{SITE_ORIGIN}/?utm_source=twitter&utm_medium=paid_social"),
        Some("https://t.co/xyz"),
        days_ago(10),
    );
    assert_eq!(stack.track(&visit).await.status(), 200);
    let mut signed = identify(&laptop, "user-42", "Jane Doe", days_ago(10));
    signed["signature"] = identity::sign(&secret, "user-42").into();
    let response = from_page(&stack, "/identify", &signed).await;
    assert_eq!(response.status(), 200);
    let journey_path = format!("/api/v1/visitors/{laptop}/journey");
    stack
        .report_until(&journey_path, Duration::from_secs(30), |j| {
            j["identity"]["app_id"] == "user-42"
        })
        .await;

    // The attacker's visitor has an older first touch, from their own campaign.
    let visit = page_view(
        &attacker,
        &session_id(),
        &format!("{SITE_ORIGIN}/?utm_source=attacker&utm_medium=cpc"),
        None,
        days_ago(20),
    );
    assert_eq!(stack.track(&visit).await.status(), 200);
    // Claim 1: no signature at all. Accepted (mode ignore), but only stored.
    let unsigned = identify(&attacker, "user-42", "Mallory", days_ago(1));
    let response = from_page(&stack, "/identify", &unsigned).await;
    assert_eq!(response.status(), 200);
    // Claim 2: a signature, of another id (the attacker's own account), in a batch.
    let mut wrong = identify(&attacker, "user-42", "Mallory", days_ago(1));
    wrong["signature"] = identity::sign(&secret, "user-666").into();
    let response = from_page(&stack, "/batch", &json!({"identifies": [wrong]})).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["accepted"], 1, "{reply}");

    // Both claims reached zori-api and were kept apart.
    let pool = sqlx::PgPool::connect(POSTGRES_URL).await.unwrap();
    let schema = stack.tenant.schema();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kept: Result<i64, _> = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {schema}.unverified_identifies WHERE visitor_id = $1 AND app_id = 'user-42'"
        ))
        .bind(&attacker)
        .fetch_one(&pool)
        .await;
        if kept.as_ref().is_ok_and(|n| *n == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unverified claims were never stored: {kept:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Jane pays on her laptop: her user's first touch is still Twitter.
    let response = stack
        .stripe_webhook(&checkout_completed(&laptop, 9900))
        .await;
    assert_eq!(response.status(), 200);
    let range = format!("from={}&to={}", days_ago(30).date(), now.date());
    let sources = stack
        .report_until(
            &format!("/api/v1/attribution?dimension=source&{range}"),
            Duration::from_secs(30),
            |r| net(row(r, "twitter"), "usd") == 9900,
        )
        .await;
    assert_eq!(net(row(&sources, "attacker"), "usd"), 0, "{sources:#}");
    assert!(
        row(&sources, "attacker").is_none_or(|r| r["customers"] == 0),
        "{sources:#}"
    );
    let journey = stack.report(&journey_path).await;
    assert_eq!(journey["identity"]["fullname"], "Jane Doe", "{journey:#}");
    assert_eq!(
        journey["identity"]["visitor_ids"],
        json!([laptop]),
        "{journey:#}"
    );
    assert_eq!(journey["first_touch"]["source"], "twitter", "{journey:#}");
    let linked: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.identities WHERE visitor_id = $1"
    ))
    .bind(&attacker)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(linked, 0, "the attacker's visitor is linked to no one");

    // The site's own server, with the API token, needs no signature: Jane's phone joins her.
    let server_side = identify(&phone, "user-42", "Jane Doe", days_ago(0));
    let response = stack
        .http
        .post(format!("{}/identify", stack.ingest.base_url))
        .header("X-Zori-PT", &stack.tenant.publishable_key)
        .bearer_auth(&stack.tenant.api_token)
        .json(&server_side)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stack
        .report_until(&journey_path, Duration::from_secs(30), |j| {
            j["identity"]["visitor_ids"]
                .as_array()
                .is_some_and(|v| v.len() == 2)
        })
        .await;
    // A guessed token is refused outright, not treated as a browser.
    let response = stack
        .http
        .post(format!("{}/identify", stack.ingest.base_url))
        .header("X-Zori-PT", &stack.tenant.publishable_key)
        .bearer_auth("zori_at_guessed_0123456789")
        .json(&identify(&attacker, "user-42", "Mallory", days_ago(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    stack.tenant.cleanup().await;
}
