//! The reports API (`GET /api/v1/…`, documented in docs/api.md): bearer-token auth compared in
//! constant time (or, for GET, the dashboard's signed session cookie), strict parameters (a bad
//! one is a 400 naming it), JSON errors. Filters (`channel`, `source`, `country`, `device`)
//! apply to every report; see [`filters`].
//!
//! Revenue reports are computed in PostgreSQL (visitors, first touch, identities, payments);
//! behaviour reports in ClickHouse (events). Money is never summed across currencies.

mod activity;
mod cohorts;
pub mod filters;
mod funnel;
mod journey;
mod models;
mod mrr;
pub mod openapi;
mod revenue;
mod rollups;
mod spend;
mod tally;

use std::{collections::HashMap, time::Instant};

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;
use sqlx::PgPool;
use time::{
    format_description::BorrowedFormatItem, macros::format_description, Date, OffsetDateTime,
};

use crate::{ch::EventStore, dashboard::Auth, metrics::ApiMetrics};

/// Longest range a report accepts, in days.
pub const MAX_RANGE_DAYS: i64 = 3660;
/// Days in the default range (ending today, UTC).
pub const DEFAULT_RANGE_DAYS: i64 = 30;

const DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("missing or invalid bearer token (or dashboard session)")]
    Unauthorized,
    #[error("invalid {param}: {message}")]
    BadParam { param: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The data-driven model lacks the journeys it needs (the message says how many).
    #[error("{0}")]
    NotEnoughData(String),
    /// Something the server itself got wrong (the message goes to the log, not the client).
    #[error("{0}")]
    Internal(String),
    #[error("failed to query PostgreSQL ({what}): {source}")]
    Postgres {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    ClickHouse(#[from] crate::ch::ChError),
}

impl ReportError {
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> Self {
        ReportError::BadParam {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn pg(what: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| ReportError::Postgres { what, source }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        let (status, code, param) = match &self {
            ReportError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ReportError::BadParam { param, .. } => {
                (StatusCode::BAD_REQUEST, "bad_request", Some(param.as_str()))
            }
            ReportError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ReportError::NotEnoughData(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_enough_data",
                Some("model"),
            ),
            ReportError::Postgres { .. }
            | ReportError::ClickHouse(_)
            | ReportError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let message = match &self {
            ReportError::Postgres { what, .. } => {
                tracing::error!(error = %self, "report failed");
                format!("failed to read {what}; see the server log")
            }
            ReportError::ClickHouse(_) => {
                tracing::error!(error = %self, "report failed");
                "failed to read events; see the server log".to_owned()
            }
            ReportError::Internal(_) => "internal error; see the server log".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                param,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What the report handlers share.
#[derive(Clone)]
pub struct ReportsState {
    pub pool: PgPool,
    pub events: EventStore,
    auth: Auth,
    metrics: ApiMetrics,
}

impl ReportsState {
    pub fn new(pool: PgPool, events: EventStore, auth: Auth, metrics: ApiMetrics) -> Self {
        Self {
            pool,
            events,
            auth,
            metrics,
        }
    }
}

/// `/api/v1/…` routes, all behind the bearer token.
pub fn router(state: ReportsState) -> Router {
    let api = Router::new()
        .route("/attribution", get(revenue::attribution))
        .route("/attribution/compare", get(models::compare))
        .route("/cohorts", get(cohorts::cohorts_report))
        .route("/funnel", get(funnel::funnel))
        .route(
            "/spend",
            get(spend::report)
                .put(spend::put)
                .layer(DefaultBodyLimit::max(spend::MAX_BODY_BYTES)),
        )
        .route("/mrr", get(mrr::mrr))
        .route("/openapi.json", get(openapi::document))
        .route("/overview", get(revenue::overview))
        .route("/timeseries", get(revenue::timeseries))
        .route("/countries", get(revenue::countries))
        .route("/devices", get(revenue::devices))
        .route("/customers", get(revenue::customers))
        .route("/live", get(activity::live))
        .route("/pages", get(activity::pages))
        .route("/events", get(activity::events))
        .route(
            "/events/{name}/properties/{key}",
            get(activity::property_values),
        )
        .route("/visitors/{visitor_id}/journey", get(journey::journey))
        .fallback(|| async { ReportError::NotFound("no such report".to_owned()) })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    Router::new().nest("/api/v1", api)
}

/// Header the dashboard's own script sends with a write (the spend upload). A page of another
/// origin cannot send it without a CORS preflight, which this API never grants.
pub const DASHBOARD_WRITE_HEADER: &str = "x-zori-dashboard";

/// The bearer token, or a valid dashboard session cookie: for reads, and for writes that carry
/// [`DASHBOARD_WRITE_HEADER`] and come from the same origin (the cookie is also
/// SameSite=Strict: three independent guards against cross-site requests).
async fn authorize(State(state): State<ReportsState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let dashboard_write = !read
        && headers.get(DASHBOARD_WRITE_HEADER).is_some()
        && !crate::dashboard::cross_site(headers);
    if state.auth.bearer_matches(headers)
        || ((read || dashboard_write)
            && state
                .auth
                .session(headers, OffsetDateTime::now_utc())
                .is_some())
    {
        next.run(request).await
    } else {
        ReportError::Unauthorized.into_response()
    }
}

async fn observe(State(state): State<ReportsState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .report_requests
        .get_or_create(&crate::metrics::RouteLabels {
            route: route.clone(),
            status,
        })
        .inc();
    tracing::debug!(%route, status, elapsed_ms = started.elapsed().as_millis() as u64, "report");
    response
}

/// Query parameters, parsed by hand so that every error names its parameter.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(raw: Option<String>) -> Result<Self, ReportError> {
        let mut map = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if map.insert(key.to_string(), value.to_string()).is_some() {
                return Err(ReportError::bad(key.to_string(), "given more than once"));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Inclusive UTC day range from `from` and `to` (`YYYY-MM-DD`), by default the last 30
    /// days ending today.
    pub fn range(&self) -> Result<DayRange, ReportError> {
        self.range_at(OffsetDateTime::now_utc().date())
    }

    pub fn range_at(&self, today: Date) -> Result<DayRange, ReportError> {
        let day = |param: &str| -> Result<Option<Date>, ReportError> {
            self.get(param)
                .map(|s| {
                    Date::parse(s.trim(), DATE).map_err(|_| {
                        ReportError::bad(
                            param,
                            format!("{s:?} is not a date in the form YYYY-MM-DD"),
                        )
                    })
                })
                .transpose()
        };
        let from = day("from")?;
        let to = day("to")?;
        let (from, to) = match (from, to) {
            (Some(f), Some(t)) => (f, t),
            (Some(f), None) => (f, today.max(f)),
            (None, Some(t)) => (t - time::Duration::days(DEFAULT_RANGE_DAYS - 1), t),
            (None, None) => (today - time::Duration::days(DEFAULT_RANGE_DAYS - 1), today),
        };
        if from > to {
            return Err(ReportError::bad(
                "from",
                format!("{from} is after to ({to})"),
            ));
        }
        if (to - from).whole_days() >= MAX_RANGE_DAYS {
            return Err(ReportError::bad(
                "to",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            ));
        }
        Ok(DayRange { from, to })
    }

    /// A whole number in `min..=max`, `default` when absent.
    pub fn int(&self, param: &str, default: u32, min: u32, max: u32) -> Result<u32, ReportError> {
        match self.get(param) {
            None => Ok(default),
            Some(s) => s
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ReportError::bad(
                        param,
                        format!("{s:?} is not a whole number from {min} to {max}"),
                    )
                }),
        }
    }

    /// `true`/`false` when present.
    pub fn bool(&self, param: &str) -> Result<Option<bool>, ReportError> {
        match self.get(param) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(s) => Err(ReportError::bad(
                param,
                format!("{s:?} is not true or false"),
            )),
        }
    }
}

/// Whole UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub from: Date,
    pub to: Date,
}

impl DayRange {
    /// Midnight UTC starting `from`.
    pub fn start(&self) -> OffsetDateTime {
        self.from.midnight().assume_utc()
    }

    /// Midnight UTC after `to`.
    pub fn end_exclusive(&self) -> OffsetDateTime {
        self.to
            .next_day()
            .map(|d| d.midnight().assume_utc())
            .unwrap_or_else(|| self.to.midnight().assume_utc() + time::Duration::days(1))
    }

    /// The range of the same length that ends the day before `from`.
    pub fn previous(&self) -> DayRange {
        let length = (self.to - self.from).whole_days() + 1;
        DayRange {
            from: self.from - time::Duration::days(length),
            to: self.from - time::Duration::days(1),
        }
    }

    pub fn days(&self) -> impl Iterator<Item = Date> {
        let to = self.to;
        std::iter::successors(Some(self.from), move |d| d.next_day().filter(|n| *n <= to))
    }
}

/// A path segment: non-empty, at most `max` bytes.
pub fn path_segment(param: &str, value: &str, max: usize) -> Result<(), ReportError> {
    if value.is_empty() {
        return Err(ReportError::bad(param, "must not be empty"));
    }
    if value.len() > max {
        return Err(ReportError::bad(param, format!("longer than {max} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    fn params(q: &str) -> Params {
        Params::parse(Some(q.to_owned())).unwrap()
    }

    #[test]
    fn ranges() {
        let today = date!(2025 - 03 - 31);
        let r = params("").range_at(today).unwrap();
        assert_eq!((r.from, r.to), (date!(2025 - 03 - 02), today));
        assert_eq!(r.days().count(), 30);
        let r = params("from=2025-01-01&to=2025-01-01")
            .range_at(today)
            .unwrap();
        assert_eq!(r.days().collect::<Vec<_>>(), vec![date!(2025 - 01 - 01)]);
        assert_eq!(r.start().unix_timestamp(), 1_735_689_600);
        assert_eq!(r.end_exclusive().unix_timestamp(), 1_735_689_600 + 86_400);
        let r = params("from=2025-03-01&to=2025-03-07")
            .range_at(today)
            .unwrap()
            .previous();
        assert_eq!(
            (r.from, r.to),
            (date!(2025 - 02 - 22), date!(2025 - 02 - 28))
        );
        let r = params("from=2025-04-10").range_at(today).unwrap();
        assert_eq!(
            (r.from, r.to),
            (date!(2025 - 04 - 10), date!(2025 - 04 - 10))
        );

        let bad: &[(&str, &str)] = &[
            ("from=2025-13-01", "from"),
            ("from=yesterday", "from"),
            ("to=2025-02-30", "to"),
            ("from=2025-03-02&to=2025-03-01", "from"),
            ("from=1990-01-01&to=2025-01-01", "to"),
            ("from=2025-01-01&from=2025-01-02", "from"),
        ];
        for (q, param) in bad {
            let error = Params::parse(Some((*q).to_owned()))
                .and_then(|p| p.range_at(today))
                .unwrap_err();
            match error {
                ReportError::BadParam { param: p, .. } => assert_eq!(p, *param, "{q}"),
                other => panic!("{q}: {other}"),
            }
        }
    }

    #[test]
    fn ints_and_bools() {
        assert_eq!(params("").int("limit", 50, 1, 1000).unwrap(), 50);
        assert_eq!(params("limit=7").int("limit", 50, 1, 1000).unwrap(), 7);
        assert!(params("limit=0").int("limit", 50, 1, 1000).is_err());
        assert!(params("limit=x").int("limit", 50, 1, 1000).is_err());
        assert_eq!(
            params("livemode=true").bool("livemode").unwrap(),
            Some(true)
        );
        assert!(params("livemode=1").bool("livemode").is_err());
    }
}
