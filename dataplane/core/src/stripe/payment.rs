//! Payment facts from a Stripe event payload.
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
    /// Cumulative amount refunded so far on the payment (Stripe's `amount_refunded`).
    Refunded {
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
    #[error("placeholder")]
    Placeholder,
}

/// Reads a verified webhook body. `Ok(None)` for event types that carry no payment change
/// (they are acknowledged and ignored).
pub fn extract(_body: &[u8]) -> Result<Option<PaymentFacts>, StripeEventError> {
    Err(StripeEventError::Placeholder)
}
