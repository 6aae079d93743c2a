//! Replay: events acknowledged as `ignored` or `unreadable` keep their verified payload, so after
//! an upgrade that reads them they are processed as if they had just arrived. Events that still
//! carry nothing are left as they are; processed events are never touched.

use super::{
    metrics::Outcome,
    store::{self, Delivered, Mode, Reading, Recorded, StoreError},
    StripeState,
};

/// Stored events read per query.
const CHUNK: i64 = 200;

/// What one replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ReplaySummary {
    /// Stored payloads read again.
    pub examined: u64,
    /// Now processed: a payment or a link recorded.
    pub processed: u64,
    pub still_ignored: u64,
    pub still_unreadable: u64,
    /// Every stored payload was examined; false when `max_processed` stopped the run early (call
    /// again: processed events no longer carry a payload, so it goes on where it stopped).
    pub finished: bool,
}

/// Reads the stored payloads again in event id order, processing at most `max_processed`.
pub(crate) async fn replay(
    state: &StripeState,
    max_processed: u64,
) -> Result<ReplaySummary, StoreError> {
    let mut summary = ReplaySummary::default();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_id, payload FROM stripe_events \
             WHERE payload IS NOT NULL AND event_id > $1 ORDER BY event_id LIMIT $2",
        )
        .bind(&after)
        .bind(CHUNK)
        .fetch_all(&state.pool)
        .await
        .map_err(store::db("reading stored stripe events"))?;
        let Some((last, _)) = rows.last() else {
            summary.finished = true;
            break;
        };
        after = last.clone();
        for (event_id, payload) in rows {
            summary.examined += 1;
            let Ok((header, reading)) = store::read_event(payload.as_bytes()) else {
                summary.still_unreadable += 1;
                state.metrics.replayed(Outcome::Malformed);
                continue;
            };
            match reading {
                Reading::Ignored => {
                    summary.still_ignored += 1;
                    state.metrics.replayed(Outcome::Ignored);
                    continue;
                }
                Reading::Unreadable => {
                    summary.still_unreadable += 1;
                    state.metrics.replayed(Outcome::Unreadable);
                    continue;
                }
                Reading::Facts(_) => {}
            }
            if summary.processed >= max_processed {
                // Left for the next call, as it was.
                summary.examined -= 1;
                return Ok(summary);
            }
            let recorded = store::record(
                state,
                &Delivered {
                    header: &header,
                    reading: &reading,
                    body: payload.as_bytes(),
                    mode: Mode::Replay,
                },
            )
            .await?;
            state.metrics.replayed(recorded.into());
            match recorded {
                Recorded::Linked | Recorded::Payment { .. } => summary.processed += 1,
                Recorded::Ignored => summary.still_ignored += 1,
                // Processed meanwhile (a webhook or another replay): nothing left to do.
                Recorded::Duplicate | Recorded::Unreadable => {}
            }
            tracing::info!(%event_id, outcome = ?recorded, "stored stripe event replayed");
        }
    }
    Ok(summary)
}
