//! `GET /api/v1/mrr`: monthly recurring revenue and its movements (new, expansion,
//! contraction, churn, reactivation) per month and currency, optionally per acquisition
//! segment, with active subscribers and trial-to-paid conversion; from the subscription history
//! the Stripe webhooks record (`subscription_changes`) and [`zori_core::saas`].
//!
//! A customer's segment is the first-touch value of the visitor credited with their first
//! payment (the stored credit, so it agrees with `/attribution`), else of the visitor their
//! subscription or customer is linked to; `(unattributed)` without either.

use std::collections::{BTreeMap, HashMap};

use axum::{
    extract::{RawQuery, State},
    Json,
};
use serde::Serialize;
use time::{Date, OffsetDateTime};
use zori_core::{
    saas::{
        add_months_to_month, month_of, months_before,
        mrr::{movements, MonthMovements, MrrChange},
        trials::{trial_conversion, StatusChange, TrialMonth},
    },
    touch::Dimension,
};

use super::{
    cohorts::UNATTRIBUTED,
    filters::Filters,
    revenue::{dimension_sql, livemode, Group},
    Params, ReportError, ReportsState,
};

/// Months in the default range (ending with the current month).
pub const DEFAULT_MONTHS: u32 = 12;

#[derive(Debug, Serialize)]
pub struct Mrr {
    /// First and last month, `YYYY-MM`.
    pub from: String,
    pub to: String,
    /// The segment dimension, when `dimension` was given.
    pub dimension: Option<&'static str>,
    /// Every month × currency with subscription history by then.
    pub months: Vec<MonthMovements>,
    /// The same per segment (only with `dimension`), largest closing MRR first.
    pub segments: Vec<Segment>,
    /// Trials started per month and how many went on to be billed.
    pub trials: Vec<TrialMonth>,
    /// Subscriptions whose latest state has items MRR cannot price (tiered or metered prices,
    /// or an item list cut short): the MRR shown is a lower bound when this is not zero.
    pub unpriced_subscriptions: u64,
}

#[derive(Debug, Serialize)]
pub struct Segment {
    pub value: String,
    pub months: Vec<MonthMovements>,
}

fn month_label(d: Date) -> String {
    format!("{:04}-{:02}", d.year(), d.month() as u8)
}

/// One stored subscription change.
#[derive(sqlx::FromRow)]
struct ChangeRow {
    subscription_id: String,
    customer_id: String,
    currency: String,
    status: String,
    occurred_at: OffsetDateTime,
    mrr: i64,
    priced: bool,
}

const CHANGES: &str = "
    SELECT subscription_id, customer_id, currency, status, occurred_at, mrr,
           (unpriced_items = 0 AND items_complete) AS priced
    FROM subscription_changes
    WHERE ($1::boolean IS NULL OR livemode = $1::boolean) AND occurred_at < $2
    ORDER BY occurred_at, event_rank, event_id";

/// The segment of each customer in `$1` (see the module documentation) that passes the
/// filter `conditions` (on the visitors row `v`, placeholders from `$2`); `{dim}` is the
/// segment's value on `v`.
fn segments_sql(dim: &str, conditions: &str) -> String {
    format!(
        "SELECT c.customer_id, {dim} AS value
         FROM unnest($1::text[]) AS c(customer_id)
         LEFT JOIN LATERAL (
             SELECT COALESCE(
                 (SELECT p.credit_visitor_id FROM payments p
                  WHERE p.customer_id = c.customer_id AND p.credit_visitor_id IS NOT NULL
                  ORDER BY p.paid_at, p.payment_id LIMIT 1),
                 (SELECT sv.visitor_id FROM subscription_visitors sv
                  WHERE sv.subscription_id IN (SELECT s.subscription_id FROM subscription_changes s
                                               WHERE s.customer_id = c.customer_id)
                  ORDER BY sv.linked_at, sv.subscription_id LIMIT 1),
                 (SELECT cv.visitor_id FROM customer_visitors cv
                  WHERE cv.customer_id = c.customer_id)
             ) AS visitor_id
         ) link ON true
         LEFT JOIN visitors v ON v.visitor_id = link.visitor_id
         WHERE true{conditions}"
    )
}

pub async fn mrr(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Mrr>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let last = month_of(range.to.midnight().assume_utc());
    let first = if params.get("from").is_some() {
        month_of(range.start())
    } else {
        months_before(last, DEFAULT_MONTHS - 1)
    };
    let dimension = params
        .get("dimension")
        .map(|d| {
            d.parse::<Dimension>()
                .map_err(|e: String| ReportError::bad("dimension", e))
        })
        .transpose()?;
    let filters = Filters::parse(&params)?;
    let livemode = livemode(&state.pool, &params).await?;
    let end = add_months_to_month(last, 1).midnight().assume_utc();

    let mut rows: Vec<ChangeRow> = sqlx::query_as(CHANGES)
        .bind(livemode)
        .bind(end)
        .fetch_all(&state.pool)
        .await
        .map_err(ReportError::pg("subscription changes"))?;

    // Each customer's segment, when segments are asked for or filters pick customers.
    let labels = if dimension.is_some() || !filters.is_empty() {
        let group = dimension.map_or(Group::All, Group::Touch);
        let mut customers: Vec<&str> = rows.iter().map(|r| r.customer_id.as_str()).collect();
        customers.sort_unstable();
        customers.dedup();
        Some(segment_labels(&state, group, &filters, &customers).await?)
    } else {
        None
    };
    if let (Some(labels), false) = (&labels, filters.is_empty()) {
        rows.retain(|r| labels.contains_key(&r.customer_id));
    }

    let changes: Vec<MrrChange> = rows
        .iter()
        .map(|r| MrrChange {
            customer: r.customer_id.clone(),
            subscription: r.subscription_id.clone(),
            currency: r.currency.clone(),
            at: r.occurred_at,
            mrr: r.mrr,
        })
        .collect();
    let statuses: Vec<StatusChange> = rows
        .iter()
        .map(|r| StatusChange {
            subscription: r.subscription_id.clone(),
            at: r.occurred_at,
            status: r.status.clone(),
        })
        .collect();
    // Rows are in time order: the last one of a subscription is its latest state.
    let mut latest_priced: HashMap<&str, bool> = HashMap::new();
    for r in &rows {
        latest_priced.insert(r.subscription_id.as_str(), r.priced);
    }
    let unpriced_subscriptions = latest_priced.values().filter(|p| !**p).count() as u64;

    let segments = match (dimension, &labels) {
        (Some(_), Some(labels)) => segment_movements(labels, &changes, first, last),
        _ => Vec::new(),
    };
    Ok(Json(Mrr {
        from: month_label(first),
        to: month_label(last),
        dimension: dimension.map(|d| d.as_str()),
        months: movements(&changes, first, last),
        segments,
        trials: trial_conversion(&statuses, first, last),
        unpriced_subscriptions,
    }))
}

/// customer → segment value, for the `customers` that pass `filters`.
async fn segment_labels(
    state: &ReportsState,
    group: Group,
    filters: &Filters,
    customers: &[&str],
) -> Result<HashMap<String, String>, ReportError> {
    let (conditions, binds) = filters.pg("v", 2);
    let sql = segments_sql(&dimension_sql(group), &conditions);
    let mut query = sqlx::query_as(&sql).bind(customers);
    for b in &binds {
        query = query.bind(b);
    }
    let rows: Vec<(String, Option<String>)> = query
        .fetch_all(&state.pool)
        .await
        .map_err(ReportError::pg("subscription segments"))?;
    Ok(rows
        .into_iter()
        .map(|(customer, value)| (customer, value.unwrap_or_else(|| UNATTRIBUTED.to_owned())))
        .collect())
}

/// [`movements`] per segment, largest closing MRR (summed over currencies only to order the
/// list) first.
fn segment_movements(
    labels: &HashMap<String, String>,
    changes: &[MrrChange],
    first: Date,
    last: Date,
) -> Vec<Segment> {
    let mut parts: BTreeMap<&str, Vec<MrrChange>> = BTreeMap::new();
    for change in changes {
        let value = labels
            .get(&change.customer)
            .map_or(UNATTRIBUTED, String::as_str);
        parts.entry(value).or_default().push(change.clone());
    }
    let mut segments: Vec<Segment> = parts
        .into_iter()
        .map(|(value, list)| Segment {
            value: value.to_owned(),
            months: movements(&list, first, last),
        })
        .collect();
    let closing = |s: &Segment| -> i64 {
        s.months
            .iter()
            .filter(|m| m.month == last)
            .map(|m| m.closing)
            .sum()
    };
    segments.sort_by(|a, b| closing(b).cmp(&closing(a)).then(a.value.cmp(&b.value)));
    segments
}
