//! The Stripe webhook against the real Postgres on 127.0.0.1:5432: every test migrates its own
//! random schema, serves `zori_api::stripe::router` on a random port and sends real HTTP requests
//! signed the way Stripe signs them.

use std::{str::FromStr, time::Duration};

use prometheus_client::{encoding::text::encode, registry::Registry};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Row,
};
use time::OffsetDateTime;
use zori_api::stripe::{router, StripeMetrics, StripeState};
use zori_core::stripe::signature::sign;

const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SECRET: &str = "whsec_test_current";
const OLD_SECRET: &str = "whsec_test_previous";
const SALT: &str = "test-email-salt";
const TENANT: &str = "shop_example";

struct Harness {
    base: String,
    client: reqwest::Client,
    pool: PgPool,
    admin: PgPool,
    schema: String,
    registry: Registry,
}

async fn harness() -> Harness {
    harness_with(vec![SECRET.to_owned()]).await
}

async fn harness_with(secrets: Vec<String>) -> Harness {
    let schema = format!("zori_test_stripe_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(DATABASE_URL)
        .await
        .expect("connect to postgres on 127.0.0.1:5432");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create test schema");
    let options = PgConnectOptions::from_str(DATABASE_URL)
        .expect("database url")
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("connect with search_path");
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .expect("run migrations");

    let mut registry = Registry::default();
    let metrics = StripeMetrics::register(&mut registry);
    let state = StripeState {
        pool: pool.clone(),
        tenant_id: TENANT.to_owned(),
        secrets,
        tolerance: Duration::from_secs(300),
        lookback: Duration::from_secs(90 * 24 * 3600),
        email_salt: SALT.to_owned(),
        metrics,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, router(state))
            .await
            .expect("serve the webhook router");
    });
    Harness {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
        pool,
        admin,
        schema,
        registry,
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn status_field(&self) -> &str {
        self.body["status"].as_str().unwrap_or_default()
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

impl Harness {
    /// Posts `event` to `/webhooks/stripe`, signed now with [`SECRET`].
    async fn send(&self, event: &Value) -> Reply {
        self.send_signed(event, SECRET, now()).await
    }

    async fn send_signed(&self, event: &Value, secret: &str, t: i64) -> Reply {
        let body = serde_json::to_vec(event).expect("serialise event");
        let signature = sign(&body, secret, t);
        self.post("/webhooks/stripe", body, Some(&signature)).await
    }

    async fn post(&self, path: &str, body: Vec<u8>, signature: Option<&str>) -> Reply {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let response = request.send().await.expect("send webhook");
        let status = response.status();
        let text = response.text().await.expect("read reply");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    async fn payments(&self) -> Vec<Payment> {
        sqlx::query(
            "SELECT payment_id, paid_at, amount, currency, amount_refunded, visitor_id, email_hash, \
                    customer_id, subscription_id, description, livemode, amount_source \
             FROM payments ORDER BY payment_id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("read payments")
        .into_iter()
        .map(|row| Payment {
            payment_id: row.get("payment_id"),
            paid_at: row.get("paid_at"),
            amount: row.get("amount"),
            currency: row.get("currency"),
            amount_refunded: row.get("amount_refunded"),
            visitor_id: row.get("visitor_id"),
            email_hash: row.get("email_hash"),
            customer_id: row.get("customer_id"),
            subscription_id: row.get("subscription_id"),
            description: row.get("description"),
            livemode: row.get("livemode"),
            amount_source: row.get("amount_source"),
        })
        .collect()
    }

    async fn only_payment(&self) -> Payment {
        let mut payments = self.payments().await;
        assert_eq!(
            payments.len(),
            1,
            "expected exactly one payment: {payments:#?}"
        );
        payments.remove(0)
    }

    async fn aliases(&self, payment_id: i64) -> Vec<String> {
        sqlx::query_scalar("SELECT alias FROM payment_aliases WHERE payment_id = $1 ORDER BY alias")
            .bind(payment_id)
            .fetch_all(&self.pool)
            .await
            .expect("read aliases")
    }

    async fn event_outcome(&self, event_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
            .expect("read stripe_events")
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("encode metrics");
        text
    }

    async fn finish(self) {
        self.pool.close().await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await
            .expect("drop test schema");
    }
}

#[derive(Debug)]
#[allow(dead_code)]
struct Payment {
    payment_id: i64,
    paid_at: OffsetDateTime,
    amount: i64,
    currency: String,
    amount_refunded: i64,
    visitor_id: Option<String>,
    email_hash: Option<String>,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    description: Option<String>,
    livemode: bool,
    amount_source: String,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn visitor() -> String {
    format!("vis_{}", uuid::Uuid::new_v4())
}

/// A Stripe event envelope around `object`, shaped like API version 2025-08-27.basil.
fn event(event_type: &str, created: i64, object: Value) -> Value {
    json!({
        "id": unique("evt"),
        "object": "event",
        "api_version": "2025-08-27.basil",
        "created": created,
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    })
}

fn checkout_session(
    id: &str,
    payment_intent: Option<&str>,
    amount: i64,
    visitor: Option<&str>,
) -> Value {
    let metadata = match visitor {
        Some(visitor) => json!({ "zori_visitor_id": visitor }),
        None => json!({}),
    };
    json!({
        "id": id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "client_reference_id": null,
        "currency": "usd",
        "customer": "cus_checkout",
        "customer_details": { "email": "  Jane.Doe@Example.COM ", "name": "Jane Doe" },
        "invoice": null,
        "livemode": false,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": payment_intent,
        "payment_status": "paid",
        "status": "complete",
        "subscription": null,
    })
}

fn charge(
    id: &str,
    payment_intent: &str,
    amount: i64,
    currency: &str,
    amount_refunded: i64,
) -> Value {
    json!({
        "id": id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "billing_details": { "email": null, "name": null },
        "captured": true,
        "created": 1_767_225_600,
        "currency": currency,
        "customer": "cus_charge",
        "description": null,
        "livemode": false,
        "metadata": {},
        "paid": true,
        "payment_intent": payment_intent,
        "receipt_email": null,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
    })
}

fn payment_intent(id: &str, charge: &str, amount: i64) -> Value {
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": "usd",
        "customer": "cus_checkout",
        "latest_charge": charge,
        "livemode": false,
        "metadata": {},
        "receipt_email": null,
        "status": "succeeded",
    })
}

// --- happy path -----------------------------------------------------------------------------

#[tokio::test]
async fn checkout_session_stores_payment_with_visitor_and_hashed_email() {
    let h = harness().await;
    let visitor = visitor();
    let created = now() - 60;
    let ev = event(
        "checkout.session.completed",
        created,
        checkout_session("cs_test_a", Some("pi_a"), 4900, Some(&visitor)),
    );
    let reply = h.send(&ev).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.status_field(), "processed");

    let p = h.only_payment().await;
    assert_eq!(p.amount, 4900);
    assert_eq!(p.currency, "usd");
    assert_eq!(p.amount_refunded, 0);
    assert_eq!(p.visitor_id.as_deref(), Some(visitor.as_str()));
    assert_eq!(p.customer_id.as_deref(), Some("cus_checkout"));
    assert_eq!(p.paid_at.unix_timestamp(), created);
    assert!(!p.livemode);
    let expected_hash = zori_core::email::normalize("jane.doe@example.com")
        .map(|e| zori_core::email::hash(&e, SALT));
    assert_eq!(p.email_hash, expected_hash);
    assert_eq!(h.aliases(p.payment_id).await, ["cs_test_a", "pi_a"]);
    assert_eq!(
        h.event_outcome(ev["id"].as_str().expect("id"))
            .await
            .as_deref(),
        Some("payment_created")
    );

    // The payment intent and the charge of the same purchase merge into it, in any order.
    let reply = h
        .send(&event(
            "charge.succeeded",
            created + 1,
            charge("ch_a", "pi_a", 4900, "usd", 0),
        ))
        .await;
    assert_eq!(reply.status_field(), "processed");
    let reply = h
        .send(&event(
            "payment_intent.succeeded",
            created + 2,
            payment_intent("pi_a", "ch_a", 4900),
        ))
        .await;
    assert_eq!(reply.status_field(), "processed");
    let p = h.only_payment().await;
    assert_eq!(p.amount, 4900, "never doubled");
    assert_eq!(p.amount_source, "charge");
    assert_eq!(
        p.paid_at.unix_timestamp(),
        created + 1,
        "paid_at from the charge"
    );
    assert_eq!(p.visitor_id.as_deref(), Some(visitor.as_str()));
    assert_eq!(
        p.customer_id.as_deref(),
        Some("cus_checkout"),
        "first customer id stays"
    );
    assert_eq!(h.aliases(p.payment_id).await, ["ch_a", "cs_test_a", "pi_a"]);

    let metrics = h.metrics();
    assert!(
        metrics.contains("zori_stripe_payments_created_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("zori_stripe_payments_merged_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"zori_stripe_webhooks_total{event_type="checkout.session.completed",outcome="processed"} 1"#
        ),
        "{metrics}"
    );
    h.finish().await;
}

#[tokio::test]
async fn jpy_amount_is_stored_as_is() {
    let h = harness().await;
    let reply = h
        .send(&event(
            "charge.succeeded",
            now(),
            charge("ch_jpy", "pi_jpy", 5000, "jpy", 0),
        ))
        .await;
    assert_eq!(reply.status_field(), "processed");
    let p = h.only_payment().await;
    assert_eq!((p.amount, p.currency.as_str()), (5000, "jpy"));
    h.finish().await;
}

#[tokio::test]
async fn payment_without_visitor_is_stored_with_null_visitor() {
    let h = harness().await;
    let reply = h
        .send(&event(
            "checkout.session.completed",
            now(),
            checkout_session("cs_anon", Some("pi_anon"), 1500, None),
        ))
        .await;
    assert_eq!(reply.status_field(), "processed");
    let p = h.only_payment().await;
    assert_eq!(p.visitor_id, None);
    assert_eq!(p.amount, 1500);
    h.finish().await;
}

// --- signatures ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_or_missing_signature_is_rejected_with_400() {
    let h = harness().await;
    let ev = event(
        "charge.succeeded",
        now(),
        charge("ch_bad", "pi_bad", 100, "usd", 0),
    );

    let reply = h.send_signed(&ev, "whsec_someone_else", now()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("signature"), "{:?}", reply.body);
    assert!(
        !reply.error().contains("whsec"),
        "never echo secrets: {:?}",
        reply.body
    );

    let body = serde_json::to_vec(&ev).expect("body");
    let reply = h.post("/webhooks/stripe", body.clone(), None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("missing"), "{:?}", reply.body);

    let reply = h
        .post("/webhooks/stripe", body.clone(), Some("garbage"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // A valid signature over a different body.
    let signature = sign(b"{}", SECRET, now());
    let reply = h.post("/webhooks/stripe", body, Some(&signature)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    assert_eq!(h.count("payments").await, 0);
    assert_eq!(h.count("stripe_events").await, 0);
    assert!(h
        .metrics()
        .contains("zori_stripe_signature_failures_total 4"));
    h.finish().await;
}

#[tokio::test]
async fn stale_timestamp_is_rejected_with_400() {
    let h = harness().await;
    let ev = event(
        "charge.succeeded",
        now(),
        charge("ch_old", "pi_old", 100, "usd", 0),
    );
    let reply = h.send_signed(&ev, SECRET, now() - 301 - 5).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("tolerance"), "{:?}", reply.body);
    let reply = h.send_signed(&ev, SECRET, now() + 3600).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.count("stripe_events").await, 0);
    // Within the tolerance it passes.
    let reply = h.send_signed(&ev, SECRET, now() - 200).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    h.finish().await;
}

#[tokio::test]
async fn rotated_secrets_both_verify() {
    let h = harness_with(vec![OLD_SECRET.to_owned(), SECRET.to_owned()]).await;
    let first = event(
        "charge.succeeded",
        now(),
        charge("ch_rot1", "pi_rot1", 100, "usd", 0),
    );
    let reply = h.send_signed(&first, SECRET, now()).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "second secret: {:?}",
        reply.body
    );
    let second = event(
        "charge.succeeded",
        now(),
        charge("ch_rot2", "pi_rot2", 100, "usd", 0),
    );
    let reply = h.send_signed(&second, OLD_SECRET, now()).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "first secret: {:?}",
        reply.body
    );
    assert_eq!(h.count("payments").await, 2);
    h.finish().await;
}

#[tokio::test]
async fn no_secret_configured_answers_503() {
    let h = harness_with(Vec::new()).await;
    let reply = h
        .send(&event(
            "charge.succeeded",
            now(),
            charge("ch_n", "pi_n", 100, "usd", 0),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.error(),
        "stripe webhooks are not configured: set --stripe-webhook-secrets"
    );
    h.finish().await;
}

// --- idempotency and merging ---------------------------------------------------------------

#[tokio::test]
async fn replayed_event_is_a_duplicate_and_counts_once() {
    let h = harness().await;
    let ev = event(
        "charge.succeeded",
        now(),
        charge("ch_rep", "pi_rep", 2500, "usd", 0),
    );
    let first = h.send(&ev).await;
    assert_eq!(first.status_field(), "processed");
    for _ in 0..3 {
        let again = h.send(&ev).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.status_field(), "duplicate");
    }
    let p = h.only_payment().await;
    assert_eq!(p.amount, 2500);
    assert_eq!(h.count("stripe_events").await, 1);
    h.finish().await;
}

/// The events Stripe sends (API 2025-03-31.basil, built from Stripe's own example objects) for a
/// subscription's first payment: the Checkout session (visitor id on the session only), the
/// invoice (no payment intent on basil), the invoice payment that links the two, the payment
/// intent and the charge.
fn basil_subscription_events(n: usize, visitor: &str, created: i64) -> Vec<Value> {
    use zori_core::stripe::fixtures::ApiVersion::Basil;
    let (cs, pi, ch, inv, inpay, sub) = (
        format!("cs_sub_{n}"),
        format!("pi_sub_{n}"),
        format!("ch_sub_{n}"),
        format!("in_sub_{n}"),
        format!("inpay_sub_{n}"),
        format!("sub_{n}"),
    );
    let object = |name: &str| {
        Basil
            .object(name)
            .unwrap_or_else(|e| panic!("{e}"))
            .with("created", created)
    };
    let session = object("checkout.session")
        .with("id", cs.as_str())
        .with("mode", "subscription")
        .with("status", "complete")
        .with("payment_status", "paid")
        .with("amount_total", 2900)
        .with("currency", "eur")
        .with("customer", "cus_sub")
        .with("invoice", inv.as_str())
        .with("subscription", sub.as_str())
        .with("payment_intent", Value::Null)
        .with("metadata.zori_visitor_id", visitor);
    let invoice = object("invoice")
        .with("id", inv.as_str())
        .with("status", "paid")
        .with("amount_paid", 2900)
        .with("total", 2900)
        .with("currency", "eur")
        .with("customer", "cus_sub")
        .with("parent.type", "subscription_details")
        .with("parent.subscription_details.subscription", sub.as_str())
        .with("parent.subscription_details.metadata", json!({}));
    let invoice_payment = object("invoice_payment")
        .with("id", inpay.as_str())
        .with("invoice", inv.as_str())
        .with("status", "paid")
        .with("amount_paid", 2900)
        .with("currency", "eur")
        .with("payment.type", "payment_intent")
        .with("payment.payment_intent", pi.as_str());
    let intent = object("payment_intent")
        .with("id", pi.as_str())
        .with("status", "succeeded")
        .with("amount", 2900)
        .with("amount_received", 2900)
        .with("currency", "eur")
        .with("customer", "cus_sub")
        .with("latest_charge", ch.as_str());
    let charge = object("charge")
        .with("id", ch.as_str())
        .with("amount", 2900)
        .with("amount_captured", 2900)
        .with("captured", true)
        .with("currency", "eur")
        .with("customer", "cus_sub")
        .with("payment_intent", pi.as_str());
    [
        ("charge.succeeded", charge),
        ("invoice.paid", invoice),
        ("checkout.session.completed", session),
        ("invoice_payment.paid", invoice_payment),
        ("payment_intent.succeeded", intent),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (event_type, o))| o.event(event_type, &unique("evt"), created + 1 + i as i64))
    .collect()
}

#[tokio::test]
async fn basil_subscription_events_in_any_order_make_one_attributed_payment() {
    let h = harness().await;
    let created = now() - 3600;
    let orders: [[usize; 5]; 6] = [
        [0, 1, 2, 3, 4],
        [4, 3, 2, 1, 0],
        [1, 0, 2, 4, 3],
        [2, 0, 1, 4, 3],
        [3, 1, 4, 0, 2],
        [0, 2, 1, 3, 4],
    ];
    let mut visitors = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let visitor = visitor();
        let events = basil_subscription_events(n, &visitor, created);
        for &i in order {
            let reply = h.send(&events[i]).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            assert_eq!(reply.status_field(), "processed", "order {order:?}");
        }
        visitors.push(visitor);
    }
    let payments = h.payments().await;
    assert_eq!(
        payments.len(),
        orders.len(),
        "one payment per subscription: {payments:#?}"
    );
    for (n, order) in orders.iter().enumerate() {
        let p = payments
            .iter()
            .find(|p| p.visitor_id.as_deref() == Some(visitors[n].as_str()))
            .unwrap_or_else(|| panic!("payment of order {order:?}: {payments:#?}"));
        assert_eq!(
            (p.amount, p.currency.as_str()),
            (2900, "eur"),
            "order {order:?}"
        );
        assert_eq!(p.amount_source, "charge", "order {order:?}");
        assert_eq!(p.paid_at.unix_timestamp(), created + 1, "order {order:?}");
        assert_eq!(
            p.subscription_id.as_deref(),
            Some(format!("sub_{n}").as_str())
        );
        assert_eq!(
            h.aliases(p.payment_id).await,
            [
                format!("ch_sub_{n}"),
                format!("cs_sub_{n}"),
                format!("in_sub_{n}"),
                format!("inpay_sub_{n}"),
                format!("pi_sub_{n}")
            ],
            "order {order:?}"
        );
    }
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stripe_events e JOIN payments p USING (payment_id)",
    )
    .fetch_one(&h.pool)
    .await
    .expect("events linked to payments");
    assert_eq!(linked, 30, "every event points at the surviving payment");
    h.finish().await;
}

#[tokio::test]
async fn concurrent_events_about_one_payment_make_one_row() {
    let h = harness().await;
    let created = now();
    for n in 0..5 {
        let (pi, ch) = (format!("pi_race_{n}"), format!("ch_race_{n}"));
        let events = [
            event("charge.succeeded", created, charge(&ch, &pi, 700, "usd", 0)),
            event(
                "payment_intent.succeeded",
                created,
                payment_intent(&pi, &ch, 700),
            ),
            event(
                "checkout.session.completed",
                created,
                checkout_session(&format!("cs_race_{n}"), Some(&pi), 700, Some(&visitor())),
            ),
        ];
        let replies = futures::future::join_all(events.iter().map(|ev| h.send(ev))).await;
        for reply in replies {
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        }
    }
    let payments = h.payments().await;
    assert_eq!(payments.len(), 5, "{payments:#?}");
    assert!(payments
        .iter()
        .all(|p| p.amount == 700 && p.visitor_id.is_some()));
    h.finish().await;
}

// --- refunds ----------------------------------------------------------------------------------

#[tokio::test]
async fn partial_then_full_refund_records_cumulative_amount() {
    let h = harness().await;
    let t = now() - 600;
    h.send(&event(
        "charge.succeeded",
        t,
        charge("ch_r", "pi_r", 10_000, "usd", 0),
    ))
    .await;
    let partial = event(
        "charge.refunded",
        t + 10,
        charge("ch_r", "pi_r", 10_000, "usd", 3_000),
    );
    let reply = h.send(&partial).await;
    assert_eq!(reply.status_field(), "processed");
    let p = h.only_payment().await;
    assert_eq!((p.amount, p.amount_refunded), (10_000, 3_000));

    let full = event(
        "charge.refunded",
        t + 20,
        charge("ch_r", "pi_r", 10_000, "usd", 10_000),
    );
    assert_eq!(h.send(&full).await.status_field(), "processed");
    // The partial refund delivered again under another event id (Stripe does not promise order)
    // does not lower the cumulative amount.
    let mut late = partial.clone();
    late["id"] = json!(unique("evt"));
    assert_eq!(h.send(&late).await.status_field(), "processed");
    assert_eq!(h.send(&full).await.status_field(), "duplicate");

    let p = h.only_payment().await;
    assert_eq!((p.amount, p.amount_refunded), (10_000, 10_000));
    let refunded_at: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT refunded_at FROM payments")
            .fetch_one(&h.pool)
            .await
            .expect("refunded_at");
    assert_eq!(refunded_at.map(|t| t.unix_timestamp()), Some(t + 20));
    assert!(h.metrics().contains("zori_stripe_refunds_total 3"));
    h.finish().await;
}

#[tokio::test]
async fn refund_before_the_payment_creates_it_then_the_payment_completes_it() {
    let h = harness().await;
    let visitor = visitor();
    let t = now() - 600;
    let reply = h
        .send(&event(
            "charge.refunded",
            t + 30,
            charge("ch_early", "pi_early", 8_000, "usd", 2_000),
        ))
        .await;
    assert_eq!(reply.status_field(), "processed");
    let p = h.only_payment().await;
    // The refund event carries the whole charge: the payment is right from the first event.
    assert_eq!((p.amount, p.amount_refunded), (8_000, 2_000));
    assert_eq!(p.amount_source, "charge");

    let reply = h
        .send(&event(
            "checkout.session.completed",
            t,
            checkout_session("cs_early", Some("pi_early"), 8_000, Some(&visitor)),
        ))
        .await;
    assert_eq!(reply.status_field(), "processed");
    let p = h.only_payment().await;
    assert_eq!((p.amount, p.amount_refunded), (8_000, 2_000));
    assert_eq!(p.amount_source, "charge", "the charge outranks the session");
    assert_eq!(p.visitor_id.as_deref(), Some(visitor.as_str()));

    h.send(&event(
        "charge.succeeded",
        t + 1,
        charge("ch_early", "pi_early", 8_000, "usd", 0),
    ))
    .await;
    let p = h.only_payment().await;
    assert_eq!(
        (p.amount, p.amount_refunded),
        (8_000, 2_000),
        "a later charge.succeeded never resets the refund"
    );
    h.finish().await;
}

// --- acknowledged without a payment ---------------------------------------------------------

#[tokio::test]
async fn unhandled_types_and_future_api_versions_are_acknowledged() {
    let h = harness().await;
    let customer = event(
        "customer.created",
        now(),
        json!({ "id": "cus_new", "object": "customer", "email": "x@example.com" }),
    );
    let reply = h.send(&customer).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.status_field(), "ignored");
    assert_eq!(
        h.event_outcome(customer["id"].as_str().expect("id"))
            .await
            .as_deref(),
        Some("ignored")
    );

    // A type from a future API version, with an envelope shape we have never seen.
    let mut future = event(
        "billing.meter_thing.updated",
        now(),
        json!({ "object": "meter_thing" }),
    );
    future["api_version"] = json!("2099-01-01.future");
    future["context"] = json!("acct_123");
    let reply = h.send(&future).await;
    assert_eq!(
        (reply.status, reply.status_field()),
        (StatusCode::OK, "ignored")
    );

    // A handled type on a future API version with extra fields is still read.
    let mut newer = event(
        "charge.succeeded",
        now(),
        charge("ch_future", "pi_future", 1200, "usd", 0),
    );
    newer["api_version"] = json!("2099-01-01.future");
    newer["data"]["object"]["brand_new_field"] = json!({ "nested": [1, 2, 3] });
    let reply = h.send(&newer).await;
    assert_eq!(
        (reply.status, reply.status_field()),
        (StatusCode::OK, "processed")
    );

    // An unpaid checkout session without a payment intent moves no money; it only ties its
    // customer to its visitor.
    let mut unpaid = checkout_session("cs_unpaid", None, 900, Some(&visitor()));
    unpaid["payment_status"] = json!("unpaid");
    let unpaid = event("checkout.session.completed", now(), unpaid);
    let reply = h.send(&unpaid).await;
    assert_eq!(
        (reply.status, reply.status_field()),
        (StatusCode::OK, "processed")
    );
    assert_eq!(
        h.event_outcome(unpaid["id"].as_str().expect("id"))
            .await
            .as_deref(),
        Some("link_recorded")
    );

    assert_eq!(h.count("payments").await, 1);
    assert_eq!(h.count("stripe_events").await, 4);
    h.finish().await;
}

#[tokio::test]
async fn unreadable_handled_event_is_stored_and_acknowledged() {
    let h = harness().await;
    let mut broken = charge("ch_broken", "pi_broken", 100, "usd", 0);
    broken.as_object_mut().expect("object").remove("amount");
    broken
        .as_object_mut()
        .expect("object")
        .remove("amount_captured");
    let ev = event("charge.succeeded", now(), broken);
    let reply = h.send(&ev).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.status_field(), "unreadable");
    assert_eq!(
        h.event_outcome(ev["id"].as_str().expect("id"))
            .await
            .as_deref(),
        Some("unreadable")
    );
    assert_eq!(h.count("payments").await, 0);
    assert_eq!(h.send(&ev).await.status_field(), "duplicate");
    assert!(h.metrics().contains(
        r#"zori_stripe_webhooks_total{event_type="charge.succeeded",outcome="unreadable"} 1"#
    ));

    // Signed but not an event at all.
    let body = br#"{"hello":"world"}"#.to_vec();
    let signature = sign(&body, SECRET, now());
    let reply = h.post("/webhooks/stripe", body, Some(&signature)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    h.finish().await;
}

// --- failures and routing -----------------------------------------------------------------------

#[tokio::test]
async fn database_failure_answers_500_writes_nothing_and_the_retry_succeeds() {
    let h = harness().await;
    let ev = event(
        "charge.succeeded",
        now(),
        charge("ch_db", "pi_db", 4_200, "usd", 0),
    );
    sqlx::query("ALTER TABLE payments RENAME TO payments_away")
        .execute(&h.pool)
        .await
        .expect("break the schema");

    let reply = h.send(&ev).await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        reply.body
    );
    assert!(reply.error().contains("database"), "{:?}", reply.body);
    assert!(
        reply.error().contains("stripe will retry"),
        "{:?}",
        reply.body
    );
    assert_eq!(
        h.count("stripe_events").await,
        0,
        "the event id is rolled back too"
    );
    assert_eq!(h.count("payment_aliases").await, 0);

    sqlx::query("ALTER TABLE payments_away RENAME TO payments")
        .execute(&h.pool)
        .await
        .expect("repair the schema");
    let reply = h.send(&ev).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.status_field(), "processed");
    assert_eq!(h.only_payment().await.amount, 4_200);
    assert!(h.metrics().contains(
        r#"zori_stripe_webhooks_total{event_type="charge.succeeded",outcome="error"} 1"#
    ));
    h.finish().await;
}

#[tokio::test]
async fn project_route_serves_only_this_tenant() {
    let h = harness().await;
    let ev = event(
        "charge.succeeded",
        now(),
        charge("ch_proj", "pi_proj", 300, "usd", 0),
    );
    let body = serde_json::to_vec(&ev).expect("body");
    let signature = sign(&body, SECRET, now());

    let reply = h
        .post(
            "/webhooks/stripe/another_project",
            body.clone(),
            Some(&signature),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.error().contains("unknown project"),
        "{:?}",
        reply.body
    );
    assert_eq!(h.count("stripe_events").await, 0);

    let reply = h
        .post(
            &format!("/webhooks/stripe/{TENANT}"),
            body,
            Some(&signature),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.status_field(), "processed");
    h.finish().await;
}

#[tokio::test]
async fn oversized_body_answers_413() {
    let h = harness().await;
    let body = vec![b' '; zori_api::stripe::MAX_BODY_BYTES + 1];
    let signature = sign(&body, SECRET, now());
    let reply = h.post("/webhooks/stripe", body, Some(&signature)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.error().contains("larger than"), "{:?}", reply.body);
    h.finish().await;
}

#[tokio::test]
async fn debug_never_prints_secrets() {
    let h = harness().await;
    let state = StripeState {
        pool: h.pool.clone(),
        tenant_id: TENANT.to_owned(),
        secrets: vec![SECRET.to_owned(), OLD_SECRET.to_owned()],
        tolerance: Duration::from_secs(300),
        lookback: Duration::from_secs(90 * 24 * 3600),
        email_salt: SALT.to_owned(),
        metrics: StripeMetrics::default(),
    };
    let printed = format!("{state:?}");
    assert!(!printed.contains(SECRET) && !printed.contains(OLD_SECRET) && !printed.contains(SALT));
    assert!(printed.contains(TENANT));
    h.finish().await;
}
