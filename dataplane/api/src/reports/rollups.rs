//! Report reads from the ClickHouse rollups ([`crate::rollup`]): visitor counts by first-touch
//! dimension, country or device, and page / event counts, without scanning events. Event
//! counts are exact; visitor counts are `uniq` estimates: the reports say so
//! (`visitors_approximate`).

use std::collections::BTreeMap;

use clickhouse::{query::Query, Row};
use serde::Deserialize;
use zori_core::touch::Dimension;

use super::{
    filters::{Filters, UNKNOWN_COUNTRY},
    revenue::Group,
    DayRange, ReportError,
};
use crate::{ch::EventStore, rollup::day_text};

/// Country as the reports label it: `(unknown)` when missing.
const COUNTRY: &str = concat!("if(country = '', '", "(unknown)", "', country)");

/// The `visitors_daily` column (or expression) a group reads.
fn group_column(group: Group) -> &'static str {
    match group {
        Group::All => "'all'",
        Group::Touch(Dimension::Channel) => "channel",
        Group::Touch(Dimension::Source) => "source",
        Group::Touch(Dimension::Medium) => "medium",
        Group::Touch(Dimension::Campaign) => "campaign",
        Group::Touch(Dimension::Referrer) => "referrer",
        Group::Touch(Dimension::LandingPage) => "landing_page",
        Group::Country => COUNTRY,
        Group::Device => "device",
    }
}

/// Conditions of the filters on `visitors_daily` (first-touch channel / source, latest
/// country / device: the same as the PostgreSQL visitor side), with their values in order.
fn visitor_filters(filters: &Filters) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    let columns = [
        (&filters.channel, "channel"),
        (&filters.source, "source"),
        (&filters.country, COUNTRY),
        (&filters.device, "device"),
    ];
    for (value, column) in columns {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(v.clone());
        }
    }
    (sql, binds)
}

fn bind_all(mut query: Query, binds: &[String]) -> Query {
    for b in binds {
        query = query.bind(b.as_str());
    }
    query
}

#[derive(Debug, Row, Deserialize)]
struct ValueCount {
    value: String,
    n: u64,
}

/// Each group's visitors and all of them, as one row.
#[derive(Debug, Row, Deserialize)]
struct GroupCounts {
    values: Vec<String>,
    counts: Vec<u64>,
    total: u64,
}

/// Visitors active in range by group value, and all of them (a visitor whose value changed
/// counts in each group it had, once in the total).
///
/// One pass over the rollup rows: each group's states are merged once into a group state, and
/// the total merges those few group states, not every row again (a second query over the rows
/// cost as much as the grouping itself: 45-70 ms of ClickHouse at 10M events).
pub async fn visitors(
    events: &EventStore,
    group: Group,
    range: DayRange,
    filters: &Filters,
) -> Result<(BTreeMap<String, i64>, i64), ReportError> {
    let (conditions, binds) = visitor_filters(filters);
    let query = events
        .client()
        .query(&format!(
            "SELECT groupArray(value) AS values, groupArray(finalizeAggregation(state)) AS counts,
                    uniqMerge(state) AS total
             FROM (
                SELECT {} AS value, uniqMergeState(visitors) AS state FROM visitors_daily
                WHERE day >= toDate(?) AND day <= toDate(?){conditions}
                GROUP BY value
             )",
            group_column(group)
        ))
        .bind(day_text(range.from).as_str())
        .bind(day_text(range.to).as_str());
    let rows: Vec<GroupCounts> = events
        .fetch_all("visitors by group (rollup)", bind_all(query, &binds))
        .await?;
    let Some(counts) = rows.into_iter().next() else {
        return Ok((BTreeMap::new(), 0));
    };
    Ok((
        counts
            .values
            .into_iter()
            .zip(counts.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(value, n)| (value, n as i64))
            .collect(),
        counts.total as i64,
    ))
}

/// Visitors active on each day of the range.
pub async fn visitors_by_day(
    events: &EventStore,
    range: DayRange,
    filters: &Filters,
) -> Result<BTreeMap<String, i64>, ReportError> {
    let (conditions, binds) = visitor_filters(filters);
    let query = events
        .client()
        .query(&format!(
            "SELECT toString(day) AS value, uniqMerge(visitors) AS n FROM visitors_daily
             WHERE day >= toDate(?) AND day <= toDate(?){conditions}
             GROUP BY day"
        ))
        .bind(day_text(range.from).as_str())
        .bind(day_text(range.to).as_str());
    let rows: Vec<ValueCount> = events
        .fetch_all("visitors by day (rollup)", bind_all(query, &binds))
        .await?;
    Ok(rows.into_iter().map(|r| (r.value, r.n as i64)).collect())
}

/// Whether the event rollup answers these filters: it knows each event's country and device,
/// not its visitor's first touch.
pub fn events_answer(filters: &Filters) -> bool {
    filters.channel.is_none() && filters.source.is_none()
}

/// Conditions of the country / device filters on `event_counts_daily_v2` (the event's own
/// values, as the raw event reports filter), with their values.
pub fn event_filters(filters: &Filters) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(country) = &filters.country {
        sql.push_str(" AND country = ?");
        binds.push(if country == UNKNOWN_COUNTRY {
            String::new()
        } else {
            country.clone()
        });
    }
    if let Some(device) = &filters.device {
        sql.push_str(" AND device = ?");
        binds.push(device.clone());
    }
    (sql, binds)
}

/// Binds the day range and then `binds` to a query reading `event_counts_daily_v2`.
pub fn bind_days(query: Query, range: &DayRange, binds: &[String]) -> Query {
    let query = query
        .bind(day_text(range.from).as_str())
        .bind(day_text(range.to).as_str());
    bind_all(query, binds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::Params;

    #[test]
    fn filters_on_the_rollups() {
        let f = Filters::parse(
            &Params::parse(Some(
                "channel=direct&country=(unknown)&device=mobile".to_owned(),
            ))
            .unwrap(),
        )
        .unwrap();
        let (sql, binds) = visitor_filters(&f);
        assert_eq!(
            sql,
            " AND channel = ? AND if(country = '', '(unknown)', country) = ? AND device = ?"
        );
        assert_eq!(binds, vec!["direct", "(unknown)", "mobile"]);
        assert!(!events_answer(&f));
        let (sql, binds) = event_filters(&f);
        assert_eq!(sql, " AND country = ? AND device = ?");
        assert_eq!(binds, vec!["", "mobile"]);
        assert!(COUNTRY.contains(UNKNOWN_COUNTRY));
        assert_eq!(
            group_column(Group::Touch(Dimension::LandingPage)),
            "landing_page"
        );
    }
}
