//! `POST /api/v1/stripe/backfill?since=YYYY-MM-DD[&max_pages=N]` and
//! `POST /api/v1/stripe/replay[?max_events=N]`, both behind the API token (Bearer only: they write).

use axum::{
    extract::{rejection::QueryRejection, Query, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;
use time::{macros::format_description, Date, OffsetDateTime};

use super::{
    backfill::{self, BackfillError, StripeApi},
    replay, StripeState,
};
use crate::dashboard::Auth;

/// Pages one backfill request reads at most (100 events each) unless it asks for fewer.
pub const DEFAULT_MAX_PAGES: u32 = 10;
/// Upper bound of `max_pages`, so one request stays inside the request timeout (60 s); a request
/// cut by the timeout loses nothing either: the next one resumes after the last saved page.
const MAX_PAGES: u32 = 50;

/// Events one replay request processes at most unless it asks for fewer (each is a transaction).
pub const DEFAULT_MAX_REPLAYED: u64 = 2000;
const MAX_REPLAYED: u64 = 5000;

/// What the backfill and replay routes need.
#[derive(Clone)]
pub struct AdminState {
    pub stripe: StripeState,
    pub auth: Auth,
    /// Stripe's API; `None` without `--stripe-api-key` (backfill answers 503).
    pub api: Option<StripeApi>,
}

#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("a valid API token is required (Authorization: Bearer …)")]
    Unauthorized,
    #[error("invalid query: {0}")]
    BadQuery(String),
    #[error("invalid since {0:?}: expected a date YYYY-MM-DD")]
    BadSince(String),
    #[error("invalid max_pages {0}: expected 1 to {MAX_PAGES}")]
    BadMaxPages(u32),
    #[error("invalid max_events {0}: expected 1 to {MAX_REPLAYED}")]
    BadMaxEvents(u64),
    #[error(transparent)]
    Backfill(#[from] BackfillError),
}

impl AdminError {
    /// Status, `code` and the parameter at fault, as the reports API answers errors.
    fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            AdminError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            AdminError::BadSince(_) => (StatusCode::BAD_REQUEST, "bad_request", Some("since")),
            AdminError::BadMaxPages(_) => {
                (StatusCode::BAD_REQUEST, "bad_request", Some("max_pages"))
            }
            AdminError::BadMaxEvents(_) => {
                (StatusCode::BAD_REQUEST, "bad_request", Some("max_events"))
            }
            AdminError::Backfill(BackfillError::NotConfigured) => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_configured", None)
            }
            AdminError::Backfill(BackfillError::Store(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
            AdminError::Backfill(_) => (StatusCode::BAD_GATEWAY, "stripe_error", None),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code, param) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "stripe backfill or replay failed");
        }
        let message = match &self {
            AdminError::Backfill(BackfillError::Store(_)) => {
                "failed to write to PostgreSQL; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let mut error = json!({ "code": code, "message": message });
        if let Some(param) = param {
            error["param"] = json!(param);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The two routes, behind the bearer token.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/v1/stripe/backfill", post(backfill_route))
        .route("/api/v1/stripe/replay", post(replay_route))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if state.auth.bearer_matches(request.headers()) {
        next.run(request).await
    } else {
        AdminError::Unauthorized.into_response()
    }
}

#[derive(Debug, Deserialize)]
struct BackfillParams {
    since: String,
    max_pages: Option<u32>,
}

async fn backfill_route(
    State(state): State<AdminState>,
    params: Result<Query<BackfillParams>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(params) = params.map_err(|e| AdminError::BadQuery(e.body_text()))?;
    let since = Date::parse(
        params.since.trim(),
        format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| AdminError::BadSince(params.since.chars().take(32).collect()))?;
    let max_pages = params.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
    if max_pages == 0 || max_pages > MAX_PAGES {
        return Err(AdminError::BadMaxPages(max_pages));
    }
    let api = state.api.as_ref().ok_or(BackfillError::NotConfigured)?;
    let since: OffsetDateTime = since.midnight().assume_utc();
    let summary = backfill::backfill(&state.stripe, api, since, max_pages).await?;
    Ok(Json(summary).into_response())
}

#[derive(Debug, Deserialize)]
struct ReplayParams {
    max_events: Option<u64>,
}

async fn replay_route(
    State(state): State<AdminState>,
    params: Result<Query<ReplayParams>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(params) = params.map_err(|e| AdminError::BadQuery(e.body_text()))?;
    let max_events = params.max_events.unwrap_or(DEFAULT_MAX_REPLAYED);
    if max_events == 0 || max_events > MAX_REPLAYED {
        return Err(AdminError::BadMaxEvents(max_events));
    }
    let summary = replay::replay(&state.stripe, max_events)
        .await
        .map_err(|e| AdminError::Backfill(BackfillError::Store(e)))?;
    Ok(Json(summary).into_response())
}
