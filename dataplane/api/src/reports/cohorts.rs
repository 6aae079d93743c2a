//! `GET /api/v1/cohorts`: lifetime value by acquisition cohort (month of the first payment ×
//! first-touch dimension), from the payments table ([`zori_core::saas::cohort`]).

use std::collections::BTreeMap;

use axum::{
    extract::{RawQuery, State},
    Json,
};
use serde::Serialize;
use time::OffsetDateTime;
use zori_core::{
    saas::{
        cohort::{cohorts, Cohort, CustomerPayment, HORIZONS},
        month_of,
    },
    touch::Dimension,
};

use super::{
    filters::Filters,
    revenue::{dimension_sql, livemode, payers_before, Group, RESOLVED_PAYMENTS},
    Params, ReportError, ReportsState,
};

/// Label of customers whose payments are credited to no visitor.
pub const UNATTRIBUTED: &str = "(unattributed)";

#[derive(Serialize)]
pub struct Cohorts {
    pub dimension: &'static str,
    /// First and last acquisition month, `YYYY-MM`.
    pub from: String,
    pub to: String,
    pub horizons: &'static [u32],
    pub cohorts: Vec<Cohort>,
}

fn month_label(d: time::Date) -> String {
    format!("{:04}-{:02}", d.year(), d.month() as u8)
}

/// Customers acquired (first payment ever) in the months from `from` through `to`, grouped by
/// that month and the payer's first-touch `dimension` (default `channel`), with their
/// cumulative net revenue per customer after 1, 3, 6 and 12 months, per currency.
pub async fn cohorts_report(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Cohorts>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let livemode = livemode(&state.pool, &params).await?;
    let filters = Filters::parse(&params)?;
    let dimension: Dimension = params
        .get("dimension")
        .unwrap_or("channel")
        .parse()
        .map_err(|e: String| ReportError::bad("dimension", e))?;
    let now = OffsetDateTime::now_utc();
    let first_month = month_of(range.start());
    let last_month = month_of(range.to.midnight().assume_utc());

    let dim = dimension_sql(Group::Touch(dimension));
    let (conditions, binds) = filters.pg("v", 4);
    let sql = format!(
        "WITH {RESOLVED_PAYMENTS}
         SELECT r.payer, {dim} AS value, r.currency, r.paid_at,
                (r.amount - r.amount_refunded - r.amount_disputed)::int8 AS net
         FROM resolved r LEFT JOIN visitors v ON v.visitor_id = r.ft_visitor_id
         WHERE true{conditions}"
    );
    let start = first_month.midnight().assume_utc();
    let mut q = sqlx::query_as(&sql)
        .bind(start)
        .bind(now + time::Duration::days(1))
        .bind(livemode);
    for b in &binds {
        q = q.bind(b);
    }
    let (rows, earlier) = tokio::try_join!(
        async {
            q.fetch_all(&state.pool)
                .await
                .map_err(ReportError::pg("payments"))
        },
        payers_before(&state.pool, start, livemode),
    )?;
    let rows: Vec<(String, Option<String>, String, OffsetDateTime, i64)> = rows;
    // The first-touch value of a payer's first payment labels all of them.
    let mut label: BTreeMap<&str, (OffsetDateTime, &str)> = BTreeMap::new();
    for (payer, value, _, paid_at, _) in &rows {
        let value = value.as_deref().unwrap_or(UNATTRIBUTED);
        let entry = label.entry(payer.as_str()).or_insert((*paid_at, value));
        if *paid_at < entry.0 {
            *entry = (*paid_at, value);
        }
    }
    let payments: Vec<CustomerPayment> = rows
        .iter()
        .filter(|(payer, ..)| !earlier.contains(payer))
        .map(|(payer, _, currency, paid_at, net)| CustomerPayment {
            customer: payer.clone(),
            channel: label
                .get(payer.as_str())
                .map_or(UNATTRIBUTED, |(_, v)| *v)
                .to_owned(),
            currency: currency.clone(),
            paid_at: *paid_at,
            net: *net,
        })
        .collect();
    let cohorts = cohorts(&payments, &HORIZONS, now)
        .into_iter()
        .filter(|c| c.month >= first_month && c.month <= last_month)
        .collect();
    Ok(Json(Cohorts {
        dimension: dimension.as_str(),
        from: month_label(first_month),
        to: month_label(last_month),
        horizons: &HORIZONS,
        cohorts,
    }))
}
