//! Backfill: Stripe events missed by the webhook (before the endpoint existed, or an outage longer
//! than Stripe's retry window) read through Stripe's API, `GET /v1/events`, with a restricted key.
//!
//! Stripe lists events newest first and pages with `starting_after`. Each run reads at most a
//! bounded number of pages; after every page the id of the last event recorded is stored in
//! `stripe_backfills`, so a run cut short (error, bound reached, restart) resumes after it. Every
//! event goes through the same ledger as a webhook, keyed by its event id: an event already
//! received by webhook is a duplicate, and a webhook arriving after its backfill is one too;
//! only an event stored as `unreadable` (by an older version) is processed again.
//! Stripe's list holds every event of the account; types that carry nothing about a payment or a
//! visitor are counted and skipped, not stored.
//! Stripe keeps events for 30 days; older money cannot be backfilled this way.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{
    metrics::Outcome,
    store::{self, Delivered, Mode, Reading, Recorded, StoreError},
    StripeState,
};
use crate::config::Secret;

/// Events per page (Stripe's largest).
const PAGE_SIZE: u32 = 100;
/// Longest wait for one page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackfillError {
    #[error("backfill is not configured: set --stripe-api-key (ZORI_STRIPE_API_KEY)")]
    NotConfigured,
    #[error("failed to read events from the Stripe API: {0}")]
    Request(String),
    #[error("the Stripe API answered {status} to GET /v1/events: {message}")]
    Status { status: u16, message: String },
    #[error("the Stripe API sent a page that is not an event list: {0}")]
    NotAList(String),
    #[error("the Stripe API sent an event without an id at position {0} of its page")]
    NoEventId(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the events come from: Stripe's API (or a double of it in tests).
#[derive(Clone)]
pub struct StripeApi {
    base_url: String,
    key: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi")
            .field("base_url", &self.base_url)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl StripeApi {
    /// `base_url` without a trailing slash (`https://api.stripe.com`). Fails when the TLS client
    /// cannot be set up (no usable root certificates).
    pub fn new(base_url: &str, key: Secret) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("failed to set up the HTTPS client for the Stripe API: {e}"))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            http,
        })
    }

    async fn page(&self, since: i64, after: Option<&str>) -> Result<EventPage, BackfillError> {
        let mut query = vec![
            ("limit", PAGE_SIZE.to_string()),
            ("created[gte]", since.to_string()),
        ];
        if let Some(after) = after {
            query.push(("starting_after", after.to_owned()));
        }
        let response = self
            .http
            .get(format!("{}/v1/events", self.base_url))
            .query(&query)
            .bearer_auth(self.key.expose())
            .timeout(PAGE_TIMEOUT)
            .send()
            .await
            .map_err(|e| BackfillError::Request(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| BackfillError::Request(e.without_url().to_string()))?;
        if !status.is_success() {
            // Stripe's error object names what failed; it never echoes the key.
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "no error message".to_owned());
            return Err(BackfillError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| BackfillError::NotAList(e.to_string()))
    }
}

#[derive(Debug, Deserialize)]
struct EventPage {
    data: Vec<Value>,
    has_more: bool,
}

/// What one backfill run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct BackfillSummary {
    pub pages: u32,
    pub events_read: u64,
    pub recorded: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub unreadable: u64,
    /// The oldest page was read: nothing is left for this start date.
    pub finished: bool,
}

/// Reads at most `max_pages` pages of events created at or after `since`, resuming after the
/// last event a previous run of the same `since` recorded.
pub(crate) async fn backfill(
    state: &StripeState,
    api: &StripeApi,
    since: OffsetDateTime,
    max_pages: u32,
) -> Result<BackfillSummary, BackfillError> {
    let mut cursor = start(&state.pool, since).await?;
    let mut summary = BackfillSummary::default();
    while summary.pages < max_pages {
        let page = api.page(since.unix_timestamp(), cursor.as_deref()).await?;
        summary.pages += 1;
        for (position, event) in page.data.iter().enumerate() {
            let body =
                serde_json::to_vec(event).map_err(|e| BackfillError::NotAList(e.to_string()))?;
            let (header, reading) =
                store::read_event(&body).map_err(|_| BackfillError::NoEventId(position))?;
            summary.events_read += 1;
            if matches!(reading, Reading::Ignored) {
                // The account's other events (balance, payouts, products…): nothing to keep. A
                // webhook of the same event is still recorded as usual.
                summary.ignored += 1;
                state.metrics.backfilled(Outcome::Ignored);
                cursor = Some(header.id);
                continue;
            }
            let recorded = store::record(
                state,
                &Delivered {
                    header: &header,
                    reading: &reading,
                    body: &body,
                    // An event an older version stored as unreadable (maybe without its
                    // payload) is read again from Stripe's copy.
                    mode: Mode::Replay,
                },
            )
            .await?;
            state.metrics.backfilled(recorded.into());
            match recorded {
                Recorded::Duplicate => summary.duplicates += 1,
                Recorded::Ignored => summary.ignored += 1,
                Recorded::Unreadable => summary.unreadable += 1,
                Recorded::Linked | Recorded::Payment { .. } => summary.recorded += 1,
            }
            cursor = Some(header.id);
        }
        let finished = !page.has_more || page.data.is_empty();
        save(
            &state.pool,
            since,
            cursor.as_deref(),
            page.data.len(),
            finished,
        )
        .await?;
        if finished {
            summary.finished = true;
            break;
        }
    }
    tracing::info!(
        since = %since,
        pages = summary.pages,
        events = summary.events_read,
        recorded = summary.recorded,
        duplicates = summary.duplicates,
        finished = summary.finished,
        "stripe backfill run ended"
    );
    Ok(summary)
}

/// The cursor to resume from: the last recorded event of an unfinished run for `since`; a
/// finished run starts again from the newest event (its events are duplicates by then).
async fn start(pool: &PgPool, since: OffsetDateTime) -> Result<Option<String>, StoreError> {
    let cursor: Option<Option<String>> = sqlx::query_scalar(
        "INSERT INTO stripe_backfills (since) VALUES ($1) \
         ON CONFLICT (since) DO UPDATE \
         SET cursor = CASE WHEN stripe_backfills.finished_at IS NULL \
                           THEN stripe_backfills.cursor END, \
             finished_at = NULL, updated_at = now() \
         RETURNING cursor",
    )
    .bind(since)
    .fetch_optional(pool)
    .await
    .map_err(store::db("starting a backfill run"))?;
    Ok(cursor.flatten())
}

async fn save(
    pool: &PgPool,
    since: OffsetDateTime,
    cursor: Option<&str>,
    read: usize,
    finished: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE stripe_backfills SET cursor = $2, events_read = events_read + $3, \
         updated_at = now(), finished_at = CASE WHEN $4 THEN now() END WHERE since = $1",
    )
    .bind(since)
    .bind(cursor)
    .bind(i64::try_from(read).unwrap_or(i64::MAX))
    .bind(finished)
    .execute(pool)
    .await
    .map_err(store::db("saving backfill progress"))?;
    Ok(())
}
