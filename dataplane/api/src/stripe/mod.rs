//! Stripe webhooks (zori-spec §7): verify the `Stripe-Signature`, store the event id first, and turn
//! every event that moves money into exactly one row per payment.
//!
//! - `POST /webhooks/stripe` and `POST /webhooks/stripe/{project_id}` (the original's shape; the
//!   project id must be this data plane's tenant id).
//! - One Postgres transaction per event, serialised per tenant by an advisory lock: the event id is
//!   inserted first (a replay is a no-op), then the payment is created or merged through the Stripe
//!   ids it is known by, so `checkout.session.completed`, `payment_intent.succeeded`,
//!   `charge.succeeded` and `invoice.paid` for the same money count once, in any order (§9.2, §9.7).
//! - Refunds raise the cumulative refunded amount, idempotently and in any order (§9.6).
//! - Unhandled types and unreadable payloads are acknowledged with 200 so Stripe never disables the
//!   endpoint (§9.11); database failures answer 500 so Stripe retries, with nothing half-written
//!   (§9.8). Their verified payload is kept so `POST /api/v1/stripe/replay` can read them again
//!   after an upgrade.
//! - `POST /api/v1/stripe/backfill?since=DATE` reads missed events through Stripe's
//!   `GET /v1/events` into the same ledger (event ids make it idempotent with webhooks).

mod adjustments;
mod admin;
mod allocations;
mod backfill;
mod credit;
mod handler;
mod links;
mod metrics;
mod replay;
mod store;
mod subscriptions;

use std::{fmt, time::Duration};

use axum::{extract::DefaultBodyLimit, routing::post, Router};

pub use admin::{router as admin_router, AdminState, DEFAULT_MAX_PAGES};
pub use backfill::StripeApi;
pub use metrics::StripeMetrics;

/// Largest webhook body accepted; Stripe events are a few KiB, bigger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything the webhook routes need.
#[derive(Clone)]
pub struct StripeState {
    /// Pool whose `search_path` is the tenant's schema (migrated, `0002_payments.sql`).
    pub pool: sqlx::PgPool,
    /// This data plane's tenant; `/webhooks/stripe/{project_id}` answers 404 for any other id.
    pub tenant_id: String,
    /// Webhook signing secrets (`whsec_…`); several during a rotation. Empty: the routes answer 503.
    pub secrets: Vec<String>,
    /// How far the signed timestamp may be from now (Stripe's default is 300 s).
    pub tolerance: Duration,
    /// How far before a payment a first touch may lie to be credited with it.
    pub lookback: Duration,
    /// Salt for the payer email hash; the email itself is never stored.
    pub email_salt: String,
    pub metrics: StripeMetrics,
}

impl fmt::Debug for StripeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeState")
            .field("pool", &self.pool)
            .field("tenant_id", &self.tenant_id)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("tolerance", &self.tolerance)
            .field("lookback", &self.lookback)
            .field("email_salt", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// `POST /webhooks/stripe` and `POST /webhooks/stripe/{project_id}`, bodies capped at
/// [`MAX_BODY_BYTES`].
pub fn router(state: StripeState) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(handler::webhook))
        .route(
            "/webhooks/stripe/{project_id}",
            post(handler::project_webhook),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
