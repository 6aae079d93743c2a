//! Payment facts from a Stripe event payload. Parsed tolerantly from `serde_json::Value` so
//! that any Stripe API version works: unknown fields are ignored, ids may be strings or
//! expanded objects, and fields that moved between versions are read from every place
//! (before 2025-03-31.basil an Invoice names its `payment_intent`/`charge`; since then an
//! `invoice_payment` object links the two).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::subscription::{subscription_state, SubscriptionError, SubscriptionState};
use crate::{currency, email, enrich::is_valid_visitor_id, text::clean};

/// Every Stripe id a payment is known by. Two events describe the same payment when they
/// share any id (checkout session, payment intent, charge, invoice or invoice payment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIds {
    pub checkout_session: Option<String>,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    pub invoice: Option<String>,
    /// The `inpay_…` allocation of (part of) an invoice to a payment (API 2025-03-31 and later).
    #[serde(default)]
    pub invoice_payment: Option<String>,
    pub subscription: Option<String>,
    pub customer: Option<String>,
}

impl PaymentIds {
    /// The ids that identify the payment itself (not the subscription or customer). An
    /// `invoice_payment` names the invoice it pays, not itself: one invoice may be paid by
    /// several payment intents, so its invoice is not one of its aliases.
    pub fn aliases(&self) -> Vec<&str> {
        let invoice = if self.invoice_payment.is_some() {
            &None
        } else {
            &self.invoice
        };
        [
            &self.checkout_session,
            &self.payment_intent,
            &self.charge,
            invoice,
            &self.invoice_payment,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
    }
}

/// A refund's state, ordered so that a later state never loses to an earlier one whatever
/// order the events arrive in (a succeeded refund may still fail later; failed and canceled
/// are final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    pub fn parse(raw: &str) -> Option<RefundStatus> {
        Some(match raw {
            "pending" => RefundStatus::Pending,
            "requires_action" => RefundStatus::RequiresAction,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            "canceled" => RefundStatus::Canceled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::RequiresAction => "requires_action",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Canceled => "canceled",
        }
    }

    /// Whether the refunded money has left (or is leaving) the merchant.
    pub fn takes_money_back(self) -> bool {
        !matches!(self, RefundStatus::Failed | RefundStatus::Canceled)
    }
}

/// A dispute's state as far as money is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeState {
    /// Stripe's `status` (`needs_response`, `under_review`, `won`, `lost`, `warning_*`, …).
    pub status: String,
    /// How many balance transactions the dispute has moved: 0 none, 1 funds withdrawn,
    /// 2 withdrawn then reinstated. Only ever grows.
    pub balance_transactions: i64,
}

impl DisputeState {
    fn is_final(&self) -> bool {
        matches!(
            self.status.as_str(),
            "won" | "lost" | "warning_closed" | "prevented"
        )
    }

    /// The later of two observations of one dispute: a final status beats an open one, and
    /// the count of balance transactions only grows.
    pub fn merge(&self, other: &DisputeState) -> DisputeState {
        let status = if other.is_final() || !self.is_final() {
            other.status.clone()
        } else {
            self.status.clone()
        };
        DisputeState {
            status,
            balance_transactions: self.balance_transactions.max(other.balance_transactions),
        }
    }

    /// Whether the disputed amount is currently out of the merchant's balance: lost, or
    /// withdrawn and not (yet) reinstated or won.
    pub fn takes_money_back(&self) -> bool {
        match self.status.as_str() {
            "lost" => true,
            "won" | "warning_closed" | "prevented" => false,
            _ => self.balance_transactions == 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PaymentChange {
    /// Money captured: `amount` in minor units of `currency` (lower-case ISO 4217).
    Paid {
        amount: i64,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        paid_at: OffsetDateTime,
    },
    /// An authorization (`captured: false`, a Checkout session not paid yet): nothing counts
    /// until it is captured.
    Held {
        amount: i64,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        authorized_at: OffsetDateTime,
    },
    /// The hold was released (`payment_intent.canceled`, `charge.expired`).
    Voided {
        #[serde(with = "time::serde::rfc3339")]
        voided_at: OffsetDateTime,
    },
    /// `charge.refunded`: the charge's captured `amount` and creation time, and the cumulative
    /// amount refunded so far (Stripe's `amount_refunded`, lowered again when a refund fails).
    Refunded {
        amount: i64,
        #[serde(with = "time::serde::rfc3339")]
        paid_at: OffsetDateTime,
        amount_refunded: i64,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        refunded_at: OffsetDateTime,
    },
    /// One refund object (`re_…`) and its status.
    Refund {
        refund_id: String,
        amount: i64,
        currency: String,
        status: RefundStatus,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    /// One dispute (`dp_…`).
    Dispute {
        dispute_id: String,
        amount: i64,
        currency: String,
        state: DisputeState,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    /// No money moved, but the event ties a subscription or customer to a visitor (a trial's
    /// `no_payment_required` session, `customer.subscription.*`, a zero-amount invoice).
    Linked,
}

/// What one handled Stripe event says about one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFacts {
    pub event_id: String,
    pub event_type: String,
    pub livemode: bool,
    /// The event's `created`.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub ids: PaymentIds,
    pub change: PaymentChange,
    /// `zori_visitor_id` from the metadata of the object or any related object in the payload.
    pub visitor_id: Option<String>,
    /// The payer's email, for matching to an identified user; hash it before storing.
    pub email: Option<String>,
    pub description: Option<String>,
    /// What a `customer.subscription.*` event says the subscription is billed from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionState>,
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
    #[error("{event_type} event {event_id} has an unknown refund status {value:?}")]
    InvalidRefundStatus {
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
    PaymentIntentPaid,
    PaymentIntentHeld,
    PaymentIntentCanceled,
    Charge,
    ChargeExpired,
    ChargeRefunded,
    Refund,
    Dispute,
    Invoice,
    InvoicePayment,
    Subscription,
    Customer,
}

impl Kind {
    fn of(event_type: &str) -> Option<Kind> {
        Some(match event_type {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                Kind::CheckoutSession
            }
            "payment_intent.succeeded" => Kind::PaymentIntentPaid,
            "payment_intent.amount_capturable_updated" => Kind::PaymentIntentHeld,
            "payment_intent.canceled" => Kind::PaymentIntentCanceled,
            "charge.succeeded" | "charge.captured" => Kind::Charge,
            "charge.expired" => Kind::ChargeExpired,
            "charge.refunded" => Kind::ChargeRefunded,
            "charge.refund.updated" | "refund.created" | "refund.updated" | "refund.failed" => {
                Kind::Refund
            }
            "charge.dispute.created"
            | "charge.dispute.updated"
            | "charge.dispute.closed"
            | "charge.dispute.funds_withdrawn"
            | "charge.dispute.funds_reinstated" => Kind::Dispute,
            "invoice.paid" | "invoice.payment_succeeded" => Kind::Invoice,
            "invoice_payment.paid" => Kind::InvoicePayment,
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.trial_will_end"
            | "customer.subscription.paused"
            | "customer.subscription.resumed" => Kind::Subscription,
            "customer.created" | "customer.updated" => Kind::Customer,
            _ => return None,
        })
    }
}

/// Reads a verified webhook body. `Ok(None)` for event types that carry nothing about a
/// payment or a visitor (they are acknowledged and ignored).
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
        Kind::PaymentIntentPaid => payment_intent(&cx, at)?,
        Kind::PaymentIntentHeld => payment_intent_held(&cx, at)?,
        Kind::PaymentIntentCanceled => voided(at, payment_intent_ids(&cx)),
        Kind::Charge => charge(&cx, at)?,
        Kind::ChargeExpired => voided(at, charge_ids(&cx)),
        Kind::ChargeRefunded => charge_refunded(&cx, at)?,
        Kind::Refund => refund(&cx, at)?,
        Kind::Dispute => dispute(&cx, at)?,
        Kind::Invoice => invoice(&cx, at)?,
        Kind::InvoicePayment => invoice_payment(&cx, at)?,
        Kind::Subscription => subscription(&cx),
        Kind::Customer => customer(&cx),
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
        occurred_at: at,
        ids,
        change,
        visitor_id: visitor_id(kind, object),
        email: email.and_then(email::normalize),
        description: description(object),
        subscription: match kind {
            Kind::Subscription => Some(cx.subscription_state()?),
            _ => None,
        },
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

    fn required_id(&self) -> Result<String, StripeEventError> {
        self.own_id().ok_or_else(|| self.missing("id"))
    }

    /// An id field that may be a string or an expanded object.
    fn id_of(&self, path: &[&str]) -> Option<String> {
        id_of(self.object, path)
    }

    fn str(&self, path: &[&str]) -> Option<&'a str> {
        str_at(self.object, path)
    }

    /// The subscription object's billing state ([`subscription_state`]).
    fn subscription_state(&self) -> Result<SubscriptionState, StripeEventError> {
        subscription_state(self.object).map_err(|error| match error {
            SubscriptionError::Missing(field) => self.missing(field),
            SubscriptionError::InvalidCurrency { value, .. } => StripeEventError::InvalidCurrency {
                event_id: self.event_id.to_owned(),
                event_type: self.event_type.to_owned(),
                value,
            },
        })
    }

    /// The object's own `created`, else `fallback`.
    fn created_or(&self, fallback: OffsetDateTime) -> OffsetDateTime {
        self.object
            .get("created")
            .and_then(Value::as_i64)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or(fallback)
    }
}

fn checkout_session<'a>(
    cx: &Cx<'a>,
    at: OffsetDateTime,
) -> Result<Extracted<'a>, StripeEventError> {
    let ids = PaymentIds {
        checkout_session: cx.own_id(),
        payment_intent: cx.id_of(&["payment_intent"]),
        charge: cx.id_of(&["payment_intent", "latest_charge"]),
        invoice: cx.id_of(&["invoice"]),
        subscription: cx.id_of(&["subscription"]),
        customer: cx.id_of(&["customer"]),
        ..PaymentIds::default()
    };
    let email = cx
        .str(&["customer_details", "email"])
        .or_else(|| cx.str(&["customer_email"]));
    let change = match cx.str(&["payment_status"]) {
        Some("paid") => PaymentChange::Paid {
            amount: cx.amount("amount_total")?,
            currency: cx.currency()?,
            paid_at: at,
        },
        // Authorized only (manual capture) or an asynchronous payment still processing: the
        // session ties its visitor to the payment intent, no money yet.
        Some("unpaid") if ids.payment_intent.is_some() => PaymentChange::Held {
            amount: cx.amount("amount_total")?,
            currency: cx.currency()?,
            authorized_at: at,
        },
        // A trial or a 100 % discount: nothing to pay, but the subscription and customer now
        // belong to the session's visitor.
        _ => {
            let ids = PaymentIds {
                subscription: ids.subscription,
                customer: ids.customer,
                ..PaymentIds::default()
            };
            return Ok(Some((PaymentChange::Linked, ids, email)));
        }
    };
    Ok(Some((change, ids, email)))
}

fn payment_intent_ids(cx: &Cx<'_>) -> PaymentIds {
    PaymentIds {
        payment_intent: cx.own_id(),
        charge: cx
            .id_of(&["latest_charge"])
            .or_else(|| first_in_list(cx.object, &["charges"], &["id"])),
        invoice: cx.id_of(&["invoice"]),
        customer: cx.id_of(&["customer"]),
        ..PaymentIds::default()
    }
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
    Ok(Some((
        change,
        payment_intent_ids(cx),
        cx.str(&["receipt_email"]),
    )))
}

fn payment_intent_held<'a>(
    cx: &Cx<'a>,
    at: OffsetDateTime,
) -> Result<Extracted<'a>, StripeEventError> {
    let change = PaymentChange::Held {
        amount: cx.amount("amount_capturable")?,
        currency: cx.currency()?,
        authorized_at: at,
    };
    Ok(Some((
        change,
        payment_intent_ids(cx),
        cx.str(&["receipt_email"]),
    )))
}

fn voided<'a>(at: OffsetDateTime, ids: PaymentIds) -> Extracted<'a> {
    Some((PaymentChange::Voided { voided_at: at }, ids, None))
}

/// `charge.succeeded` / `charge.captured`: only `amount_captured` is money; a charge with
/// `captured: false` is an authorization.
fn charge<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let captured = cx.object.get("captured").and_then(Value::as_bool);
    let change = if captured == Some(false) {
        PaymentChange::Held {
            amount: cx.amount("amount")?,
            currency: cx.currency()?,
            authorized_at: at,
        }
    } else {
        PaymentChange::Paid {
            amount: captured_amount(cx)?,
            currency: cx.currency()?,
            paid_at: at,
        }
    };
    Ok(Some((change, charge_ids(cx), charge_email(cx))))
}

/// `amount_captured`, else (older payloads) `amount`.
fn captured_amount(cx: &Cx<'_>) -> Result<i64, StripeEventError> {
    match cx.object.get("amount_captured").and_then(Value::as_i64) {
        Some(amount) => Ok(amount),
        None => cx.amount("amount"),
    }
}

fn charge_refunded<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let change = PaymentChange::Refunded {
        amount: captured_amount(cx)?,
        paid_at: cx.created_or(at),
        amount_refunded: cx.amount("amount_refunded")?,
        currency: cx.currency()?,
        refunded_at: at,
    };
    Ok(Some((change, charge_ids(cx), charge_email(cx))))
}

fn refund<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let raw = cx.str(&["status"]).ok_or_else(|| cx.missing("status"))?;
    let status = RefundStatus::parse(raw).ok_or_else(|| StripeEventError::InvalidRefundStatus {
        event_id: cx.event_id.to_owned(),
        event_type: cx.event_type.to_owned(),
        value: raw.to_owned(),
    })?;
    let change = PaymentChange::Refund {
        refund_id: cx.required_id()?,
        amount: cx.amount("amount")?,
        currency: cx.currency()?,
        status,
        created_at: cx.created_or(at),
    };
    let ids = PaymentIds {
        charge: cx.id_of(&["charge"]),
        payment_intent: cx.id_of(&["payment_intent"]),
        ..PaymentIds::default()
    };
    Ok(Some((change, ids, None)))
}

fn dispute<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    let balance_transactions = cx
        .object
        .get("balance_transactions")
        .and_then(Value::as_array)
        .map_or(0, |list| list.len() as i64);
    let change = PaymentChange::Dispute {
        dispute_id: cx.required_id()?,
        amount: cx.amount("amount")?,
        currency: cx.currency()?,
        state: DisputeState {
            status: cx
                .str(&["status"])
                .ok_or_else(|| cx.missing("status"))?
                .to_owned(),
            balance_transactions,
        },
        created_at: cx.created_or(at),
    };
    let ids = PaymentIds {
        charge: cx.id_of(&["charge"]),
        payment_intent: cx.id_of(&["payment_intent"]),
        ..PaymentIds::default()
    };
    Ok(Some((change, ids, None)))
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
    let subscription = cx
        .id_of(&["subscription"])
        .or_else(|| cx.id_of(&["parent", "subscription_details", "subscription"]));
    let customer = cx.id_of(&["customer"]);
    let email = cx.str(&["customer_email"]);
    if amount == 0 {
        // A trial's or fully discounted invoice: no money, but it may carry the visitor.
        let ids = PaymentIds {
            subscription,
            customer,
            ..PaymentIds::default()
        };
        return Ok(Some((PaymentChange::Linked, ids, email)));
    }
    let change = PaymentChange::Paid {
        amount,
        currency: cx.currency()?,
        paid_at: at,
    };
    // Before API 2025-03-31 the invoice names its payment intent and charge; since then only
    // `invoice_payment.paid` links them.
    let ids = PaymentIds {
        invoice: cx.own_id(),
        payment_intent: cx.id_of(&["payment_intent"]),
        charge: cx.id_of(&["charge"]),
        subscription,
        customer,
        ..PaymentIds::default()
    };
    Ok(Some((change, ids, email)))
}

/// `invoice_payment.paid` (API 2025-03-31 and later): the allocation of an invoice to a
/// payment intent (or a charge without one).
fn invoice_payment<'a>(cx: &Cx<'a>, at: OffsetDateTime) -> Result<Extracted<'a>, StripeEventError> {
    if cx.str(&["status"]).is_some_and(|s| s != "paid") {
        return Ok(None);
    }
    let change = PaymentChange::Paid {
        amount: cx.amount("amount_paid")?,
        currency: cx.currency()?,
        paid_at: at,
    };
    let ids = PaymentIds {
        invoice_payment: Some(cx.required_id()?),
        invoice: cx.id_of(&["invoice"]),
        payment_intent: cx.id_of(&["payment", "payment_intent"]),
        charge: cx.id_of(&["payment", "charge"]),
        ..PaymentIds::default()
    };
    Ok(Some((change, ids, None)))
}

fn subscription<'a>(cx: &Cx<'a>) -> Extracted<'a> {
    let ids = PaymentIds {
        subscription: cx.own_id(),
        customer: cx.id_of(&["customer"]),
        ..PaymentIds::default()
    };
    Some((PaymentChange::Linked, ids, None))
}

fn customer<'a>(cx: &Cx<'a>) -> Extracted<'a> {
    let ids = PaymentIds {
        customer: cx.own_id(),
        ..PaymentIds::default()
    };
    Some((PaymentChange::Linked, ids, cx.str(&["email"])))
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
    fn unpaid_and_free_checkout_sessions() {
        // Authorized only (manual capture): a hold, tied to its payment intent.
        let mut session = checkout_session();
        session["payment_status"] = json!("unpaid");
        let f = facts("checkout.session.completed", session);
        assert_eq!(
            f.change,
            PaymentChange::Held {
                amount: 9900,
                currency: "usd".into(),
                authorized_at: AT
            }
        );
        assert_eq!(f.ids.payment_intent.as_deref(), Some("pi_3Q1a2b3c"));
        // A trial: no money, but the subscription and customer belong to the visitor.
        for status in ["no_payment_required", "unpaid"] {
            let mut session = checkout_session();
            session["payment_status"] = json!(status);
            session["payment_intent"] = Value::Null;
            session["mode"] = json!("subscription");
            session["subscription"] = json!("sub_trial");
            let f = facts("checkout.session.completed", session);
            assert_eq!(f.change, PaymentChange::Linked, "{status}");
            assert_eq!(
                f.ids,
                PaymentIds {
                    subscription: Some("sub_trial".into()),
                    customer: Some("cus_Q1w2e3".into()),
                    ..PaymentIds::default()
                }
            );
            assert_eq!(
                f.visitor_id.as_deref(),
                Some("vis_1f0e3dad-9990-4c5a-8a63-6b4e0f1d2c3b")
            );
        }
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
    fn zero_amount_invoices_only_link_the_subscription() {
        let mut invoice = subscription_invoice();
        invoice["amount_paid"] = json!(0);
        invoice["billing_reason"] = json!("subscription_create");
        let f = facts("invoice.paid", invoice);
        assert_eq!(f.change, PaymentChange::Linked);
        assert_eq!(f.ids.aliases(), Vec::<&str>::new());
        assert_eq!(f.ids.subscription.as_deref(), Some("sub_1Q7x6w"));
        assert_eq!(f.visitor_id.as_deref(), Some("vis_sub_only"));

        let mut invoice = subscription_invoice();
        invoice.as_object_mut().unwrap().remove("amount_paid");
        invoice["total"] = json!(0);
        assert_eq!(facts("invoice.paid", invoice).change, PaymentChange::Linked);

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
            "customer.deleted",
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
                envelope("charge.succeeded", without(without(charge_object(), "amount"), "amount_captured")),
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

/// The same extraction on Stripe's own example objects of each API version.
#[cfg(test)]
mod fixture_tests {
    use serde_json::json;

    use super::*;
    use crate::stripe::fixtures::ApiVersion::{self, Acacia, Basil};

    const CREATED: i64 = 1_767_268_800; // 2026-01-01 12:00:00 UTC

    fn read(
        version: ApiVersion,
        name: &str,
        event_type: &str,
        fields: &[(&str, Value)],
    ) -> PaymentFacts {
        let mut object = version.object(name).unwrap();
        for (path, value) in fields {
            object = object.with(path, value.clone());
        }
        let body = serde_json::to_vec(&object.event(event_type, "evt_fx", CREATED)).unwrap();
        extract(&body).unwrap().unwrap()
    }

    fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(CREATED).unwrap()
    }

    #[test]
    fn invoice_payment_links_the_invoice_to_its_payment_intent() {
        let f = read(
            Basil,
            "invoice_payment",
            "invoice_payment.paid",
            &[
                ("id", json!("inpay_1")),
                ("invoice", json!("in_1")),
                ("payment.type", json!("payment_intent")),
                ("payment.payment_intent", json!("pi_1")),
                ("amount_paid", json!(2900)),
                ("currency", json!("eur")),
                ("status", json!("paid")),
            ],
        );
        assert_eq!(
            f.change,
            PaymentChange::Paid {
                amount: 2900,
                currency: "eur".into(),
                paid_at: at()
            }
        );
        assert_eq!(f.ids.aliases(), ["pi_1", "inpay_1"]);
        assert_eq!(f.ids.invoice.as_deref(), Some("in_1"));
    }

    #[test]
    fn invoices_name_their_payment_only_before_basil() {
        let acacia = read(
            Acacia,
            "invoice",
            "invoice.paid",
            &[
                ("amount_paid", json!(2900)),
                ("payment_intent", json!("pi_1")),
                ("charge", json!("ch_1")),
                ("subscription", json!("sub_1")),
                (
                    "subscription_details.metadata",
                    json!({"zori_visitor_id": "vis_a"}),
                ),
            ],
        );
        assert_eq!(acacia.ids.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(acacia.ids.charge.as_deref(), Some("ch_1"));
        assert_eq!(acacia.ids.subscription.as_deref(), Some("sub_1"));
        assert_eq!(acacia.visitor_id.as_deref(), Some("vis_a"));
        let basil = read(
            Basil,
            "invoice",
            "invoice.paid",
            &[
                ("amount_paid", json!(2900)),
                ("parent.type", json!("subscription_details")),
                ("parent.subscription_details.subscription", json!("sub_1")),
                (
                    "parent.subscription_details.metadata",
                    json!({"zori_visitor_id": "vis_b"}),
                ),
            ],
        );
        assert_eq!((basil.ids.payment_intent, basil.ids.charge), (None, None));
        assert_eq!(basil.ids.subscription.as_deref(), Some("sub_1"));
        assert_eq!(basil.visitor_id.as_deref(), Some("vis_b"));
    }

    #[test]
    fn only_captured_money_is_paid() {
        for version in ApiVersion::ALL {
            let held = read(
                version,
                "charge",
                "charge.succeeded",
                &[
                    ("amount", json!(1000)),
                    ("amount_captured", json!(0)),
                    ("captured", json!(false)),
                ],
            );
            assert_eq!(
                held.change,
                PaymentChange::Held {
                    amount: 1000,
                    currency: "usd".into(),
                    authorized_at: at()
                }
            );
            let captured = read(
                version,
                "charge",
                "charge.captured",
                &[
                    ("amount", json!(1000)),
                    ("amount_captured", json!(600)),
                    ("captured", json!(true)),
                ],
            );
            assert_eq!(
                captured.change,
                PaymentChange::Paid {
                    amount: 600,
                    currency: "usd".into(),
                    paid_at: at()
                }
            );
            for (name, event_type) in [
                ("charge", "charge.expired"),
                ("payment_intent", "payment_intent.canceled"),
            ] {
                let f = read(version, name, event_type, &[]);
                assert_eq!(f.change, PaymentChange::Voided { voided_at: at() });
                assert!(!f.ids.aliases().is_empty());
            }
        }
    }

    #[test]
    fn refunds_and_disputes_are_their_own_records() {
        for version in ApiVersion::ALL {
            let f = read(
                version,
                "refund",
                "refund.failed",
                &[
                    ("id", json!("re_1")),
                    ("status", json!("failed")),
                    ("amount", json!(300)),
                ],
            );
            let PaymentChange::Refund {
                refund_id,
                amount,
                status,
                ..
            } = f.change
            else {
                panic!("{:?}", f.change)
            };
            assert_eq!(
                (refund_id.as_str(), amount, status),
                ("re_1", 300, RefundStatus::Failed)
            );
            assert!(f.ids.charge.is_some());
            let f = read(
                version,
                "dispute",
                "charge.dispute.funds_withdrawn",
                &[
                    ("id", json!("dp_1")),
                    ("status", json!("needs_response")),
                    (
                        "balance_transactions",
                        json!([{"id": "txn_1", "object": "balance_transaction"}]),
                    ),
                ],
            );
            let PaymentChange::Dispute {
                dispute_id, state, ..
            } = f.change
            else {
                panic!("{:?}", f.change)
            };
            assert_eq!(dispute_id, "dp_1");
            assert!(state.takes_money_back());
        }
    }

    #[test]
    fn dispute_states_merge_in_any_order() {
        let s = |status: &str, n: i64| DisputeState {
            status: status.into(),
            balance_transactions: n,
        };
        let cases = [
            (vec![s("needs_response", 0)], false),
            (vec![s("needs_response", 1)], true),
            (vec![s("needs_response", 1), s("under_review", 2)], false),
            (vec![s("lost", 1), s("needs_response", 1)], true),
            (
                vec![s("won", 2), s("under_review", 1), s("needs_response", 1)],
                false,
            ),
            (
                vec![s("warning_needs_response", 0), s("warning_closed", 0)],
                false,
            ),
        ];
        for (states, lost_money) in cases {
            let mut orders = vec![states.clone()];
            let mut reversed = states.clone();
            reversed.reverse();
            orders.push(reversed);
            for order in orders {
                let merged = order[1..].iter().fold(order[0].clone(), |a, b| a.merge(b));
                assert_eq!(merged.takes_money_back(), lost_money, "{order:?}");
            }
        }
        assert!(RefundStatus::Failed > RefundStatus::Succeeded);
        assert!(!RefundStatus::Canceled.takes_money_back());
        assert!(RefundStatus::Pending.takes_money_back());
    }

    #[test]
    fn subscriptions_and_customers_link_their_visitor() {
        for version in ApiVersion::ALL {
            let f = read(
                version,
                "subscription",
                "customer.subscription.created",
                &[
                    ("id", json!("sub_1")),
                    ("metadata.zori_visitor_id", json!("vis_s")),
                ],
            );
            assert_eq!(f.change, PaymentChange::Linked);
            assert_eq!(f.ids.subscription.as_deref(), Some("sub_1"));
            assert!(f.ids.customer.is_some());
            assert_eq!(f.visitor_id.as_deref(), Some("vis_s"));
            let f = read(
                version,
                "customer",
                "customer.created",
                &[
                    ("id", json!("cus_1")),
                    ("metadata.zori_visitor_id", json!("vis_c")),
                ],
            );
            assert_eq!(f.ids.customer.as_deref(), Some("cus_1"));
            assert_eq!(f.visitor_id.as_deref(), Some("vis_c"));
        }
    }
}
