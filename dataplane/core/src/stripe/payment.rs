//! Payment facts from a Stripe event payload. Parsed tolerantly from `serde_json::Value` so
//! that any Stripe API version works: unknown fields are ignored, ids may be strings or
//! expanded objects, and fields that moved between versions are read from every place.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{currency, email, enrich::is_valid_visitor_id, text::clean};

/// Every Stripe id a payment is known by. Two events describe the same payment when they
/// share any id (checkout session, payment intent, charge or invoice).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIds {
    pub checkout_session: Option<String>,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    pub invoice: Option<String>,
    pub subscription: Option<String>,
    pub customer: Option<String>,
}

impl PaymentIds {
    /// The ids that identify the payment itself (not the subscription or customer).
    pub fn aliases(&self) -> Vec<&str> {
        [
            &self.checkout_session,
            &self.payment_intent,
            &self.charge,
            &self.invoice,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PaymentChange {
    /// Money received: `amount` in minor units of `currency` (lower-case ISO 4217).
    Paid {
        amount: i64,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        paid_at: OffsetDateTime,
    },
    /// Cumulative amount refunded so far on the payment (Stripe's `amount_refunded`), with the
    /// refunded charge's own `amount` and creation time, so a refund that arrives before the
    /// payment event still records the payment right.
    Refunded {
        amount: i64,
        #[serde(with = "time::serde::rfc3339")]
        paid_at: OffsetDateTime,
        amount_refunded: i64,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        refunded_at: OffsetDateTime,
    },
}

/// What one handled Stripe event says about one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFacts {
    pub event_id: String,
    pub event_type: String,
    pub livemode: bool,
    pub ids: PaymentIds,
    pub change: PaymentChange,
    /// `zori_visitor_id` from the metadata of the object or any related object in the payload.
    pub visitor_id: Option<String>,
    /// The payer's email, for matching to an identified user; hash it before storing.
    pub email: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StripeEventError {
    #[error("malformed stripe event json: {0}")]
    MalformedJson(String),
    /// A field every Stripe event has (`id`, `type`, `created`, `data.object`).
    #[error("stripe event is missing {0}")]
    MissingEventField(&'static str),
    #[error("stripe event has an invalid created timestamp {0}")]
    InvalidCreated(i64),
    /// A field a handled event type needs (`amount_total`, `currency`, …).
    #[error("{event_type} event {event_id} is missing {field}")]
    MissingField {
        event_id: String,
        event_type: String,
        field: &'static str,
    },
    #[error("{event_type} event {event_id} has an invalid currency {value:?}")]
    InvalidCurrency {
        event_id: String,
        event_type: String,
        value: String,
    },
}

/// Metadata key carrying the visitor id (set by the shop when it creates the payment).
pub const VISITOR_METADATA_KEY: &str = "zori_visitor_id";

/// Longest description kept.
const MAX_DESCRIPTION_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CheckoutSession,
    PaymentIntent,
    Charge,
    Invoice,
    Refund,
}

impl Kind {
    fn of(event_type: &str) -> Option<Kind> {
        Some(match event_type {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                Kind::CheckoutSession
            }
            "payment_intent.succeeded" => Kind::PaymentIntent,
            "charge.succeeded" => Kind::Charge,
            "invoice.paid" | "invoice.payment_succeeded" => Kind::Invoice,
            "charge.refunded" => Kind::Refund,
            _ => return None,
        })
    }
}

/// Reads a verified webhook body. `Ok(None)` for event types that carry no payment change
/// (they are acknowledged and ignored), unpaid checkout sessions and zero-amount invoices.
pub fn extract(body: &[u8]) -> Result<Option<PaymentFacts>, StripeEventError> {
    let event: Value =
        serde_json::from_slice(body).map_err(|e| StripeEventError::MalformedJson(e.to_string()))?;
    if !event.is_object() {
        return Err(StripeEventError::MalformedJson(
            "not a json object".to_owned(),
        ));
    }
    let event_id = str_at(&event, &["id"]).ok_or(StripeEventError::MissingEventField("id"))?;
    let event_type =
        str_at(&event, &["type"]).ok_or(StripeEventError::MissingEventField("type"))?;
    let Some(kind) = Kind::of(event_type) else {
        return Ok(None);
    };
    let object = event
        .get("data")
        .and_then(|d| d.get("object"))
        .filter(|o| o.is_object())
        .ok_or(StripeEventError::MissingEventField("data.object"))?;
    let cx = Cx {
        event_id,
        event_type,
        object,
    };
    let created = event
        .get("created")
        .and_then(Value::as_i64)
        .or_else(|| object.get("created").and_then(Value::as_i64))
        .ok_or(StripeEventError::MissingEventField("created"))?;
    let at = OffsetDateTime::from_unix_timestamp(created)
        .map_err(|_| StripeEventError::InvalidCreated(created))?;

    let Some((change, ids, email)) = (match kind {
        Kind::CheckoutSession => checkout_session(&cx, at)?,
        Kind::PaymentIntent => payment_intent(&cx, at)?,
        Kind::Charge => charge(&cx, at)?,
        Kind::Invoice => invoice(&cx, at)?,
        Kind::Refund => refund(&cx, at)?,
    }) else {
        return Ok(None);
    };

    Ok(Some(PaymentFacts {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        livemode: event
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ids,
        change,
        visitor_id: visitor_id(kind, object),
        email: email.and_then(email::normalize),
        description: description(object),
    }))
}

type Extracted<'a> = Option<(PaymentChange, PaymentIds, Option<&'a str>)>;

/// The event being read.
struct Cx<'a> {
    event_id: &'a str,
    event_type: &'a str,
    object: &'a Value,
}

impl<'a> Cx<'a> {
    fn missing(&self, field: &'static str) -> StripeEventError {
        StripeEventError::MissingField {
            event_id: self.event_id.to_owned(),
            event_type: self.event_type.to_owned(),
            field,
        }
    }

    fn amount(&self, field: &'static str) -> Result<i64, StripeEventError> {
        self.object
            .get(field)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.missing(field))
    }

    fn currency(&self) -> Result<String, StripeEventError> {
        let raw = str_at(self.object, &["currency"]).ok_or_else(|| self.missing("currency"))?;
        currency::normalize_code(raw).ok_or_else(|| StripeEventError::InvalidCurrency {
            event_id: self.event_id.to_owned(),
            event_type: self.event_type.to_owned(),
            value: raw.to_owned(),
        })
    }

    fn own_id(&self) -> Option<String> {
        str_at(self.object, &["id"]).map(str::to_owned)
    }

    /// An id field that may be a string or an expanded object.
    fn id_of(&self, path: &[&str]) -> Option<String> {
        id_of(self.object, path)
    }

    fn str(&self, path: &[&str]) -> Option<&'a str> {
        str_at(self.object, path)
    }
}

fn checkout_session<'a>(
    cx: &Cx<'a>,
    at: OffsetDateTime,
) -> Result<Extracted<'a>, StripeEventError> {
    if cx.str(&["payment_status"]) != Some("paid") {
        return Ok(None);
    }
    let change = PaymentChange::Paid {
        amount: cx.amount("amount_total")?,
        currency: cx.currency()?,
        paid_at: at,
    };
    let ids = PaymentIds {
        checkout_session: cx.own_id(),
        payment_intent: cx.id_of(&["payment_intent"]),
        charge: cx.id_of(&["payment_intent", "latest_charge"]),
        invoice: cx.id_of(&["invoice"]),
        subscription: cx.id_of(&["subscription"]),
        customer: cx.id_of(&["customer"]),
    };
    let email = cx
        .str(&["customer_details", "email"])
        .or_else(|| cx.str(&["customer_email"]));
    Ok(Some((change, ids, email)))
}

fn payment_intent<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let amount = match cx.object.get("amount_received").and_then(Value::as_i64) {
        Some(amount) => amount,
        None => cx.amount("amount")?,
    };
    let change = PaymentChange::Paid {
        amount,
        currency: cx.currency()?,
        paid_at: at,
    };
    let ids = PaymentIds {
        payment_intent: cx.own_id(),
        charge: cx
            .id_of(&["latest_charge"])
            .or_else(|| first_in_list(cx.object, &["charges"], &["id"])),
        invoice: cx.id_of(&["invoice"]),
        customer: cx.id_of(&["customer"]),
        ..PaymentIds::default()
    };
    Ok(Some((change, ids, cx.str(&["receipt_email"]))))
}

fn charge<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let change = PaymentChange::Paid {
        amount: cx.amount("amount")?,
        currency: cx.currency()?,
        paid_at: at,
    };
    Ok(Some((change, charge_ids(cx), charge_email(cx))))
}

fn refund<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let paid_at = cx
        .object
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or(at);
    let change = PaymentChange::Refunded {
        amount: cx.amount("amount")?,
        paid_at,
        amount_refunded: cx.amount("amount_refunded")?,
        currency: cx.currency()?,
        refunded_at: at,
    };
    Ok(Some((change, charge_ids(cx), charge_email(cx))))
}

fn charge_ids(cx: &Cx<'_>) -> PaymentIds {
    PaymentIds {
        charge: cx.own_id(),
        payment_intent: cx.id_of(&["payment_intent"]),
        invoice: cx.id_of(&["invoice"]),
        customer: cx.id_of(&["customer"]),
        ..PaymentIds::default()
    }
}

fn charge_email<'a>(cx: &Cx<'a>) -> Option<&'a str> {
    cx.str(&["billing_details", "email"])
        .or_else(|| cx.str(&["receipt_email"]))
}

fn invoice<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let amount = match cx.object.get("amount_paid").and_then(Value::as_i64) {
        Some(amount) => amount,
        None => cx.amount("total")?,
    };
    if amount == 0 {
        return Ok(None);
    }
    let change = PaymentChange::Paid {
        amount,
        currency: cx.currency()?,
        paid_at: at,
    };
    // Since API 2025-03-31 the payment intent / charge live in `payments.data[].payment`.
    let ids = PaymentIds {
        invoice: cx.own_id(),
        payment_intent: cx
            .id_of(&["payment_intent"])
            .or_else(|| first_in_list(cx.object, &["payments"], &["payment", "payment_intent"])),
        charge: cx
            .id_of(&["charge"])
            .or_else(|| first_in_list(cx.object, &["payments"], &["payment", "charge"])),
        subscription: cx
            .id_of(&["subscription"])
            .or_else(|| cx.id_of(&["parent", "subscription_details", "subscription"])),
        customer: cx.id_of(&["customer"]),
        ..PaymentIds::default()
    };
    Ok(Some((change, ids, cx.str(&["customer_email"]))))
}

/// `zori_visitor_id` from the object's metadata, else from related objects in the payload.
fn visitor_id(kind: Kind, object: &Value) -> Option<String> {
    let from_metadata = |value: &Value| -> Option<String> {
        let id = value
            .get("metadata")?
            .get(VISITOR_METADATA_KEY)?
            .as_str()?
            .trim();
        is_valid_visitor_id(id).then(|| id.to_owned())
    };
    if let Some(id) = from_metadata(object) {
        return Some(id);
    }
    if kind == Kind::CheckoutSession {
        let reference = str_at(object, &["client_reference_id"]).map(str::trim);
        if let Some(reference) = reference.filter(|r| r.starts_with("vis_")) {
            if is_valid_visitor_id(reference) {
                return Some(reference.to_owned());
            }
        }
    }
    let related = [
        object.get("subscription_details"),
        object
            .get("parent")
            .and_then(|p| p.get("subscription_details")),
    ];
    let lines = list(object, &["lines"]);
    let expanded = [
        "payment_intent",
        "customer",
        "invoice",
        "subscription",
        "charge",
    ]
    .into_iter()
    .filter_map(|key| object.get(key).filter(|v| v.is_object()));
    related
        .into_iter()
        .flatten()
        .chain(lines)
        .chain(expanded)
        .find_map(from_metadata)
}

fn description(object: &Value) -> Option<String> {
    str_at(object, &["description"])
        .and_then(|d| clean(d, MAX_DESCRIPTION_LEN))
        .or_else(|| {
            list(object, &["lines"])
                .find_map(|line| str_at(line, &["description"]))
                .and_then(|d| clean(d, MAX_DESCRIPTION_LEN))
        })
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// A non-empty (trimmed) string at `path`.
fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An id at `path`: a string, or an expanded object's `id`.
fn id_of(value: &Value, path: &[&str]) -> Option<String> {
    let v = at(value, path)?;
    let id = match v {
        Value::Object(_) => str_at(v, &["id"]),
        _ => v.as_str().map(str::trim).filter(|s| !s.is_empty()),
    };
    id.map(str::to_owned)
}

/// Elements of a Stripe list object (`{"object":"list","data":[...]}`) at `path`.
fn list<'a>(value: &'a Value, path: &[&str]) -> impl Iterator<Item = &'a Value> {
    at(value, path)
        .and_then(|l| l.get("data"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn first_in_list(value: &Value, list_path: &[&str], id_path: &[&str]) -> Option<String> {
    list(value, list_path).find_map(|item| id_of(item, id_path))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    const CREATED: i64 = 1_730_541_600; // 2024-11-02 10:00:00 UTC
    const AT: OffsetDateTime = datetime!(2024-11-02 10:00:00 UTC);

    fn envelope(event_type: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "evt_1QAbCdEfGhIjKlMn",
            "object": "event",
            "api_version": "2024-06-20",
            "created": CREATED,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": event_type,
            "data": {"object": object}
        }))
        .unwrap()
    }

    fn facts(event_type: &str, object: Value) -> PaymentFacts {
        extract(&envelope(event_type, object)).unwrap().unwrap()
    }

    fn paid(amount: i64, currency: &str) -> PaymentChange {
        PaymentChange::Paid {
            amount,
            currency: currency.to_owned(),
            paid_at: AT,
        }
    }

    fn checkout_session() -> Value {
        json!({
            "id": "cs_test_a1b2c3",
            "object": "checkout.session",
            "amount_subtotal": 9900,
            "amount_total": 9900,
            "client_reference_id": null,
            "created": CREATED - 600,
            "currency": "usd",
            "customer": "cus_Q1w2e3",
            "customer_details": {"email": "Jane@Example.com", "name": "Jane Doe"},
            "customer_email": null,
            "invoice": null,
            "livemode": false,
            "metadata": {"zori_visitor_id": "vis_1f0e3dad-9990-4c5a-8a63-6b4e0f1d2c3b"},
            "mode": "payment",
            "payment_intent": "pi_3Q1a2b3c",
            "payment_status": "paid",
            "status": "complete",
            "subscription": null
        })
    }

    #[test]
    fn checkout_session_with_metadata_on_session_only() {
        let f = facts("checkout.session.completed", checkout_session());
        assert_eq!(f.event_id, "evt_1QAbCdEfGhIjKlMn");
        assert_eq!(f.event_type, "checkout.session.completed");
        assert!(!f.livemode);
        assert_eq!(f.change, paid(9900, "usd"));
        assert_eq!(
            f.ids,
            PaymentIds {
                checkout_session: Some("cs_test_a1b2c3".into()),
                payment_intent: Some("pi_3Q1a2b3c".into()),
                customer: Some("cus_Q1w2e3".into()),
                ..PaymentIds::default()
            }
        );
        assert_eq!(f.ids.aliases(), ["cs_test_a1b2c3", "pi_3Q1a2b3c"]);
        assert_eq!(
            f.visitor_id.as_deref(),
            Some("vis_1f0e3dad-9990-4c5a-8a63-6b4e0f1d2c3b")
        );
        assert_eq!(f.email.as_deref(), Some("jane@example.com"));
        assert_eq!(f.description, None);
    }

    #[test]
    fn checkout_session_subscription_with_client_reference_id() {
        let mut session = checkout_session();
        session["mode"] = json!("subscription");
        session["metadata"] = json!({});
        session["client_reference_id"] = json!("vis_abc123");
        session["payment_intent"] = Value::Null;
        session["invoice"] = json!("in_1Q9z8y");
        session["subscription"] = json!("sub_1Q7x6w");
        session["customer_details"] = Value::Null;
        session["customer_email"] = json!("buyer@example.org");
        session["currency"] = json!("EUR");
        let f = facts("checkout.session.async_payment_succeeded", session);
        assert_eq!(f.change, paid(9900, "eur"));
        assert_eq!(f.ids.invoice.as_deref(), Some("in_1Q9z8y"));
        assert_eq!(f.ids.subscription.as_deref(), Some("sub_1Q7x6w"));
        assert_eq!(f.ids.payment_intent, None);
        assert_eq!(f.visitor_id.as_deref(), Some("vis_abc123"));
        assert_eq!(f.email.as_deref(), Some("buyer@example.org"));
    }

    #[test]
    fn checkout_session_client_reference_must_look_like_a_visitor() {
        let mut session = checkout_session();
        session["metadata"] = Value::Null;
        session["client_reference_id"] = json!("order_42");
        assert_eq!(
            facts("checkout.session.completed", session).visitor_id,
            None
        );
    }

    #[test]
    fn checkout_session_with_expanded_payment_intent() {
        let mut session = checkout_session();
        session["metadata"] = json!({"zori_visitor_id": ""});
        session["payment_intent"] = json!({
            "id": "pi_3Q1a2b3c",
            "object": "payment_intent",
            "latest_charge": "ch_3Q1a2b3c",
            "metadata": {"zori_visitor_id": "vis_from_pi"}
        });
        let f = facts("checkout.session.completed", session);
        assert_eq!(f.ids.payment_intent.as_deref(), Some("pi_3Q1a2b3c"));
        assert_eq!(f.ids.charge.as_deref(), Some("ch_3Q1a2b3c"));
        assert_eq!(
            f.visitor_id.as_deref(),
            Some("vis_from_pi"),
            "empty metadata value is absent"
        );
    }

    #[test]
    fn unpaid_checkout_session_is_ignored() {
        for status in ["unpaid", "no_payment_required"] {
            let mut session = checkout_session();
            session["payment_status"] = json!(status);
            assert_eq!(
                extract(&envelope("checkout.session.completed", session)),
                Ok(None)
            );
        }
        let mut session = checkout_session();
        session["payment_status"] = Value::Null;
        assert_eq!(
            extract(&envelope("checkout.session.completed", session)),
            Ok(None)
        );
    }

    #[test]
    fn payment_intent_in_zero_decimal_currency() {
        let f = facts(
            "payment_intent.succeeded",
            json!({
                "id": "pi_3JpY",
                "object": "payment_intent",
                "amount": 5000,
                "amount_received": 4500,
                "currency": "jpy",
                "customer": {"id": "cus_J1", "object": "customer", "metadata": {}},
                "description": "Tea set",
                "invoice": null,
                "latest_charge": "ch_3JpY",
                "metadata": {"zori_visitor_id": "vis_jp"},
                "receipt_email": "taro@example.jp",
                "status": "succeeded"
            }),
        );
        assert_eq!(f.change, paid(4500, "jpy"));
        assert_eq!(crate::currency::format_minor(4500, "jpy"), "4500");
        assert_eq!(
            f.ids,
            PaymentIds {
                payment_intent: Some("pi_3JpY".into()),
                charge: Some("ch_3JpY".into()),
                customer: Some("cus_J1".into()),
                ..PaymentIds::default()
            }
        );
        assert_eq!(f.visitor_id.as_deref(), Some("vis_jp"));
        assert_eq!(f.email.as_deref(), Some("taro@example.jp"));
        assert_eq!(f.description.as_deref(), Some("Tea set"));
    }

    #[test]
    fn payment_intent_of_an_old_api_version() {
        let f = facts(
            "payment_intent.succeeded",
            json!({
                "id": "pi_old",
                "object": "payment_intent",
                "amount": 2000,
                "currency": "gbp",
                "charges": {"object": "list", "data": [{"id": "ch_old", "object": "charge"}]},
                "invoice": "in_old",
                "metadata": {}
            }),
        );
        assert_eq!(f.change, paid(2000, "gbp"), "falls back to amount");
        assert_eq!(f.ids.charge.as_deref(), Some("ch_old"));
        assert_eq!(f.ids.invoice.as_deref(), Some("in_old"));
        assert_eq!(f.visitor_id, None);
    }

    fn charge_object() -> Value {
        json!({
            "id": "ch_3Q5r",
            "object": "charge",
            "amount": 4900,
            "amount_captured": 4900,
            "amount_refunded": 0,
            "billing_details": {"email": null, "name": "Jane"},
            "captured": true,
            "created": CREATED,
            "currency": "usd",
            "customer": "cus_Q1w2e3",
            "description": "Subscription creation",
            "invoice": null,
            "livemode": true,
            "metadata": {},
            "paid": true,
            "payment_intent": "pi_3Q5r",
            "receipt_email": "jane@example.com",
            "refunded": false,
            "status": "succeeded"
        })
    }

    #[test]
    fn charge_without_metadata() {
        let f = facts("charge.succeeded", charge_object());
        assert_eq!(f.change, paid(4900, "usd"));
        assert_eq!(
            f.ids,
            PaymentIds {
                charge: Some("ch_3Q5r".into()),
                payment_intent: Some("pi_3Q5r".into()),
                customer: Some("cus_Q1w2e3".into()),
                ..PaymentIds::default()
            }
        );
        assert_eq!(f.visitor_id, None);
        assert_eq!(
            f.email.as_deref(),
            Some("jane@example.com"),
            "falls back to receipt_email"
        );
        assert_eq!(f.description.as_deref(), Some("Subscription creation"));
    }

    #[test]
    fn charge_with_billing_email_and_expanded_invoice() {
        let mut charge = charge_object();
        charge["billing_details"]["email"] = json!("billing@example.com");
        charge["invoice"] = json!({
            "id": "in_exp",
            "object": "invoice",
            "metadata": {"zori_visitor_id": "vis_from_invoice"}
        });
        let f = facts("charge.succeeded", charge);
        assert_eq!(f.email.as_deref(), Some("billing@example.com"));
        assert_eq!(f.ids.invoice.as_deref(), Some("in_exp"));
        assert_eq!(f.visitor_id.as_deref(), Some("vis_from_invoice"));
    }

    /// `invoice.paid` on API 2025-03-31 and later: no top-level `subscription` or
    /// `payment_intent`; the visitor id only in `parent.subscription_details.metadata`.
    fn subscription_invoice() -> Value {
        json!({
            "id": "in_1QsUb",
            "object": "invoice",
            "amount_due": 2900,
            "amount_paid": 2900,
            "amount_remaining": 0,
            "billing_reason": "subscription_cycle",
            "created": CREATED - 3600,
            "currency": "usd",
            "customer": "cus_Q1w2e3",
            "customer_email": "jane@example.com",
            "description": null,
            "lines": {
                "object": "list",
                "data": [{
                    "id": "il_1",
                    "object": "line_item",
                    "amount": 2900,
                    "description": "1 × Pro (at $29.00 / month)",
                    "metadata": {}
                }],
                "has_more": false
            },
            "metadata": {},
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {
                    "metadata": {"zori_visitor_id": "vis_sub_only"},
                    "subscription": "sub_1Q7x6w"
                }
            },
            "status": "paid",
            "total": 2900
        })
    }

    #[test]
    fn subscription_invoice_with_metadata_only_in_parent() {
        let f = facts("invoice.paid", subscription_invoice());
        assert_eq!(f.change, paid(2900, "usd"));
        assert_eq!(
            f.ids,
            PaymentIds {
                invoice: Some("in_1QsUb".into()),
                subscription: Some("sub_1Q7x6w".into()),
                customer: Some("cus_Q1w2e3".into()),
                ..PaymentIds::default()
            }
        );
        assert_eq!(f.visitor_id.as_deref(), Some("vis_sub_only"));
        assert_eq!(f.email.as_deref(), Some("jane@example.com"));
        assert_eq!(
            f.description.as_deref(),
            Some("1 × Pro (at $29.00 / month)")
        );
    }

    #[test]
    fn invoice_payments_list_links_the_payment_intent() {
        let mut invoice = subscription_invoice();
        invoice["payments"] = json!({
            "object": "list",
            "data": [{
                "id": "inpay_1",
                "object": "invoice_payment",
                "payment": {"type": "payment_intent", "payment_intent": "pi_new"}
            }]
        });
        let f = facts("invoice.payment_succeeded", invoice);
        assert_eq!(f.ids.payment_intent.as_deref(), Some("pi_new"));
    }

    #[test]
    fn invoice_of_an_old_api_version() {
        let f = facts(
            "invoice.payment_succeeded",
            json!({
                "id": "in_old",
                "object": "invoice",
                "amount_paid": 1500,
                "charge": "ch_old",
                "currency": "eur",
                "customer": "cus_old",
                "customer_email": null,
                "lines": {"object": "list", "data": [
                    {"id": "il_a", "metadata": {}},
                    {"id": "il_b", "metadata": {"zori_visitor_id": "vis_line"}}
                ]},
                "payment_intent": "pi_old",
                "subscription": "sub_old",
                "subscription_details": {"metadata": {}},
                "total": 1500
            }),
        );
        assert_eq!(f.change, paid(1500, "eur"));
        assert_eq!(
            f.ids,
            PaymentIds {
                invoice: Some("in_old".into()),
                payment_intent: Some("pi_old".into()),
                charge: Some("ch_old".into()),
                subscription: Some("sub_old".into()),
                customer: Some("cus_old".into()),
                ..PaymentIds::default()
            }
        );
        assert_eq!(f.visitor_id.as_deref(), Some("vis_line"));
        assert_eq!(f.email, None);
    }

    #[test]
    fn invoice_visitor_id_precedence() {
        let mut invoice = subscription_invoice();
        invoice["metadata"] = json!({"zori_visitor_id": "vis_invoice"});
        invoice["subscription_details"] = json!({"metadata": {"zori_visitor_id": "vis_old_place"}});
        assert_eq!(
            facts("invoice.paid", invoice.clone()).visitor_id.as_deref(),
            Some("vis_invoice")
        );
        invoice["metadata"] = json!({});
        assert_eq!(
            facts("invoice.paid", invoice).visitor_id.as_deref(),
            Some("vis_old_place")
        );
    }

    #[test]
    fn zero_amount_invoices_are_ignored() {
        let mut invoice = subscription_invoice();
        invoice["amount_paid"] = json!(0);
        invoice["billing_reason"] = json!("subscription_create");
        assert_eq!(extract(&envelope("invoice.paid", invoice)), Ok(None));

        let mut invoice = subscription_invoice();
        invoice.as_object_mut().unwrap().remove("amount_paid");
        invoice["total"] = json!(0);
        assert_eq!(extract(&envelope("invoice.paid", invoice)), Ok(None));

        let mut invoice = subscription_invoice();
        invoice.as_object_mut().unwrap().remove("amount_paid");
        invoice["total"] = json!(3100);
        assert_eq!(facts("invoice.paid", invoice).change, paid(3100, "usd"));
    }

    #[test]
    fn charge_refunded() {
        let mut charge = charge_object();
        charge["amount_refunded"] = json!(1000);
        charge["refunded"] = json!(false);
        charge["invoice"] = json!("in_1QsUb");
        charge["metadata"] = json!({"zori_visitor_id": "vis_r"});
        let f = facts("charge.refunded", charge);
        assert_eq!(
            f.change,
            PaymentChange::Refunded {
                amount: 4900,
                paid_at: OffsetDateTime::from_unix_timestamp(CREATED).unwrap(),
                amount_refunded: 1000,
                currency: "usd".into(),
                refunded_at: AT,
            }
        );
        assert_eq!(f.ids.charge.as_deref(), Some("ch_3Q5r"));
        assert_eq!(f.ids.payment_intent.as_deref(), Some("pi_3Q5r"));
        assert_eq!(f.ids.invoice.as_deref(), Some("in_1QsUb"));
        assert_eq!(f.visitor_id.as_deref(), Some("vis_r"));
    }

    #[test]
    fn livemode_and_created_come_from_the_event() {
        let mut body: Value =
            serde_json::from_slice(&envelope("charge.succeeded", charge_object())).unwrap();
        body["livemode"] = json!(true);
        body["created"] = json!(CREATED + 60);
        let f = extract(&serde_json::to_vec(&body).unwrap())
            .unwrap()
            .unwrap();
        assert!(f.livemode);
        assert_eq!(
            f.change,
            PaymentChange::Paid {
                amount: 4900,
                currency: "usd".into(),
                paid_at: datetime!(2024-11-02 10:01:00 UTC)
            }
        );

        // Without an event `created`, the object's is used.
        body.as_object_mut().unwrap().remove("created");
        let f = extract(&serde_json::to_vec(&body).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(f.change, paid(4900, "usd"));
    }

    #[test]
    fn invalid_visitor_ids_are_ignored() {
        for bad in ["vis 1", "<script>", "", "   "] {
            let mut charge = charge_object();
            charge["metadata"] = json!({"zori_visitor_id": bad});
            assert_eq!(
                facts("charge.succeeded", charge).visitor_id,
                None,
                "{bad:?}"
            );
        }
        let mut charge = charge_object();
        charge["metadata"] = json!({"zori_visitor_id": 42});
        assert_eq!(facts("charge.succeeded", charge).visitor_id, None);
        let mut charge = charge_object();
        charge["metadata"] = json!({"zori_visitor_id": " vis_trimmed "});
        assert_eq!(
            facts("charge.succeeded", charge).visitor_id.as_deref(),
            Some("vis_trimmed")
        );
    }

    #[test]
    fn unknown_types_are_ignored() {
        for event_type in [
            "customer.created",
            "charge.failed",
            "payment_intent.created",
            "invoice.created",
        ] {
            assert_eq!(
                extract(&envelope(event_type, json!({"id": "x"}))),
                Ok(None),
                "{event_type}"
            );
        }
        // Even without a data object.
        let body = br#"{"id":"evt_1","type":"customer.deleted"}"#;
        assert_eq!(extract(body), Ok(None));
    }

    #[test]
    fn errors_table() {
        let missing = |field: &'static str, event_type: &str| StripeEventError::MissingField {
            event_id: "evt_1QAbCdEfGhIjKlMn".into(),
            event_type: event_type.into(),
            field,
        };
        let without = |mut object: Value, key: &str| {
            object.as_object_mut().unwrap().remove(key);
            object
        };
        let cases: Vec<(Vec<u8>, StripeEventError, &str)> = vec![
            (
                br#"{"id": "evt_1", "#.to_vec(),
                StripeEventError::MalformedJson("EOF while parsing a value at line 1 column 16".into()),
                "malformed stripe event json: EOF while parsing a value at line 1 column 16",
            ),
            (
                b"[1,2]".to_vec(),
                StripeEventError::MalformedJson("not a json object".into()),
                "malformed stripe event json: not a json object",
            ),
            (
                br#"{"type":"charge.succeeded","data":{"object":{}}}"#.to_vec(),
                StripeEventError::MissingEventField("id"),
                "stripe event is missing id",
            ),
            (
                br#"{"id":"evt_1","data":{"object":{}}}"#.to_vec(),
                StripeEventError::MissingEventField("type"),
                "stripe event is missing type",
            ),
            (
                br#"{"id":"evt_1","type":"charge.succeeded","data":{}}"#.to_vec(),
                StripeEventError::MissingEventField("data.object"),
                "stripe event is missing data.object",
            ),
            (
                br#"{"id":"evt_1","type":"charge.succeeded","data":{"object":{"amount":1,"currency":"usd"}}}"#.to_vec(),
                StripeEventError::MissingEventField("created"),
                "stripe event is missing created",
            ),
            (
                envelope("charge.succeeded", without(charge_object(), "amount")),
                missing("amount", "charge.succeeded"),
                "charge.succeeded event evt_1QAbCdEfGhIjKlMn is missing amount",
            ),
            (
                envelope("charge.succeeded", without(charge_object(), "currency")),
                missing("currency", "charge.succeeded"),
                "charge.succeeded event evt_1QAbCdEfGhIjKlMn is missing currency",
            ),
            (
                envelope("checkout.session.completed", without(checkout_session(), "amount_total")),
                missing("amount_total", "checkout.session.completed"),
                "checkout.session.completed event evt_1QAbCdEfGhIjKlMn is missing amount_total",
            ),
            (
                envelope("charge.refunded", without(charge_object(), "amount_refunded")),
                missing("amount_refunded", "charge.refunded"),
                "charge.refunded event evt_1QAbCdEfGhIjKlMn is missing amount_refunded",
            ),
            (
                envelope("invoice.paid", without(without(subscription_invoice(), "amount_paid"), "total")),
                missing("total", "invoice.paid"),
                "invoice.paid event evt_1QAbCdEfGhIjKlMn is missing total",
            ),
            (
                envelope("payment_intent.succeeded", json!({"id": "pi_1", "currency": "usd"})),
                missing("amount", "payment_intent.succeeded"),
                "payment_intent.succeeded event evt_1QAbCdEfGhIjKlMn is missing amount",
            ),
            (
                envelope("charge.succeeded", {
                    let mut c = charge_object();
                    c["currency"] = json!("dollars");
                    c
                }),
                StripeEventError::InvalidCurrency {
                    event_id: "evt_1QAbCdEfGhIjKlMn".into(),
                    event_type: "charge.succeeded".into(),
                    value: "dollars".into(),
                },
                "charge.succeeded event evt_1QAbCdEfGhIjKlMn has an invalid currency \"dollars\"",
            ),
        ];
        for (body, expected, message) in cases {
            let got = extract(&body).unwrap_err();
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(&body));
            assert_eq!(got.to_string(), message);
        }
    }

    #[test]
    fn facts_round_trip_through_json() {
        let f = facts("invoice.paid", subscription_invoice());
        let json = serde_json::to_string(&f).unwrap();
        let back: PaymentFacts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }
}
