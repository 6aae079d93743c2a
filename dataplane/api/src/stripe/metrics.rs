//! Prometheus counters for the Stripe webhook, backfill and replay.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::store::Recorded;

/// What became of one webhook request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A payment was created, merged, refunded, disputed or held, or a visitor link recorded.
    Processed,
    /// The event id was seen before; nothing changed.
    Duplicate,
    /// A type that carries no payment change.
    Ignored,
    /// A handled type whose payload could not be read (stored, acknowledged, logged).
    Unreadable,
    /// Signed, but not a Stripe event at all (no id or type).
    Malformed,
    /// Missing, invalid or stale signature.
    BadSignature,
    /// No signing secret configured.
    NotConfigured,
    /// Body over the size limit or not readable.
    BadRequest,
    /// Database failure; Stripe retries.
    Error,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Unreadable => "unreadable",
            Outcome::Malformed => "malformed",
            Outcome::BadSignature => "bad_signature",
            Outcome::NotConfigured => "not_configured",
            Outcome::BadRequest => "bad_request",
            Outcome::Error => "error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WebhookLabels {
    /// The verified event type; `unknown` before the signature is verified.
    pub event_type: String,
    pub outcome: Outcome,
}

impl From<Recorded> for Outcome {
    fn from(recorded: Recorded) -> Outcome {
        match recorded {
            Recorded::Duplicate => Outcome::Duplicate,
            Recorded::Ignored => Outcome::Ignored,
            Recorded::Unreadable => Outcome::Unreadable,
            Recorded::Linked | Recorded::Payment { .. } => Outcome::Processed,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: Outcome,
}

/// Counters for the Stripe webhook; cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct StripeMetrics {
    pub(crate) webhooks: Family<WebhookLabels, Counter>,
    pub(crate) signature_failures: Counter,
    pub(crate) payments_created: Counter,
    pub(crate) payments_merged: Counter,
    pub(crate) refunds: Counter,
    pub(crate) disputes: Counter,
    pub(crate) holds: Counter,
    pub(crate) links: Counter,
    pub(crate) backfilled: Family<OutcomeLabels, Counter>,
    pub(crate) replayed: Family<OutcomeLabels, Counter>,
}

impl StripeMetrics {
    /// Creates the counters and registers them in `registry` (`zori_stripe_*`).
    pub fn register(registry: &mut Registry) -> StripeMetrics {
        let metrics = StripeMetrics::default();
        registry.register(
            "zori_stripe_webhooks",
            "Stripe webhook requests by verified event type and outcome",
            metrics.webhooks.clone(),
        );
        registry.register(
            "zori_stripe_signature_failures",
            "Stripe webhook requests rejected for a missing, invalid or stale signature",
            metrics.signature_failures.clone(),
        );
        registry.register(
            "zori_stripe_payments_created",
            "Payments created from Stripe events",
            metrics.payments_created.clone(),
        );
        registry.register(
            "zori_stripe_payments_merged",
            "Stripe events (or duplicate payment rows) merged into an existing payment",
            metrics.payments_merged.clone(),
        );
        registry.register(
            "zori_stripe_refunds",
            "Stripe refund events recorded",
            metrics.refunds.clone(),
        );
        registry.register(
            "zori_stripe_disputes",
            "Stripe dispute events recorded",
            metrics.disputes.clone(),
        );
        registry.register(
            "zori_stripe_holds",
            "Stripe authorization and void events recorded (no captured money)",
            metrics.holds.clone(),
        );
        registry.register(
            "zori_stripe_links",
            "Stripe events that tied a subscription or customer to a visitor without moving money",
            metrics.links.clone(),
        );
        registry.register(
            "zori_stripe_backfilled_events",
            "Stripe events read by backfill from Stripe's API, by outcome",
            metrics.backfilled.clone(),
        );
        registry.register(
            "zori_stripe_replayed_events",
            "Stored Stripe events read again by replay, by outcome",
            metrics.replayed.clone(),
        );
        metrics
    }

    pub(crate) fn backfilled(&self, outcome: Outcome) {
        self.backfilled
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn replayed(&self, outcome: Outcome) {
        self.replayed
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn webhook(&self, event_type: &str, outcome: Outcome) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                event_type: event_type.to_owned(),
                outcome,
            })
            .inc();
    }
}
