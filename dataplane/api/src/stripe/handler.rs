//! The HTTP side of the webhook: body limit, signature, status codes.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use time::OffsetDateTime;
use zori_core::stripe::{self as core_stripe, SignatureError};

use super::{
    metrics::Outcome,
    store::{self, Delivered, Mode, Recorded, StoreError},
    StripeState, MAX_BODY_BYTES,
};

const SIGNATURE_HEADER: &str = "stripe-signature";
/// Longest project id echoed back in a 404.
const MAX_ECHOED_PROJECT_ID: usize = 64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WebhookError {
    #[error("unknown project {0:?}")]
    UnknownProject(String),
    #[error("stripe webhooks are not configured: set --stripe-webhook-secrets")]
    NotConfigured,
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("missing Stripe-Signature header")]
    MissingSignature,
    #[error("Stripe-Signature header is not visible ascii")]
    SignatureNotText,
    #[error("invalid Stripe-Signature: {0}")]
    InvalidSignature(#[source] SignatureError),
    #[error("signed body is not a stripe event: {0}")]
    NotAnEvent(String),
    #[error("failed to record stripe event {event_id}; stripe will retry: {source}")]
    Store {
        event_id: String,
        #[source]
        source: StoreError,
    },
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::UnknownProject(_) => StatusCode::NOT_FOUND,
            WebhookError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyUnreadable(_)
            | WebhookError::MissingSignature
            | WebhookError::SignatureNotText
            | WebhookError::InvalidSignature(_)
            | WebhookError::NotAnEvent(_) => StatusCode::BAD_REQUEST,
            WebhookError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// `POST /webhooks/stripe/{project_id}`: the original's per-project route.
pub(crate) async fn project_webhook(
    State(state): State<StripeState>,
    Path(project_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if project_id != state.tenant_id {
        let shown: String = project_id.chars().take(MAX_ECHOED_PROJECT_ID).collect();
        return WebhookError::UnknownProject(shown).into_response();
    }
    webhook(State(state), headers, body).await
}

/// `POST /webhooks/stripe`.
pub(crate) async fn webhook(
    State(state): State<StripeState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&state, &headers, body).await {
        Ok((event_type, status)) => {
            state.metrics.webhook(&event_type, status);
            (StatusCode::OK, Json(json!({ "status": status.as_str() }))).into_response()
        }
        Err((event_type, error)) => {
            let outcome = match &error {
                WebhookError::UnknownProject(_) | WebhookError::BodyTooLarge => Outcome::BadRequest,
                WebhookError::BodyUnreadable(_) => Outcome::BadRequest,
                WebhookError::NotConfigured => Outcome::NotConfigured,
                WebhookError::MissingSignature
                | WebhookError::SignatureNotText
                | WebhookError::InvalidSignature(_) => {
                    state.metrics.signature_failures.inc();
                    Outcome::BadSignature
                }
                WebhookError::NotAnEvent(_) => Outcome::Malformed,
                WebhookError::Store { .. } => Outcome::Error,
            };
            state.metrics.webhook(&event_type, outcome);
            error.into_response()
        }
    }
}

/// The event type (`unknown` until verified) and the outcome, or the error to answer.
type Handled = Result<(String, Outcome), (String, WebhookError)>;

async fn handle(
    state: &StripeState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Handled {
    let unverified = |error: WebhookError| ("unknown".to_owned(), error);
    if state.secrets.is_empty() {
        tracing::warn!("stripe webhook received but no signing secret is configured");
        return Err(unverified(WebhookError::NotConfigured));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            unverified(WebhookError::BodyTooLarge)
        } else {
            unverified(WebhookError::BodyUnreadable(rejection.body_text()))
        }
    })?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| unverified(WebhookError::MissingSignature))?
        .to_str()
        .map_err(|_| unverified(WebhookError::SignatureNotText))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let tolerance = i64::try_from(state.tolerance.as_secs()).unwrap_or(i64::MAX);
    if let Err(error) = core_stripe::verify(signature, &body, &state.secrets, now, tolerance) {
        if error == SignatureError::NoSecret {
            // Only blank secrets were configured.
            tracing::warn!("stripe webhook received but every configured signing secret is blank");
            return Err(unverified(WebhookError::NotConfigured));
        }
        tracing::warn!(reason = %error, "stripe webhook rejected: signature not verified");
        return Err(unverified(WebhookError::InvalidSignature(error)));
    }

    let (header, reading) = store::read_event(&body)
        .map_err(|error| unverified(WebhookError::NotAnEvent(error.to_string())))?;

    let recorded = store::record(
        state,
        &Delivered {
            header: &header,
            reading: &reading,
            body: &body,
            mode: Mode::Delivery,
        },
    )
    .await
    .map_err(|source| {
        tracing::error!(
            event_id = %header.id,
            event_type = %header.event_type,
            "stripe event not recorded, answering 500 so stripe retries: {source}"
        );
        (
            header.event_type.clone(),
            WebhookError::Store {
                event_id: header.id.clone(),
                source,
            },
        )
    })?;

    let outcome = match recorded {
        Recorded::Duplicate => Outcome::Duplicate,
        Recorded::Ignored => Outcome::Ignored,
        Recorded::Unreadable => Outcome::Unreadable,
        Recorded::Linked => {
            state.metrics.links.inc();
            Outcome::Processed
        }
        Recorded::Payment {
            payment_id,
            effect,
            folded,
        } => {
            let metrics = &state.metrics;
            match effect {
                store::Effect::Created => {
                    metrics.payments_created.inc();
                }
                store::Effect::Merged => {
                    metrics.payments_merged.inc();
                }
                store::Effect::Refunded { created } => {
                    metrics.refunds.inc();
                    if created {
                        metrics.payments_created.inc();
                    }
                }
                store::Effect::Disputed { created } => {
                    metrics.disputes.inc();
                    if created {
                        metrics.payments_created.inc();
                    }
                }
                store::Effect::Hold { created } => {
                    metrics.holds.inc();
                    if created {
                        metrics.payments_created.inc();
                    }
                }
            }
            if folded > 0 {
                metrics.payments_merged.inc_by(folded as u64);
            }
            tracing::info!(
                event_id = %header.id,
                event_type = %header.event_type,
                payment_id,
                effect = ?effect,
                "stripe event recorded"
            );
            Outcome::Processed
        }
    };
    if !matches!(outcome, Outcome::Processed) {
        tracing::info!(
            event_id = %header.id,
            event_type = %header.event_type,
            outcome = outcome.as_str(),
            "stripe event acknowledged"
        );
    }
    Ok((header.event_type, outcome))
}
