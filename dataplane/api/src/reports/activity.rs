//! Behaviour reports, computed in ClickHouse: top pages, events by name, values of a custom
//! property. Pages and events read the daily event rollup (exact event counts; visitors as
//! `uniq` estimates, flagged `visitors_approximate`) unless a first-touch filter (`channel`,
//! `source`) or `exact=true` asks for the events themselves; raw reads are exact before
//! merges: `uniqExact(event_id)`, `uniqExact(visitor_id)`.

use axum::{
    extract::{Path, RawQuery, State},
    Json,
};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{
    filters::Filters, path_segment, revenue::VisitorCounts, rollups, DayRange, Params, ReportError,
    ReportsState,
};
use crate::ch::datetime_secs;

/// Events the tracker sends by itself (zori-spec §3.1); every other name is custom.
pub const AUTOMATIC_EVENTS: &[&str] = &[
    "session_start",
    "page_view",
    "click",
    "user_comeback",
    "page_hidden",
    "page_visible",
    "left_while_hidden",
    "session_end",
    "scroll_depth_milestone",
    "scroll_depth_final",
    "session_recording_started",
    "session_recording_stopped",
];

/// `occurred_at` bounds of a day range as ClickHouse `DateTime` seconds: [start, end).
fn bounds(range: &DayRange) -> (u32, u32) {
    (
        datetime_secs(range.start()),
        datetime_secs(range.end_exclusive()),
    )
}

#[derive(Debug, Row, Deserialize)]
struct PageRow {
    path: String,
    views: u64,
    visitors: u64,
}

#[derive(Serialize)]
pub struct Page {
    pub path: String,
    pub views: u64,
    pub visitors: u64,
}

#[derive(Serialize)]
pub struct Pages {
    /// Whether `visitors` are `uniq` estimates from the daily rollup (views are exact
    /// either way; `exact=true` makes visitors exact too).
    pub visitors_approximate: bool,
    pub from: String,
    pub to: String,
    pub rows: Vec<Page>,
}

pub async fn pages(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Pages>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let limit = params.int("limit", 50, 1, 1000)?;
    let filters = Filters::parse(&params)?;
    let approximate = VisitorCounts::parse(&params, &state.events)?.approximate()
        && rollups::events_answer(&filters);
    let rows: Vec<PageRow> = if approximate {
        let (conditions, binds) = rollups::event_filters(&filters);
        let query = state.events.client().query(&format!(
            "SELECT page_path AS path, toUInt64(sumMerge(events)) AS views, uniqCombinedMerge(12)(visitors) AS visitors
             FROM event_counts_daily_v2
             WHERE name = 'page_view' AND day >= toDate(?) AND day <= toDate(?){conditions}
             GROUP BY page_path
             ORDER BY views DESC, path ASC
             LIMIT ?"
        ));
        let query = rollups::bind_days(query, &range, &binds).bind(limit);
        state.events.fetch_all("top pages (rollup)", query).await?
    } else {
        let (start, end) = bounds(&range);
        let query = state
            .events
            .client()
            .query(&format!(
                "SELECT page_path AS path, uniqExact(event_id) AS views, uniqExact(visitor_id) AS visitors
                 FROM events
                 WHERE name = 'page_view' AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?){}
                 GROUP BY page_path
                 ORDER BY views DESC, path ASC
                 LIMIT ?",
                filters.ch_sql()
            ))
            .bind(start)
            .bind(end);
        let query = filters.bind_ch(query).bind(limit);
        state.events.fetch_all("top pages", query).await?
    };
    Ok(Json(Pages {
        visitors_approximate: approximate,
        from: range.from.to_string(),
        to: range.to.to_string(),
        rows: rows
            .into_iter()
            .map(|r| Page {
                path: r.path,
                views: r.views,
                visitors: r.visitors,
            })
            .collect(),
    }))
}

#[derive(Debug, Row, Deserialize)]
struct EventCountRow {
    name: String,
    n: u64,
    visitors: u64,
}

#[derive(Serialize)]
pub struct EventCount {
    pub name: String,
    pub automatic: bool,
    pub count: u64,
    pub visitors: u64,
}

#[derive(Serialize)]
pub struct Events {
    /// Whether `visitors` are `uniq` estimates from the daily rollup (counts are exact
    /// either way; `exact=true` makes visitors exact too).
    pub visitors_approximate: bool,
    pub from: String,
    pub to: String,
    pub rows: Vec<EventCount>,
}

pub async fn events(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Events>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let limit = params.int("limit", 1000, 1, 10_000)?;
    let filters = Filters::parse(&params)?;
    let approximate = VisitorCounts::parse(&params, &state.events)?.approximate()
        && rollups::events_answer(&filters);
    let rows: Vec<EventCountRow> = if approximate {
        let (conditions, binds) = rollups::event_filters(&filters);
        let query = state.events.client().query(&format!(
            "SELECT name, toUInt64(sumMerge(events)) AS n, uniqCombinedMerge(12)(visitors) AS visitors
             FROM event_counts_daily_v2
             WHERE day >= toDate(?) AND day <= toDate(?){conditions}
             GROUP BY name
             ORDER BY n DESC, name ASC
             LIMIT ?"
        ));
        let query = rollups::bind_days(query, &range, &binds).bind(limit);
        state
            .events
            .fetch_all("events by name (rollup)", query)
            .await?
    } else {
        let (start, end) = bounds(&range);
        let query = state
            .events
            .client()
            .query(&format!(
                "SELECT name, uniqExact(event_id) AS n, uniqExact(visitor_id) AS visitors
                 FROM events
                 WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?){}
                 GROUP BY name
                 ORDER BY n DESC, name ASC
                 LIMIT ?",
                filters.ch_sql()
            ))
            .bind(start)
            .bind(end);
        let query = filters.bind_ch(query).bind(limit);
        state.events.fetch_all("events by name", query).await?
    };
    Ok(Json(Events {
        visitors_approximate: approximate,
        from: range.from.to_string(),
        to: range.to.to_string(),
        rows: rows
            .into_iter()
            .map(|r| EventCount {
                automatic: AUTOMATIC_EVENTS.contains(&r.name.as_str()),
                name: r.name,
                count: r.n,
                visitors: r.visitors,
            })
            .collect(),
    }))
}

#[derive(Debug, Row, Deserialize)]
struct PropertyRow {
    raw: String,
    n: u64,
    visitors: u64,
}

#[derive(Serialize)]
pub struct PropertyValue {
    /// The value as JSON (string, number, boolean, null, object or array).
    pub value: Value,
    pub count: u64,
    pub visitors: u64,
}

#[derive(Serialize)]
pub struct PropertyValues {
    pub event: String,
    pub property: String,
    pub from: String,
    pub to: String,
    pub rows: Vec<PropertyValue>,
}

pub async fn property_values(
    State(state): State<ReportsState>,
    Path((name, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<PropertyValues>, ReportError> {
    path_segment("name", &name, 200)?;
    path_segment("key", &key, 200)?;
    let params = Params::parse(query)?;
    let range = params.range()?;
    let limit = params.int("limit", 100, 1, 1000)?;
    let filters = Filters::parse(&params)?;
    let (start, end) = bounds(&range);
    // Top-level properties are stored as parallel key/value arrays next to the JSON text, so
    // a key is matched exactly (no nested look-alikes) on every ClickHouse version.
    let query = state
        .events
        .client()
        .query(&format!(
            "SELECT prop_values[indexOf(prop_keys, ?)] AS raw,
                    uniqExact(event_id) AS n, uniqExact(visitor_id) AS visitors
             FROM events
             WHERE name = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
               AND has(prop_keys, ?){}
             GROUP BY raw
             ORDER BY n DESC, raw ASC
             LIMIT ?",
            filters.ch_sql()
        ))
        .bind(key.as_str())
        .bind(name.as_str())
        .bind(start)
        .bind(end)
        .bind(key.as_str());
    let query = filters.bind_ch(query).bind(limit);
    let rows: Vec<PropertyRow> = state.events.fetch_all("property values", query).await?;
    Ok(Json(PropertyValues {
        event: name,
        property: key,
        from: range.from.to_string(),
        to: range.to.to_string(),
        rows: rows
            .into_iter()
            .map(|r| PropertyValue {
                value: serde_json::from_str(&r.raw).unwrap_or(Value::String(r.raw)),
                count: r.n,
                visitors: r.visitors,
            })
            .collect(),
    }))
}

/// Seconds a visitor counts as live after its latest event was received.
pub const LIVE_WINDOW_SECS: i64 = 300;

#[derive(Debug, Row, Deserialize)]
struct CountRow {
    n: u64,
}

#[derive(Serialize)]
pub struct Live {
    /// Distinct visitors with an event received in the window.
    pub visitors: u64,
    pub window_seconds: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
}

/// Visitors with events received in the last five minutes (filters apply; the date range does
/// not). Events whose own time is more than a day old (replays, backfills) do not count.
pub async fn live(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Live>, ReportError> {
    let params = Params::parse(query)?;
    let filters = Filters::parse(&params)?;
    let as_of = OffsetDateTime::now_utc();
    let since = as_of - time::Duration::seconds(LIVE_WINDOW_SECS);
    let query = state
        .events
        .client()
        .query(&format!(
            "SELECT uniqExact(visitor_id) AS n
             FROM events
             WHERE received_at >= toDateTime(?) AND occurred_at >= toDateTime(?){}",
            filters.ch_sql()
        ))
        .bind(datetime_secs(since))
        .bind(datetime_secs(as_of - time::Duration::days(1)));
    let query = filters.bind_ch(query);
    let rows: Vec<CountRow> = state.events.fetch_all("live visitors", query).await?;
    Ok(Json(Live {
        visitors: rows.first().map_or(0, |r| r.n),
        window_seconds: LIVE_WINDOW_SECS,
        since: since.replace_nanosecond(0).unwrap_or(since),
        as_of: as_of.replace_nanosecond(0).unwrap_or(as_of),
    }))
}
