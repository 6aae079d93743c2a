//! Stripe flows end to end: visitors arrive through the stream, Stripe events built from
//! Stripe's own example objects (API 2025-01-27.acacia and 2025-03-31.basil, see
//! `zori_core::stripe::fixtures`) are signed and posted to the real webhook endpoint in several
//! orders, some twice, and the attribution report must show every flow to the minor unit.
//!
//! Every case has its own visitor arriving from its own UTM campaign, so the report row of that
//! campaign is the case's outcome: payments, customers, gross, refunded, disputed and net.

mod common;

use common::{days_ago, page_view, range, session, visitor, From, Harness};
use serde_json::{json, Value};
use time::OffsetDateTime;
use zori_core::stripe::{
    fixtures::{ApiVersion, StripeObject},
    signature::sign,
};

const SECRET: &str = "whsec_flows";

/// Stripe ids of one case.
#[derive(Clone)]
struct Ids {
    cs: String,
    pi: String,
    ch: String,
    inv: String,
    inpay: String,
    sub: String,
    cus: String,
}

impl Ids {
    fn new(tag: &str) -> Ids {
        Ids {
            cs: format!("cs_test_{tag}"),
            pi: format!("pi_{tag}"),
            ch: format!("ch_{tag}"),
            inv: format!("in_{tag}"),
            inpay: format!("inpay_{tag}"),
            sub: format!("sub_{tag}"),
            cus: format!("cus_{tag}"),
        }
    }

    /// The ids of the n-th part payment of the same invoice: its own payment intent, charge and
    /// `inpay_` allocation.
    fn part(&self, n: usize) -> Ids {
        Ids {
            pi: format!("{}_p{n}", self.pi),
            ch: format!("{}_p{n}", self.ch),
            inpay: format!("{}_p{n}", self.inpay),
            ..self.clone()
        }
    }

    /// The ids of the n-th other invoice of the same customer paid by the same payment intent.
    fn other_invoice(&self, n: usize) -> Ids {
        Ids {
            cs: format!("{}_i{n}", self.cs),
            inv: format!("{}_i{n}", self.inv),
            inpay: format!("{}_i{n}", self.inpay),
            ..self.clone()
        }
    }

    /// The ids of the n-th renewal of the same subscription and customer.
    fn renewal(&self, n: usize) -> Ids {
        Ids {
            cs: format!("{}_r{n}", self.cs),
            pi: format!("{}_r{n}", self.pi),
            ch: format!("{}_r{n}", self.ch),
            inv: format!("{}_r{n}", self.inv),
            inpay: format!("{}_r{n}", self.inpay),
            sub: self.sub.clone(),
            cus: self.cus.clone(),
        }
    }
}

/// Stripe's example `name` of `version` with `fields` set (refused if the schema lacks one).
fn object(version: ApiVersion, name: &str, fields: Vec<(&str, Value)>) -> StripeObject {
    let mut object = version
        .object(name)
        .unwrap_or_else(|e| panic!("fixture: {e}"));
    if object.value().get("livemode").is_some() {
        object = object.with("livemode", false);
    }
    for (path, value) in fields {
        object = object.with(path, value);
    }
    object
}

/// Builds the events of one flow on one API version, in Stripe's own order.
struct Flow {
    version: ApiVersion,
    /// Stripe `created` of the first event.
    t0: i64,
    events: Vec<Value>,
}

impl Flow {
    fn new(version: ApiVersion, t0: i64) -> Flow {
        Flow {
            version,
            t0,
            events: Vec::new(),
        }
    }

    fn basil(&self) -> bool {
        self.version == ApiVersion::Basil
    }

    fn push(&mut self, event_type: &str, object: StripeObject) {
        let at = self.t0 + self.events.len() as i64;
        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        self.events.push(object.event(event_type, &id, at));
    }

    fn metadata(visitor: Option<&str>) -> Value {
        match visitor {
            Some(v) => json!({ "zori_visitor_id": v }),
            None => json!({}),
        }
    }

    fn session(
        &mut self,
        ids: &Ids,
        mode: &str,
        payment_status: &str,
        amount: i64,
        currency: &str,
        visitor: &str,
    ) {
        let subscription = mode == "subscription";
        let o = object(
            self.version,
            "checkout.session",
            vec![
                ("id", json!(ids.cs)),
                ("created", json!(self.t0)),
                ("mode", json!(mode)),
                ("status", json!("complete")),
                ("payment_status", json!(payment_status)),
                ("amount_subtotal", json!(amount)),
                ("amount_total", json!(amount)),
                ("currency", json!(currency)),
                ("customer", json!(ids.cus)),
                ("customer_details.email", json!("payer@example.com")),
                (
                    "payment_intent",
                    if subscription {
                        Value::Null
                    } else {
                        json!(ids.pi)
                    },
                ),
                (
                    "subscription",
                    if subscription {
                        json!(ids.sub)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "invoice",
                    if subscription && amount > 0 {
                        json!(ids.inv)
                    } else {
                        Value::Null
                    },
                ),
                ("metadata", Flow::metadata(Some(visitor))),
            ],
        );
        self.push("checkout.session.completed", o);
    }

    /// The session of a Payment Link: the link's fixed metadata has no visitor id, the page
    /// passed it as `client_reference_id`.
    fn link_session(&mut self, ids: &Ids, mode: &str, amount: i64, currency: &str, visitor: &str) {
        self.session(ids, mode, "paid", amount, currency, visitor);
        let Some(event) = self.events.last_mut() else {
            return;
        };
        let session = &mut event["data"]["object"];
        session["metadata"] = json!({});
        session["client_reference_id"] = json!(visitor);
        session["payment_link"] = json!(format!("plink_{}", ids.cs));
    }

    fn subscription(&mut self, ids: &Ids, status: &str) {
        let o = object(
            self.version,
            "subscription",
            vec![
                ("id", json!(ids.sub)),
                ("created", json!(self.t0)),
                ("customer", json!(ids.cus)),
                ("status", json!(status)),
                ("metadata", json!({})),
            ],
        );
        self.push("customer.subscription.created", o);
    }

    /// `invoice.paid` of a subscription whose metadata does not repeat the visitor id.
    fn invoice(&mut self, ids: &Ids, amount: i64, currency: &str, reason: &str) {
        let mut fields = vec![
            ("id", json!(ids.inv)),
            ("created", json!(self.t0)),
            ("status", json!("paid")),
            ("billing_reason", json!(reason)),
            ("amount_due", json!(amount)),
            ("amount_paid", json!(amount)),
            ("amount_remaining", json!(0)),
            ("subtotal", json!(amount)),
            ("total", json!(amount)),
            ("currency", json!(currency)),
            ("customer", json!(ids.cus)),
            ("customer_email", json!("payer@example.com")),
            ("metadata", json!({})),
        ];
        if self.basil() {
            fields.extend([
                ("parent.type", json!("subscription_details")),
                ("parent.subscription_details.subscription", json!(ids.sub)),
                ("parent.subscription_details.metadata", json!({})),
            ]);
        } else {
            let paid = amount > 0;
            fields.extend([
                ("subscription", json!(ids.sub)),
                ("subscription_details.metadata", json!({})),
                ("paid", json!(true)),
                (
                    "payment_intent",
                    if paid { json!(ids.pi) } else { Value::Null },
                ),
                ("charge", if paid { json!(ids.ch) } else { Value::Null }),
            ]);
        }
        let o = object(self.version, "invoice", fields);
        self.push("invoice.paid", o);
    }

    /// `invoice_payment.paid`, which only exists from basil on.
    fn invoice_payment(&mut self, ids: &Ids, amount: i64, currency: &str) {
        if !self.basil() {
            return;
        }
        let o = object(
            self.version,
            "invoice_payment",
            vec![
                ("id", json!(ids.inpay)),
                ("created", json!(self.t0)),
                ("invoice", json!(ids.inv)),
                ("amount_paid", json!(amount)),
                ("amount_requested", json!(amount)),
                ("currency", json!(currency)),
                ("status", json!("paid")),
                ("is_default", json!(true)),
                ("payment.type", json!("payment_intent")),
                ("payment.payment_intent", json!(ids.pi)),
            ],
        );
        self.push("invoice_payment.paid", o);
    }

    #[allow(clippy::too_many_arguments)]
    fn payment_intent(
        &mut self,
        event_type: &str,
        ids: &Ids,
        amount: i64,
        received: i64,
        capturable: i64,
        currency: &str,
        status: &str,
        visitor: Option<&str>,
        invoice: bool,
    ) {
        let mut fields = vec![
            ("id", json!(ids.pi)),
            ("created", json!(self.t0)),
            ("amount", json!(amount)),
            ("amount_received", json!(received)),
            ("amount_capturable", json!(capturable)),
            ("currency", json!(currency)),
            ("customer", json!(ids.cus)),
            ("latest_charge", json!(ids.ch)),
            ("status", json!(status)),
            ("metadata", Flow::metadata(visitor)),
        ];
        if !self.basil() {
            fields.push((
                "invoice",
                if invoice { json!(ids.inv) } else { Value::Null },
            ));
        }
        let o = object(self.version, "payment_intent", fields);
        self.push(event_type, o);
    }

    #[allow(clippy::too_many_arguments)]
    fn charge(
        &mut self,
        event_type: &str,
        ids: &Ids,
        amount: i64,
        captured: Option<i64>,
        refunded: i64,
        currency: &str,
        invoice: bool,
    ) {
        let mut fields = vec![
            ("id", json!(ids.ch)),
            ("created", json!(self.t0)),
            ("amount", json!(amount)),
            ("amount_captured", json!(captured.unwrap_or(0))),
            ("captured", json!(captured.is_some())),
            ("amount_refunded", json!(refunded)),
            ("refunded", json!(refunded >= amount)),
            ("currency", json!(currency)),
            ("customer", json!(ids.cus)),
            ("payment_intent", json!(ids.pi)),
            ("paid", json!(true)),
            ("status", json!("succeeded")),
            ("metadata", json!({})),
        ];
        if !self.basil() {
            fields.push((
                "invoice",
                if invoice { json!(ids.inv) } else { Value::Null },
            ));
        }
        let o = object(self.version, "charge", fields);
        self.push(event_type, o);
    }

    fn refund(&mut self, event_type: &str, ids: &Ids, id: &str, amount: i64, status: &str) {
        let o = object(
            self.version,
            "refund",
            vec![
                ("id", json!(id)),
                ("created", json!(self.t0 + 60)),
                ("amount", json!(amount)),
                ("charge", json!(ids.ch)),
                ("payment_intent", json!(ids.pi)),
                ("currency", json!("usd")),
                ("status", json!(status)),
            ],
        );
        self.push(event_type, o);
    }

    fn dispute(&mut self, event_type: &str, ids: &Ids, amount: i64, status: &str, moved: usize) {
        let transactions: Vec<Value> = (0..moved)
            .map(
                |n| json!({ "id": format!("txn_{}_{n}", ids.ch), "object": "balance_transaction" }),
            )
            .collect();
        let o = object(
            self.version,
            "dispute",
            vec![
                ("id", json!(format!("dp_{}", ids.ch))),
                ("created", json!(self.t0 + 120)),
                ("amount", json!(amount)),
                ("charge", json!(ids.ch)),
                ("payment_intent", json!(ids.pi)),
                ("currency", json!("usd")),
                ("status", json!(status)),
                ("balance_transactions", json!(transactions)),
            ],
        );
        self.push(event_type, o);
    }

    /// A paid one-off Checkout payment (session, payment intent, charge).
    fn checkout(&mut self, ids: &Ids, amount: i64, currency: &str, visitor: &str) {
        self.session(ids, "payment", "paid", amount, currency, visitor);
        self.payment_intent(
            "payment_intent.succeeded",
            ids,
            amount,
            amount,
            0,
            currency,
            "succeeded",
            None,
            false,
        );
        self.charge(
            "charge.succeeded",
            ids,
            amount,
            Some(amount),
            0,
            currency,
            false,
        );
    }

    /// One paid subscription invoice and the money that paid it.
    fn subscription_payment(&mut self, ids: &Ids, amount: i64, currency: &str, reason: &str) {
        self.invoice(ids, amount, currency, reason);
        self.invoice_payment(ids, amount, currency);
        self.payment_intent(
            "payment_intent.succeeded",
            ids,
            amount,
            amount,
            0,
            currency,
            "succeeded",
            None,
            true,
        );
        self.charge(
            "charge.succeeded",
            ids,
            amount,
            Some(amount),
            0,
            currency,
            true,
        );
    }
}

/// What the report must show for a case's campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    currency: &'static str,
    payments: i64,
    customers: i64,
    gross: i64,
    refunded: i64,
    disputed: i64,
}

impl Expect {
    fn paid(currency: &'static str, payments: i64, gross: i64) -> Expect {
        Expect {
            currency,
            payments,
            customers: i64::from(payments > 0),
            gross,
            refunded: 0,
            disputed: 0,
        }
    }

    fn net(&self) -> i64 {
        self.gross - self.refunded - self.disputed
    }
}

/// Delivery orders of `n` events: as sent, reversed, and odd positions first then even; the
/// first and last events are delivered a second time in every order.
fn orders(n: usize) -> Vec<(&'static str, Vec<usize>)> {
    let forward: Vec<usize> = (0..n).collect();
    let reversed: Vec<usize> = (0..n).rev().collect();
    let interleaved: Vec<usize> = (0..n)
        .filter(|i| i % 2 == 1)
        .chain((0..n).filter(|i| i % 2 == 0))
        .collect();
    [
        ("forward", forward),
        ("reversed", reversed),
        ("interleaved", interleaved),
    ]
    .into_iter()
    .map(|(name, mut order)| {
        order.push(0);
        order.push(n - 1);
        (name, order)
    })
    .collect()
}

/// A named flow, what its report row must show, and how to build its events from
/// (flow, ids, visitor id).
type FlowCase = (&'static str, Expect, fn(&mut Flow, &Ids, &str));

struct Case {
    label: String,
    campaign: &'static str,
    visitor: String,
    events: Vec<Value>,
    order: Vec<usize>,
    expect: Expect,
}

/// Runs every (flow builder × API version × order) case against one data plane.
async fn run(name: &str, flows: &[FlowCase]) {
    run_on(name, &ApiVersion::ALL, flows).await;
}

/// Runs every (flow builder × given API version × order) case against one data plane.
async fn run_on(name: &str, versions: &[ApiVersion], flows: &[FlowCase]) {
    let h = Harness::start_with(&["--stripe-webhook-secrets", SECRET]).await;
    let t0 = OffsetDateTime::now_utc().unix_timestamp() - 3600;
    let mut cases = Vec::new();
    for (flow_name, expect, build) in flows {
        for &version in versions {
            let probe_ids = Ids::new("probe");
            let mut probe = Flow::new(version, t0);
            build(&mut probe, &probe_ids, "vis_probe");
            for (order_name, order) in orders(probe.events.len()) {
                let tag = uuid::Uuid::new_v4().simple().to_string();
                let visitor = visitor();
                let mut flow = Flow::new(version, t0);
                build(&mut flow, &Ids::new(&tag[..12]), &visitor);
                let campaign: &'static str =
                    Box::leak(format!("c_{}", &tag[..12]).into_boxed_str());
                cases.push(Case {
                    label: format!(
                        "{name}/{flow_name} on {} delivered {order_name}",
                        version.as_str()
                    ),
                    campaign,
                    visitor,
                    events: flow.events,
                    order,
                    expect: *expect,
                });
            }
        }
    }
    // Every visitor arrives yesterday from its own campaign.
    for case in &cases {
        let from = From {
            utm_source: Some("newsletter"),
            utm_medium: Some("email"),
            utm_campaign: Some(case.campaign),
            referrer: None,
            channel: None,
        };
        let message = page_view(&case.visitor, &session(), days_ago(1), "/pricing", &from);
        h.publish(&message, &uuid::Uuid::new_v4().to_string()).await;
    }
    h.drained().await;

    let client = reqwest::Client::new();
    for case in &cases {
        for &i in &case.order {
            let body = serde_json::to_vec(&case.events[i]).expect("event json");
            let signature = sign(&body, SECRET, OffsetDateTime::now_utc().unix_timestamp());
            let response = client
                .post(format!("{}/webhooks/stripe", h.base_url))
                .header("content-type", "application/json")
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await
                .expect("post webhook");
            let status = response.status();
            let reply: Value = response.json().await.expect("json reply");
            assert_eq!(status, 200, "{}: event {i}: {reply}", case.label);
            assert!(
                ["processed", "duplicate", "ignored"]
                    .contains(&reply["status"].as_str().unwrap_or("")),
                "{}: event {i} {}: {reply}",
                case.label,
                case.events[i]["type"]
            );
        }
    }

    let report = h
        .report(&format!(
            "/api/v1/attribution?dimension=campaign&{}",
            range(2)
        ))
        .await;
    for case in &cases {
        let row = common::row(&report, "value", case.campaign);
        let e = case.expect;
        let got = row.map(|r| {
            let money = r["revenue"]
                .as_array()
                .and_then(|list| list.iter().find(|m| m["currency"] == e.currency));
            let field = |name: &str| money.and_then(|m| m[name].as_i64()).unwrap_or(0);
            (
                r["payments"].as_i64().unwrap_or(-1),
                r["customers"].as_i64().unwrap_or(-1),
                field("gross"),
                field("refunded"),
                field("disputed"),
                field("net"),
            )
        });
        assert_eq!(
            got,
            Some((
                e.payments,
                e.customers,
                e.gross,
                e.refunded,
                e.disputed,
                e.net()
            )),
            "{}: (payments, customers, gross, refunded, disputed, net) of {}",
            case.label,
            case.campaign
        );
    }
    // Nothing of it is unattributed, and the totals are the sum of the cases.
    assert_eq!(
        report["unattributed"]["payments"], 0,
        "{:#}",
        report["unattributed"]
    );
    let total_payments: i64 = cases.iter().map(|c| c.expect.payments).sum();
    assert_eq!(report["totals"]["payments"], total_payments);
    h.cleanup().await;
}

#[tokio::test]
async fn one_off_payments_count_once_in_every_currency() {
    run(
        "one-off",
        &[
            ("checkout usd", Expect::paid("usd", 1, 4900), |f, ids, v| {
                f.checkout(ids, 4900, "usd", v)
            }),
            (
                "payment link usd",
                Expect::paid("usd", 1, 9900),
                |f, ids, v| {
                    f.link_session(ids, "payment", 9900, "usd", v);
                    f.payment_intent(
                        "payment_intent.succeeded",
                        ids,
                        9900,
                        9900,
                        0,
                        "usd",
                        "succeeded",
                        None,
                        false,
                    );
                    f.charge("charge.succeeded", ids, 9900, Some(9900), 0, "usd", false);
                },
            ),
            (
                "payment intent jpy",
                Expect::paid("jpy", 1, 5000),
                |f, ids, v| {
                    f.payment_intent(
                        "payment_intent.succeeded",
                        ids,
                        5000,
                        5000,
                        0,
                        "jpy",
                        "succeeded",
                        Some(v),
                        false,
                    );
                    f.charge("charge.succeeded", ids, 5000, Some(5000), 0, "jpy", false);
                },
            ),
            (
                "payment intent kwd",
                Expect::paid("kwd", 1, 12_345),
                |f, ids, v| {
                    f.charge(
                        "charge.succeeded",
                        ids,
                        12_345,
                        Some(12_345),
                        0,
                        "kwd",
                        false,
                    );
                    f.payment_intent(
                        "payment_intent.succeeded",
                        ids,
                        12_345,
                        12_345,
                        0,
                        "kwd",
                        "succeeded",
                        Some(v),
                        false,
                    );
                },
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn subscriptions_count_each_payment_once_and_renewals_keep_their_source() {
    run(
        "subscription",
        &[
            (
                "checkout subscription and a renewal",
                Expect::paid("eur", 2, 5800),
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 2900, "eur", v);
                    f.subscription(ids, "active");
                    f.subscription_payment(ids, 2900, "eur", "subscription_create");
                    f.subscription_payment(&ids.renewal(1), 2900, "eur", "subscription_cycle");
                },
            ),
            (
                "payment link subscription and two renewals",
                Expect::paid("usd", 3, 3 * 1500),
                |f, ids, v| {
                    f.link_session(ids, "subscription", 1500, "usd", v);
                    f.subscription(ids, "active");
                    f.subscription_payment(ids, 1500, "usd", "subscription_create");
                    f.subscription_payment(&ids.renewal(1), 1500, "usd", "subscription_cycle");
                    f.subscription_payment(&ids.renewal(2), 1500, "usd", "subscription_cycle");
                },
            ),
            (
                "trial then first payment",
                Expect::paid("eur", 1, 2900),
                |f, ids, v| {
                    f.session(ids, "subscription", "no_payment_required", 0, "eur", v);
                    f.subscription(ids, "trialing");
                    f.invoice(&ids.renewal(0), 0, "eur", "subscription_create");
                    f.subscription_payment(&ids.renewal(1), 2900, "eur", "subscription_cycle");
                },
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn only_captured_money_counts() {
    run(
        "manual capture",
        &[
            (
                "captured partially",
                Expect::paid("usd", 1, 600),
                |f, ids, v| {
                    f.session(ids, "payment", "unpaid", 1000, "usd", v);
                    f.charge("charge.succeeded", ids, 1000, None, 0, "usd", false);
                    f.payment_intent(
                        "payment_intent.amount_capturable_updated",
                        ids,
                        1000,
                        0,
                        1000,
                        "usd",
                        "requires_capture",
                        None,
                        false,
                    );
                    f.charge("charge.captured", ids, 1000, Some(600), 0, "usd", false);
                    f.payment_intent(
                        "payment_intent.succeeded",
                        ids,
                        1000,
                        600,
                        0,
                        "usd",
                        "succeeded",
                        None,
                        false,
                    );
                },
            ),
            ("cancelled", Expect::paid("usd", 0, 0), |f, ids, v| {
                f.session(ids, "payment", "unpaid", 1000, "usd", v);
                f.charge("charge.succeeded", ids, 1000, None, 0, "usd", false);
                f.payment_intent(
                    "payment_intent.canceled",
                    ids,
                    1000,
                    0,
                    0,
                    "usd",
                    "canceled",
                    None,
                    false,
                );
            }),
            ("expired", Expect::paid("usd", 0, 0), |f, ids, v| {
                f.session(ids, "payment", "unpaid", 1000, "usd", v);
                f.charge("charge.succeeded", ids, 1000, None, 0, "usd", false);
                f.charge("charge.expired", ids, 1000, None, 0, "usd", false);
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn refunds_are_records_and_failed_ones_restore_revenue() {
    let refunded = |amount| Expect {
        refunded: amount,
        ..Expect::paid("usd", 1, 10_000)
    };
    run(
        "refunds",
        &[
            ("partial", refunded(3000), |f, ids, v| {
                f.checkout(ids, 10_000, "usd", v);
                f.refund(
                    "refund.created",
                    ids,
                    &format!("re_{}_1", ids.ch),
                    3000,
                    "succeeded",
                );
                f.charge(
                    "charge.refunded",
                    ids,
                    10_000,
                    Some(10_000),
                    3000,
                    "usd",
                    false,
                );
            }),
            ("multiple", refunded(5000), |f, ids, v| {
                f.checkout(ids, 10_000, "usd", v);
                f.refund(
                    "refund.created",
                    ids,
                    &format!("re_{}_1", ids.ch),
                    3000,
                    "succeeded",
                );
                f.charge(
                    "charge.refunded",
                    ids,
                    10_000,
                    Some(10_000),
                    3000,
                    "usd",
                    false,
                );
                f.refund(
                    "refund.created",
                    ids,
                    &format!("re_{}_2", ids.ch),
                    2000,
                    "pending",
                );
                f.charge(
                    "charge.refunded",
                    ids,
                    10_000,
                    Some(10_000),
                    5000,
                    "usd",
                    false,
                );
                f.refund(
                    "refund.updated",
                    ids,
                    &format!("re_{}_2", ids.ch),
                    2000,
                    "succeeded",
                );
            }),
            ("failed", refunded(0), |f, ids, v| {
                f.checkout(ids, 10_000, "usd", v);
                f.refund(
                    "refund.created",
                    ids,
                    &format!("re_{}_1", ids.ch),
                    3000,
                    "pending",
                );
                f.charge(
                    "charge.refunded",
                    ids,
                    10_000,
                    Some(10_000),
                    3000,
                    "usd",
                    false,
                );
                f.refund(
                    "refund.updated",
                    ids,
                    &format!("re_{}_1", ids.ch),
                    3000,
                    "succeeded",
                );
                f.refund(
                    "refund.failed",
                    ids,
                    &format!("re_{}_1", ids.ch),
                    3000,
                    "failed",
                );
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn lost_disputes_take_revenue_back_and_won_ones_return_it() {
    run(
        "disputes",
        &[
            (
                "lost",
                Expect {
                    disputed: 50_000,
                    ..Expect::paid("usd", 1, 50_000)
                },
                |f, ids, v| {
                    f.checkout(ids, 50_000, "usd", v);
                    f.dispute("charge.dispute.created", ids, 50_000, "needs_response", 0);
                    f.dispute(
                        "charge.dispute.funds_withdrawn",
                        ids,
                        50_000,
                        "needs_response",
                        1,
                    );
                    f.dispute("charge.dispute.closed", ids, 50_000, "lost", 1);
                },
            ),
            ("won", Expect::paid("usd", 1, 50_000), |f, ids, v| {
                f.checkout(ids, 50_000, "usd", v);
                f.dispute("charge.dispute.created", ids, 50_000, "needs_response", 0);
                f.dispute(
                    "charge.dispute.funds_withdrawn",
                    ids,
                    50_000,
                    "needs_response",
                    1,
                );
                f.dispute(
                    "charge.dispute.funds_reinstated",
                    ids,
                    50_000,
                    "under_review",
                    2,
                );
                f.dispute("charge.dispute.closed", ids, 50_000, "won", 2);
            }),
        ],
    )
    .await;
}

/// The money of one part payment: its payment intent and charge (captured in full).
fn part_money(f: &mut Flow, ids: &Ids, amount: i64, currency: &str) {
    f.payment_intent(
        "payment_intent.succeeded",
        ids,
        amount,
        amount,
        0,
        currency,
        "succeeded",
        None,
        true,
    );
    f.charge(
        "charge.succeeded",
        ids,
        amount,
        Some(amount),
        0,
        currency,
        true,
    );
}

/// Since API 2025-03-31.basil an invoice may be paid by several payment intents (partial
/// payments, one `inpay_` allocation each) and one payment intent may pay several invoices.
/// One money movement is one payment: an invoice paid in two parts is two payments of one
/// customer, two invoices paid at once are one payment, whichever events the shop subscribed
/// to and in whatever order they come. Before basil an invoice names its one payment intent, so
/// these shapes cannot occur there (the other flows cover that version).
#[tokio::test]
async fn an_invoice_paid_in_parts_is_one_payment_per_money_movement() {
    run_on(
        "partial payments",
        &[ApiVersion::Basil],
        &[
            (
                "invoice paid by two payment intents",
                Expect::paid("eur", 2, 10_000),
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 10_000, "eur", v);
                    f.subscription(ids, "active");
                    f.invoice(ids, 10_000, "eur", "subscription_create");
                    f.invoice_payment(&ids.part(1), 4000, "eur");
                    part_money(f, &ids.part(1), 4000, "eur");
                    f.invoice_payment(&ids.part(2), 6000, "eur");
                    part_money(f, &ids.part(2), 6000, "eur");
                },
            ),
            (
                "invoice paid in three parts, invoice events only",
                Expect::paid("eur", 3, 9000),
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 9000, "eur", v);
                    f.invoice(ids, 9000, "eur", "subscription_create");
                    f.invoice_payment(&ids.part(1), 1000, "eur");
                    f.invoice_payment(&ids.part(2), 3000, "eur");
                    f.invoice_payment(&ids.part(3), 5000, "eur");
                },
            ),
            (
                "one payment intent pays two invoices",
                Expect::paid("usd", 1, 5000),
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 3000, "usd", v);
                    f.invoice(ids, 3000, "usd", "subscription_create");
                    f.invoice(&ids.other_invoice(1), 2000, "usd", "manual");
                    f.invoice_payment(ids, 3000, "usd");
                    f.invoice_payment(&ids.other_invoice(1), 2000, "usd");
                    part_money(f, ids, 5000, "usd");
                },
            ),
            (
                "one payment intent pays two invoices, invoice events only",
                Expect::paid("usd", 1, 5000),
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 3000, "usd", v);
                    f.invoice(ids, 3000, "usd", "subscription_create");
                    f.invoice(&ids.other_invoice(1), 2000, "usd", "manual");
                    f.invoice_payment(ids, 3000, "usd");
                    f.invoice_payment(&ids.other_invoice(1), 2000, "usd");
                },
            ),
            (
                "one of two parts refunded",
                Expect {
                    refunded: 4000,
                    ..Expect::paid("usd", 2, 10_000)
                },
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 10_000, "usd", v);
                    f.invoice(ids, 10_000, "usd", "subscription_create");
                    f.invoice_payment(&ids.part(1), 4000, "usd");
                    part_money(f, &ids.part(1), 4000, "usd");
                    f.invoice_payment(&ids.part(2), 6000, "usd");
                    part_money(f, &ids.part(2), 6000, "usd");
                    let first = ids.part(1);
                    f.refund(
                        "refund.created",
                        &first,
                        &format!("re_{}", first.ch),
                        4000,
                        "succeeded",
                    );
                    f.charge(
                        "charge.refunded",
                        &first,
                        4000,
                        Some(4000),
                        4000,
                        "usd",
                        true,
                    );
                },
            ),
            (
                "one of two parts disputed and lost",
                Expect {
                    disputed: 6000,
                    ..Expect::paid("usd", 2, 10_000)
                },
                |f, ids, v| {
                    f.session(ids, "subscription", "paid", 10_000, "usd", v);
                    f.invoice(ids, 10_000, "usd", "subscription_create");
                    f.invoice_payment(&ids.part(1), 4000, "usd");
                    part_money(f, &ids.part(1), 4000, "usd");
                    f.invoice_payment(&ids.part(2), 6000, "usd");
                    part_money(f, &ids.part(2), 6000, "usd");
                    let second = ids.part(2);
                    f.dispute(
                        "charge.dispute.funds_withdrawn",
                        &second,
                        6000,
                        "needs_response",
                        1,
                    );
                    f.dispute("charge.dispute.closed", &second, 6000, "lost", 1);
                },
            ),
        ],
    )
    .await;
}

async fn post(h: &Harness, event: &Value) {
    let body = serde_json::to_vec(event).expect("event json");
    let signature = sign(&body, SECRET, OffsetDateTime::now_utc().unix_timestamp());
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", h.base_url))
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .expect("post webhook");
    assert_eq!(response.status(), 200);
}

/// Refunds and disputes show on the payment's day by default, and on their own day with
/// `refunds_on=event`.
#[tokio::test]
async fn refunds_and_disputes_on_the_payments_day_or_their_own() {
    let h = Harness::start_with(&["--stripe-webhook-secrets", SECRET]).await;
    let visitor = visitor();
    let from = From {
        utm_source: Some("newsletter"),
        utm_medium: Some("email"),
        utm_campaign: Some("refund_days"),
        referrer: None,
        channel: None,
    };
    let message = page_view(&visitor, &session(), days_ago(4), "/", &from);
    h.publish(&message, &uuid::Uuid::new_v4().to_string()).await;
    h.drained().await;

    let paid = days_ago(3);
    let today = OffsetDateTime::now_utc();
    for version in ApiVersion::ALL {
        let ids = Ids::new(&uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut flow = Flow::new(version, paid.unix_timestamp());
        flow.checkout(&ids, 10_000, "usd", &visitor);
        flow.refund(
            "refund.created",
            &ids,
            &format!("re_{}", ids.ch),
            3000,
            "succeeded",
        );
        flow.dispute(
            "charge.dispute.funds_withdrawn",
            &ids,
            2000,
            "needs_response",
            1,
        );
        for event in &mut flow.events {
            if event["type"] != "checkout.session.completed"
                && event["type"] != "payment_intent.succeeded"
                && event["type"] != "charge.succeeded"
            {
                event["data"]["object"]["created"] = json!(today.unix_timestamp() - 60);
                event["created"] = json!(today.unix_timestamp() - 60);
            }
        }
        for event in &flow.events {
            post(&h, event).await;
        }
    }
    let day = |d: OffsetDateTime| d.date().to_string();
    let money = |report: &Value| -> Vec<i64> {
        let row = common::row(report, "value", "refund_days");
        ["payments"]
            .iter()
            .map(|f| row.and_then(|r| r[f].as_i64()).unwrap_or(0))
            .chain(["gross", "refunded", "disputed", "net"].iter().map(|f| {
                row.and_then(|r| r["revenue"].as_array())
                    .and_then(|l| l.iter().find(|m| m["currency"] == "usd"))
                    .and_then(|m| m[f].as_i64())
                    .unwrap_or(0)
            }))
            .collect()
    };
    let report = |from: OffsetDateTime, to: OffsetDateTime, on: &str| {
        format!(
            "/api/v1/attribution?dimension=campaign&from={}&to={}&refunds_on={on}",
            day(from),
            day(to)
        )
    };
    // Payment day, both versions: 2 × 10000 gross, 2 × 3000 refunded, 2 × 2000 disputed.
    let r = h.report(&report(paid, paid, "payment")).await;
    assert_eq!(money(&r), [2, 20_000, 6000, 4000, 10_000], "{r:#}");
    let r = h.report(&report(paid, paid, "event")).await;
    assert_eq!(money(&r), [2, 20_000, 0, 0, 20_000], "{r:#}");
    let r = h.report(&report(today, today, "payment")).await;
    assert_eq!(money(&r), [0, 0, 0, 0, 0], "{r:#}");
    let r = h.report(&report(today, today, "event")).await;
    assert_eq!(money(&r), [0, 0, 6000, 4000, -10_000], "{r:#}");
    // The time series books them on their own day too.
    let series = h
        .report(&format!(
            "/api/v1/timeseries?from={}&to={}&refunds_on=event",
            day(paid),
            day(today)
        ))
        .await;
    let on = |d: OffsetDateTime, field: &str| -> i64 {
        series["days"]
            .as_array()
            .and_then(|days| days.iter().find(|x| x["date"] == day(d)))
            .and_then(|x| x["revenue"][0][field].as_i64())
            .unwrap_or(0)
    };
    assert_eq!(
        (on(paid, "gross"), on(paid, "refunded")),
        (20_000, 0),
        "{series:#}"
    );
    assert_eq!(
        (
            on(today, "gross"),
            on(today, "refunded"),
            on(today, "disputed")
        ),
        (0, 6000, 4000)
    );
    let (status, _) = h
        .get("/api/v1/attribution?refunds_on=later", Some(&h.token))
        .await;
    assert_eq!(status, 400);
    h.cleanup().await;
}

/// Identified on device A (paid search), pays on device B (direct, never identified) with the
/// same email: credited to paid search, and B joins the user. Identifying an older device of
/// the user later does not move the payment's credit; touches older than the lookback window
/// do not win it.
#[tokio::test]
async fn a_payer_is_credited_across_devices_by_email_and_the_credit_stays() {
    let h = Harness::start_with(&[
        "--stripe-webhook-secrets",
        SECRET,
        "--attribution-lookback",
        "30days",
    ])
    .await;
    let from = |source: &'static str, campaign: &'static str| From {
        utm_source: Some(source),
        utm_medium: Some("cpc"),
        utm_campaign: Some(campaign),
        referrer: None,
        channel: None,
    };
    let email = "buyer@example.com";
    let hash = zori_core::email::hash(email, &h.salt);
    let (a, b, c) = (visitor(), visitor(), visitor());
    // Beyond the 30-day window, then inside it: the window's earliest wins.
    let (old, recent) = (visitor(), visitor());
    let other_email = "second@example.com";
    let other_hash = zori_core::email::hash(other_email, &h.salt);
    let direct = From::default();
    for message in [
        page_view(
            &a,
            &session(),
            days_ago(10),
            "/",
            &from("google", "paid_search"),
        ),
        common::identify(&a, Some("user-a"), Some(&hash), days_ago(10)),
        page_view(&b, &session(), days_ago(1), "/", &direct),
        page_view(
            &old,
            &session(),
            days_ago(60),
            "/",
            &from("twitter", "too_old"),
        ),
        common::identify(&old, Some("user-o"), Some(&other_hash), days_ago(60)),
        page_view(
            &recent,
            &session(),
            days_ago(5),
            "/",
            &from("podcast", "in_window"),
        ),
        common::identify(&recent, Some("user-o"), None, days_ago(5)),
    ] {
        h.publish(&message, &uuid::Uuid::new_v4().to_string()).await;
    }
    h.drained().await;

    let pay = |visitor: &str, email: &str| {
        let ids = Ids::new(&uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut flow = Flow::new(
            ApiVersion::Basil,
            OffsetDateTime::now_utc().unix_timestamp() - 60,
        );
        flow.checkout(&ids, 9900, "usd", visitor);
        for event in &mut flow.events {
            if event["type"] == "checkout.session.completed" {
                event["data"]["object"]["customer_details"]["email"] = json!(email);
            }
        }
        flow.events
    };
    for event in pay(&b, email).iter().chain(&pay(&recent, other_email)) {
        post(&h, event).await;
    }
    let path = format!("/api/v1/attribution?dimension=campaign&{}", range(70));
    let campaign_net =
        |report: &Value, campaign: &str| common::net(common::row(report, "value", campaign), "usd");
    let report = h.report(&path).await;
    assert_eq!(campaign_net(&report, "paid_search"), 9900, "{report:#}");
    assert_eq!(campaign_net(&report, "(not set)"), 0, "{report:#}");
    assert_eq!(campaign_net(&report, "in_window"), 9900, "{report:#}");
    assert_eq!(campaign_net(&report, "too_old"), 0, "{report:#}");
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT credit_visitor_id, credit_reason FROM payments ORDER BY payment_id")
            .fetch_all(&h.pool)
            .await
            .expect("read credits");
    assert_eq!(
        reasons,
        [
            (a.clone(), "email".to_owned()),
            (recent.clone(), "visitor".to_owned())
        ]
    );
    // The paying device joined the user.
    let linked: Option<String> = sqlx::query_scalar(
        "SELECT u.app_id FROM identities i JOIN users u USING (user_id) WHERE i.visitor_id = $1",
    )
    .bind(&b)
    .fetch_optional(&h.pool)
    .await
    .expect("read identity");
    assert_eq!(linked.as_deref(), Some("user-a"));
    let journey = h.report(&format!("/api/v1/visitors/{a}/journey")).await;
    assert_eq!(
        journey["payments"][0]["credit_reason"], "email",
        "{journey:#}"
    );
    assert_eq!(journey["payments"][0]["amount"], 9900, "{journey:#}");

    // Later an older device of the user shows up: the closed credit does not move.
    for message in [
        page_view(
            &c,
            &session(),
            days_ago(20),
            "/",
            &from("twitter", "older_device"),
        ),
        common::identify(&c, Some("user-a"), None, days_ago(0)),
    ] {
        h.publish(&message, &uuid::Uuid::new_v4().to_string()).await;
    }
    h.drained().await;
    let report = h.report(&path).await;
    assert_eq!(campaign_net(&report, "paid_search"), 9900, "{report:#}");
    assert_eq!(campaign_net(&report, "older_device"), 0, "{report:#}");
    h.cleanup().await;
}

/// Reports count live payments by default, test-mode ones only while there is no live payment
/// at all, and both only when asked (`livemode=all`).
#[tokio::test]
async fn reports_default_to_live_payments_and_never_mix_them_unasked() {
    let h = Harness::start_with(&["--stripe-webhook-secrets", SECRET]).await;
    let visitor = visitor();
    let from = From {
        utm_source: Some("newsletter"),
        utm_medium: Some("email"),
        utm_campaign: Some("modes"),
        referrer: None,
        channel: None,
    };
    let message = page_view(&visitor, &session(), days_ago(1), "/", &from);
    h.publish(&message, &uuid::Uuid::new_v4().to_string()).await;
    h.drained().await;
    let pay = |amount: i64, live: bool| {
        let ids = Ids::new(&uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut flow = Flow::new(
            ApiVersion::Basil,
            OffsetDateTime::now_utc().unix_timestamp() - 60,
        );
        flow.checkout(&ids, amount, "usd", &visitor);
        for event in &mut flow.events {
            event["livemode"] = json!(live);
            event["data"]["object"]["livemode"] = json!(live);
        }
        flow.events
    };
    let overview = |mode: &str| format!("/api/v1/overview?{}{mode}", range(2));
    let net = |report: &Value| {
        report["revenue"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["currency"] == "usd"))
            .and_then(|m| m["net"].as_i64())
            .unwrap_or(0)
    };

    for event in pay(1000, false) {
        post(&h, &event).await;
    }
    // Only test payments so far: shown by default, and said so.
    let report = h.report(&overview("")).await;
    assert_eq!(
        (net(&report), &report["livemode"]),
        (1000, &json!(false)),
        "{report:#}"
    );

    for event in pay(5000, true) {
        post(&h, &event).await;
    }
    for (mode, expected, shown) in [
        ("", 5000, json!(true)),
        ("&livemode=true", 5000, json!(true)),
        ("&livemode=false", 1000, json!(false)),
        ("&livemode=all", 6000, Value::Null),
    ] {
        let report = h.report(&overview(mode)).await;
        assert_eq!(
            (net(&report), &report["livemode"]),
            (expected, &shown),
            "{mode}: {report:#}"
        );
    }
    let attribution = h
        .report(&format!(
            "/api/v1/attribution?dimension=campaign&{}",
            range(2)
        ))
        .await;
    assert_eq!(
        common::net(common::row(&attribution, "value", "modes"), "usd"),
        5000
    );
    let (status, _) = h
        .get("/api/v1/overview?livemode=both", Some(&h.token))
        .await;
    assert_eq!(status, 400);
    h.cleanup().await;
}
