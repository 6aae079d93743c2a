//! Rollups: what the dashboard reports read instead of every event (issue 13).
//!
//! Two ClickHouse `AggregatingMergeTree` tables, one row per UTC day and combination of the
//! values a report groups or filters by:
//!
//! - `event_counts_daily_v2` (day, event name, page path, the event's country and device):
//!   `sum` states of events (exact) and `uniqCombined(12)` states of visitor ids (exact up to
//!   256 visitors, then a fixed 3 KiB sketch whose merge costs the same however many visitors
//!   it holds; reading the 30 days of a 1M-event tenant's pages takes a third of the time
//!   `uniqCombined(14)`'s 12 KiB sketches took, and `uniq`'s states grow to 65,536 hashes).
//!   Fed by a materialized view on every insert into `events`; the consumer inserts only
//!   events `events` does not hold yet ([`crate::ch::EventStore::insert`]), so a redelivered
//!   message or an event sent twice is counted once.
//! - `visitors_daily` (day, the visitor's first-touch channel, source, medium, campaign,
//!   referrer, landing page, and its latest country and device): `uniq` of visitor ids. Fed by
//!   the consumer: after a batch's PostgreSQL transaction it reads the first touch and latest
//!   country / device of the batch's visitors (as PostgreSQL now has them) and inserts one row
//!   per (day, visitor) of the batch into `visitor_days_in` (a `Null` table), whose materialized
//!   view aggregates it. A set of ids: a redelivered message adds an id already there.
//!
//! Event and page-view counts are exact. Visitor counts are estimates (`uniqCombined(12)`:
//! exact up to 256, a standard error of about 1.6 % beyond; `uniq` in `visitors_daily`: exact for
//! small sets, within about 1 % beyond tens of thousands), which the reports say
//! (`visitors_approximate`; `exact=true` reads PostgreSQL / the events instead). A visitor
//! whose first touch or latest country / device changes after some of its days were rolled up
//! also stays counted under the earlier values on those days (a late event that moves a first
//! touch is rare: the tracker sends in order); revenue credit does move (payments carry their
//! credited visitor's dimensions, migration 0017). Money never comes from here.
//!
//! Both tables are backfilled from `events` when their migration runs, after their feed
//! exists (events are read once per event id). An event the consumer inserts between a feed's
//! creation and its backfill is counted twice until the audit ([`crate::reconcile`]) corrects
//! its day; zori-api migrates before it consumes, so only a replica of the previous version
//! still running during a rollout can insert in that moment.

use clickhouse::Row;
use serde::Serialize;
use sqlx::PgPool;
use time::Date;
use zori_core::touch::{DIRECT, NOT_SET};

use crate::ch::{ChError, EventStore};

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("failed to read the first touch of {visitors} visitors from PostgreSQL: {source}")]
    ReadVisitors {
        visitors: usize,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to insert {rows} visitor-day rows into the ClickHouse rollup: {source}")]
    Insert {
        rows: usize,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error(transparent)]
    ClickHouse(#[from] ChError),
}

/// ClickHouse schema steps of the rollups, applied after `events` (see [`crate::ch`]).
pub const CH_MIGRATIONS: &[(u32, &str, &str)] = &[
    // 2-4 were an earlier `events_daily` counting events as `uniqHLL12` estimates; replaced
    // by `event_counts_daily` (9-12), which counts them exactly. That table kept
    // `uniqCombined(14)` visitor states, whose reading bounded the pages and events reports
    // (docs/benchmarks.md); 14-18 replace it by `event_counts_daily_v2`, the same with
    // `uniqCombined(12)`. A tenant created since never builds the first table: 9-11 do nothing.
    (9, "event_counts_daily", "SELECT 1"),
    (10, "event_counts_daily_mv", "SELECT 1"),
    (11, "event_counts_daily_backfill", "SELECT 1"),
    (
        12,
        "drop_events_daily_mv",
        "DROP TABLE IF EXISTS events_daily_mv",
    ),
    (13, "drop_events_daily", "DROP TABLE IF EXISTS events_daily"),
    (
        14,
        "event_counts_daily_v2",
        "CREATE TABLE IF NOT EXISTS event_counts_daily_v2 (
            day Date,
            name String,
            page_path String,
            country String,
            device String,
            events AggregateFunction(sum, Int64),
            visitors AggregateFunction(uniqCombined(12), String)
        )
        ENGINE = AggregatingMergeTree()
        PARTITION BY toYYYYMM(day)
        ORDER BY (day, name, page_path, country, device)",
    ),
    (
        15,
        "event_counts_daily_v2_mv",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS event_counts_daily_v2_mv TO event_counts_daily_v2 AS
         SELECT toDate(occurred_at) AS day, name, page_path, country, device,
                sumState(toInt64(1)) AS events, uniqCombinedState(12)(visitor_id) AS visitors
         FROM events
         GROUP BY day, name, page_path, country, device",
    ),
    (
        16,
        "event_counts_daily_v2_backfill",
        "INSERT INTO event_counts_daily_v2
         SELECT toDate(occurred_at) AS day, name, page_path, country, device,
                sumState(toInt64(1)) AS events, uniqCombinedState(12)(visitor_id) AS visitors
         FROM (SELECT * FROM events LIMIT 1 BY event_id)
         GROUP BY day, name, page_path, country, device",
    ),
    (
        17,
        "drop_event_counts_daily_mv",
        "DROP TABLE IF EXISTS event_counts_daily_mv",
    ),
    (
        18,
        "drop_event_counts_daily",
        "DROP TABLE IF EXISTS event_counts_daily",
    ),
    (
        5,
        "visitors_daily",
        "CREATE TABLE IF NOT EXISTS visitors_daily (
            day Date,
            channel String,
            source String,
            medium String,
            campaign String,
            referrer String,
            landing_page String,
            country String,
            device String,
            visitors AggregateFunction(uniq, String)
        )
        ENGINE = AggregatingMergeTree()
        PARTITION BY toYYYYMM(day)
        ORDER BY (day, channel, source, medium, campaign, referrer, landing_page, country, device)",
    ),
    (
        6,
        "visitor_days_in",
        "CREATE TABLE IF NOT EXISTS visitor_days_in (
            day Date,
            visitor_id String,
            channel String,
            source String,
            medium String,
            campaign String,
            referrer String,
            landing_page String,
            country String,
            device String
        )
        ENGINE = Null",
    ),
    (
        7,
        "visitors_daily_mv",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS visitors_daily_mv TO visitors_daily AS
         SELECT day, channel, source, medium, campaign, referrer, landing_page, country, device,
                uniqState(visitor_id) AS visitors
         FROM visitor_days_in
         GROUP BY day, channel, source, medium, campaign, referrer, landing_page, country, device",
    ),
    (8, "visitors_daily_backfill", VISITORS_BACKFILL),
];

/// The visitors' first touch as [`zori_core::touch::Touch`] computes it, from their earliest
/// arrival event (else earliest event; ties by event id), with the latest non-empty country
/// and latest device; then one row per (day, visitor) the events show.
const VISITORS_BACKFILL: &str = concat!(
    "INSERT INTO visitors_daily
     SELECT day, channel, source, medium, campaign, referrer, landing_page, country, device,
            uniqState(visitor_id) AS visitors
     FROM (SELECT DISTINCT toDate(occurred_at) AS day, visitor_id FROM events)
     ANY INNER JOIN (
        SELECT visitor_id,
               argMin(channel, k) AS channel,
               argMin(if(utm_source != '', utm_source,
                         if(referrer_host != '', referrer_host, '",
    "(direct)",
    "')), k) AS source,
               argMin(if(utm_medium != '', utm_medium, '",
    "(not set)",
    "'), k) AS medium,
               argMin(if(utm_campaign != '', utm_campaign, '",
    "(not set)",
    "'), k) AS campaign,
               argMin(if(referrer_host != '', referrer_host, '",
    "(direct)",
    "'), k) AS referrer,
               argMin(page_path, k) AS landing_page,
               argMaxIf(country, occurred_ms, country != '') AS country,
               argMax(device, occurred_ms) AS device
        FROM (
            SELECT visitor_id, channel, utm_source, utm_medium, utm_campaign, referrer_host,
                   page_path, country, device, occurred_ms,
                   concat(if(name IN ('page_view', 'session_start'), '0', '1'),
                          toString(occurred_ms), event_id) AS k
            FROM events
        )
        GROUP BY visitor_id
     ) USING visitor_id
     GROUP BY day, channel, source, medium, campaign, referrer, landing_page, country, device"
);

/// One (day, visitor) with the values the visitor rollup is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct VisitorDayRow {
    /// Days since 1970-01-01 (ClickHouse `Date`).
    pub day: u16,
    pub visitor_id: String,
    pub channel: String,
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub referrer: String,
    pub landing_page: String,
    /// Empty when unknown.
    pub country: String,
    pub device: String,
}

/// ClickHouse `Date`: days since the epoch (1970-01-01 to 2149-06-06).
pub fn ch_day(day: Date) -> u16 {
    let days = (day - Date::from_ordinal_date(1970, 1).unwrap_or(Date::MIN)).whole_days();
    u16::try_from(days.max(0)).unwrap_or(u16::MAX)
}

/// A ClickHouse `Date` as text (`YYYY-MM-DD`), for binding to `toDate(?)`.
pub fn day_text(day: Date) -> String {
    day.to_string()
}

#[derive(sqlx::FromRow)]
struct VisitorDims {
    visitor_id: String,
    ft_channel: String,
    ft_source: String,
    ft_medium: Option<String>,
    ft_campaign: Option<String>,
    ft_referrer_host: Option<String>,
    ft_landing_page: String,
    country: Option<String>,
    device: Option<String>,
}

/// Rows of `visitor_days_in` for the (day, visitor) pairs of a batch whose PostgreSQL side is
/// committed: the visitors' first touch and latest country / device as PostgreSQL has them now.
pub async fn visitor_days(
    pool: &PgPool,
    days: &[(Date, String)],
) -> Result<Vec<VisitorDayRow>, RollupError> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<&str> = days.iter().map(|(_, v)| v.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let dims: Vec<VisitorDims> = sqlx::query_as(
        "SELECT visitor_id, ft_channel, ft_source, ft_medium, ft_campaign, ft_referrer_host,
                ft_landing_page, country, device
         FROM visitors WHERE visitor_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(|source| RollupError::ReadVisitors {
        visitors: ids.len(),
        source,
    })?;
    let by_id: std::collections::HashMap<&str, &VisitorDims> =
        dims.iter().map(|d| (d.visitor_id.as_str(), d)).collect();
    Ok(days
        .iter()
        .filter_map(|(day, visitor)| {
            let d = by_id.get(visitor.as_str())?;
            Some(VisitorDayRow {
                day: ch_day(*day),
                visitor_id: visitor.clone(),
                channel: d.ft_channel.clone(),
                source: d.ft_source.clone(),
                medium: d.ft_medium.clone().unwrap_or_else(|| NOT_SET.to_owned()),
                campaign: d.ft_campaign.clone().unwrap_or_else(|| NOT_SET.to_owned()),
                referrer: d
                    .ft_referrer_host
                    .clone()
                    .unwrap_or_else(|| DIRECT.to_owned()),
                landing_page: d.ft_landing_page.clone(),
                country: d.country.clone().unwrap_or_default(),
                device: d.device.clone().unwrap_or_else(|| "unknown".to_owned()),
            })
        })
        .collect())
}

/// Inserts visitor-day rows into the visitor rollup (one insert).
pub async fn insert_visitor_days(
    store: &EventStore,
    rows: &[VisitorDayRow],
) -> Result<(), RollupError> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let fail = |source| RollupError::Insert { rows: n, source };
    let timeout = crate::ch::REQUEST_TIMEOUT;
    let work = async {
        let mut insert = store
            .client()
            .insert::<VisitorDayRow>("visitor_days_in")?
            .with_timeouts(Some(timeout), Some(timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    };
    match tokio::time::timeout(timeout * 2, work).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(ChError::Timeout(timeout * 2, "insert visitor days").into()),
    }
}

/// The visitor-day rows of a committed batch, read from PostgreSQL and rolled up in ClickHouse.
/// Returns the rows written.
pub async fn write_visitor_days(
    pool: &PgPool,
    store: &EventStore,
    days: &[(Date, String)],
) -> Result<u64, RollupError> {
    let rows = visitor_days(pool, days).await?;
    insert_visitor_days(store, &rows).await?;
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn clickhouse_days() {
        assert_eq!(ch_day(date!(1970 - 01 - 01)), 0);
        assert_eq!(ch_day(date!(2025 - 03 - 01)), 20148);
        assert_eq!(ch_day(date!(1960 - 01 - 01)), 0);
        assert_eq!(day_text(date!(2025 - 03 - 01)), "2025-03-01");
    }

    #[test]
    fn backfill_labels_match_the_domain() {
        assert!(VISITORS_BACKFILL.contains(&format!("'{DIRECT}'")));
        assert!(VISITORS_BACKFILL.contains(&format!("'{NOT_SET}'")));
        // Only arrival events make a first touch while the visitor has one (migration 0006).
        assert!(VISITORS_BACKFILL.contains("name IN ('page_view', 'session_start')"));
    }
}
