//! Revenue reports, computed in PostgreSQL: attribution by first touch, overview, time series.
//!
//! A payment's first touch (zori-spec §9.4, §9.29): the credit stored when it arrived
//! (`credit_visitor_id`, see the Stripe store: kept, so closed months do not move); else its
//! `visitor_id` → if that visitor is identified, the earliest first touch among all visitors of
//! the user; else its `email_hash` → the matching user's earliest first touch (even when the
//! paying device is known but unidentified); else the visitor's own first touch; else the
//! payment is *unattributed* — a bucket of its own, never folded into direct. Net = amount − amount_refunded − amount_disputed (lost or withdrawn chargebacks).
//! Only captured money counts: authorizations and placeholders (amount 0) are left out.
//! Currencies are never summed together (§9.5).

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    Json,
};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{
    postgres::{PgArguments, PgRow},
    query::QueryAs,
    FromRow, PgPool, Postgres, Row,
};
use time::{Date, OffsetDateTime};
use zori_core::{
    currency::format_minor,
    touch::{Dimension, DIRECT, NOT_SET},
};

use super::{
    filters::{Filters, UNKNOWN_COUNTRY},
    rollups,
    tally::{self, Payment, Sums, Tally},
    DayRange, Params, ReportError, ReportsState,
};
use crate::ch::EventStore;

/// Money of one currency, in minor units (`formatted`: the net amount as a decimal string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Money {
    pub currency: String,
    pub payments: i64,
    pub gross: i64,
    pub refunded: i64,
    /// Chargebacks lost, or withdrawn and not (yet) reinstated.
    pub disputed: i64,
    pub net: i64,
    pub formatted: String,
}

impl Money {
    fn new(currency: String, payments: i64, gross: i64, refunded: i64, disputed: i64) -> Self {
        let net = gross.saturating_sub(refunded).saturating_sub(disputed);
        Money {
            formatted: format_minor(net, &currency),
            currency,
            payments,
            gross,
            refunded,
            disputed,
            net,
        }
    }
}

/// Net revenue per visitor of one currency, in (fractional) minor units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerVisitor {
    pub currency: String,
    pub amount: f64,
    pub formatted: String,
}

/// Share of the currency's total net revenue (0–1; null when the total is zero).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub currency: String,
    pub share: Option<f64>,
}

fn per_visitor(revenue: &[Money], visitors: i64) -> Vec<PerVisitor> {
    if visitors <= 0 {
        return Vec::new();
    }
    revenue
        .iter()
        .map(|m| {
            let amount = m.net as f64 / visitors as f64;
            PerVisitor {
                currency: m.currency.clone(),
                amount,
                formatted: format_minor(amount.round() as i64, &m.currency),
            }
        })
        .collect()
}

fn shares(revenue: &[Money], totals: &[Money]) -> Vec<Share> {
    revenue
        .iter()
        .map(|m| {
            let total = totals
                .iter()
                .find(|t| t.currency == m.currency)
                .map_or(0, |t| t.net);
            Share {
                currency: m.currency.clone(),
                share: (total != 0).then(|| m.net as f64 / total as f64),
            }
        })
        .collect()
}

fn rate(customers: i64, visitors: i64) -> Option<f64> {
    (visitors > 0).then(|| customers as f64 / visitors as f64)
}

/// What a breakdown groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// One group: the totals.
    All,
    /// A first-touch dimension.
    Touch(Dimension),
    /// The visitor's latest country (`(unknown)` when missing).
    Country,
    /// The visitor's latest device type.
    Device,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::All => "all",
            Group::Touch(d) => d.as_str(),
            Group::Country => "country",
            Group::Device => "device",
        }
    }
}

/// SQL for the value of a group on the visitors row `v` (NULL when there is no row), with
/// the same labels as [`zori_core::touch::Touch::dimension`].
pub(super) fn dimension_sql(group: Group) -> String {
    let expr = match group {
        Group::All => "'all'".to_owned(),
        Group::Touch(Dimension::Channel) => "v.ft_channel".to_owned(),
        Group::Touch(Dimension::Source) => "v.ft_source".to_owned(),
        Group::Touch(Dimension::Medium) => format!("COALESCE(v.ft_medium, '{NOT_SET}')"),
        Group::Touch(Dimension::Campaign) => format!("COALESCE(v.ft_campaign, '{NOT_SET}')"),
        Group::Touch(Dimension::Referrer) => format!("COALESCE(v.ft_referrer_host, '{DIRECT}')"),
        Group::Touch(Dimension::LandingPage) => "v.ft_landing_page".to_owned(),
        Group::Country => format!("COALESCE(NULLIF(v.country, ''), '{UNKNOWN_COUNTRY}')"),
        Group::Device => "COALESCE(v.device, 'unknown')".to_owned(),
    };
    format!("CASE WHEN v.visitor_id IS NULL THEN NULL ELSE {expr} END")
}

/// Payments in range with the visitor carrying their first touch (`ft_visitor_id`, NULL when
/// unattributed) and a payer key (user, else visitor, else email hash, customer, payment).
/// Parameters: $1 start, $2 end (exclusive), $3 livemode filter (NULL: all).
///
/// Both are stored on the payment row (`cr_*`, migration 0017) and kept current by triggers
/// whenever a payment, a visitor's first touch / country / device, an identity or a user's
/// email changes, so a report reads the payments of its range and nothing else: no lookup of
/// visitors, identities or users per payment.
macro_rules! paid_in_range {
    () => {
        "
    pay AS (
        SELECT p.payment_id, p.paid_at, p.amount, p.amount_refunded, p.amount_disputed,
               true AS in_range,
               p.currency, p.visitor_id,
               p.email_hash, p.customer_id,
               p.cr_visitor_user_id AS visitor_user_id,
               p.cr_email_user_id AS email_user_id,
               p.cr_own_visitor AS own_visitor,
               p.credit_visitor_id,
               p.cr_visitor_id, p.cr_payer, p.cr_known_visitor, p.cr_channel, p.cr_source,
               p.cr_medium, p.cr_campaign, p.cr_referrer_host, p.cr_landing_page,
               p.cr_country, p.cr_device
        FROM payments p
        WHERE p.paid_at >= $1 AND p.paid_at < $2 AND p.amount > 0
          AND ($3::boolean IS NULL OR p.livemode = $3::boolean)
    )"
    };
}

/// The payer and the first-touch visitor of each row of `pay` (stored on the payment).
macro_rules! resolve {
    () => {
        "
    resolved AS (
        SELECT pay.*, pay.cr_visitor_id AS ft_visitor_id, pay.cr_payer AS payer
        FROM pay
    )"
    };
}

/// The credited visitor's dimensions of a row `r` of `resolved`, as stored on the payment, in
/// the shape of a `visitors` row `v` (all NULL when the credited visitor is unknown), so that
/// [`dimension_sql`] and the filters read them as they read `visitors`.
pub(super) const STORED_V: &str = "CROSS JOIN LATERAL (
            SELECT r.cr_known_visitor AS visitor_id, r.cr_channel AS ft_channel,
                   r.cr_source AS ft_source, r.cr_medium AS ft_medium,
                   r.cr_campaign AS ft_campaign, r.cr_referrer_host AS ft_referrer_host,
                   r.cr_landing_page AS ft_landing_page, r.cr_country AS country,
                   r.cr_device AS device
        ) v";

/// Payments paid in range, resolved to their payer and first-touch visitor (refunds and
/// disputes on the payment's day). Parameters: $1 start, $2 end (exclusive), $3 livemode.
pub(super) const RESOLVED_PAYMENTS: &str = concat!(paid_in_range!(), ",", resolve!());

/// The payments of a report. With `refunds_on=event`, refunds and disputes on the day they happened: every payment
/// with money in range (paid, refunded or disputed in range), `in_range` when it was paid in
/// range; gross counts only for those, refunded / disputed only what happened in range. While no
/// refund record is known for a payment, its charge's cumulative refund is booked on the day of
/// the latest `charge.refunded`. Refunds and disputes are summed per payment once and joined by
/// hash: subqueries per payment read them 100,000 times for a large tenant (1-3 s, against
/// 70-120 ms joined, on the benchmark machine).
pub(super) fn resolved_payments(refunds_on: RefundsOn) -> String {
    match refunds_on {
        RefundsOn::Payment => RESOLVED_PAYMENTS.to_owned(),
        RefundsOn::Event => {
            format!(
                "
    refunds_by_payment AS (
        SELECT r.payment_id,
               COALESCE(sum(r.amount) FILTER (WHERE r.counts
                                              AND r.created_at >= $1 AND r.created_at < $2), 0)
                   AS amount
        FROM refunds r
        GROUP BY r.payment_id
    ),
    disputes_in_range AS (
        SELECT d.payment_id, sum(d.amount) AS amount
        FROM disputes d
        WHERE d.counts AND d.created_at >= $1 AND d.created_at < $2
        GROUP BY d.payment_id
    ),
    pay AS (
        SELECT p.payment_id, p.paid_at, p.currency, p.visitor_id, p.email_hash, p.customer_id,
               p.cr_visitor_user_id AS visitor_user_id,
               p.cr_email_user_id AS email_user_id,
               p.cr_own_visitor AS own_visitor,
               p.credit_visitor_id,
               p.cr_visitor_id, p.cr_payer, p.cr_known_visitor, p.cr_channel, p.cr_source,
               p.cr_medium, p.cr_campaign, p.cr_referrer_host, p.cr_landing_page,
               p.cr_country, p.cr_device,
               m.in_range,
               CASE WHEN m.in_range THEN p.amount ELSE 0 END AS amount,
               m.amount_refunded, m.amount_disputed
        FROM payments p
        LEFT JOIN refunds_by_payment rp ON rp.payment_id = p.payment_id
        LEFT JOIN disputes_in_range dr ON dr.payment_id = p.payment_id
        CROSS JOIN LATERAL (
            SELECT (p.paid_at >= $1 AND p.paid_at < $2) AS in_range,
                   CASE WHEN rp.payment_id IS NOT NULL THEN rp.amount
                        WHEN p.charge_refunded_as_of >= $1 AND p.charge_refunded_as_of < $2
                        THEN COALESCE(p.charge_amount_refunded, 0)
                        ELSE 0 END AS amount_refunded,
                   COALESCE(dr.amount, 0) AS amount_disputed
        ) m
        WHERE p.amount > 0
          AND ($3::boolean IS NULL OR p.livemode = $3::boolean)
          AND (m.in_range OR m.amount_refunded > 0 OR m.amount_disputed > 0)
    ),{resolve}",
                resolve = resolve!()
            )
        }
    }
}

/// Where refunds and disputes are reported: on the day of the payment they take back (the
/// default: a period's net revenue is final once its payments are), or on the day they
/// happened (`refunds_on=event`, what finance books).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundsOn {
    Payment,
    Event,
}

fn refunds_on(params: &Params) -> Result<RefundsOn, ReportError> {
    match params.get("refunds_on") {
        None | Some("") | Some("payment") => Ok(RefundsOn::Payment),
        Some("event") => Ok(RefundsOn::Event),
        Some(other) => Err(ReportError::bad(
            "refunds_on",
            format!("{other:?} is not payment or event"),
        )),
    }
}

/// Payers (the keys of [`RESOLVED_PAYMENTS`]) of any payment before `before`: the customers
/// who are not new after it.
pub(super) async fn payers_before(
    pool: &PgPool,
    before: OffsetDateTime,
    livemode: Option<bool>,
) -> Result<BTreeSet<String>, ReportError> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "WITH {RESOLVED_PAYMENTS} SELECT DISTINCT payer FROM resolved"
    ))
    .bind(OffsetDateTime::UNIX_EPOCH)
    .bind(before)
    .bind(livemode)
    .fetch_all(pool)
    .await
    .map_err(ReportError::pg("earlier payments"))?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}

/// Payments in range, labelled with the group value and filtered by the visitor they are
/// credited to, one narrow row each for [`tally`]. Parameters: $1 start, $2 end (exclusive),
/// $3 livemode, then the filters.
fn breakdown_sql(group: Group, filters: &Filters, refunds_on: RefundsOn) -> (String, Vec<String>) {
    let dim = dimension_sql(group);
    let (conditions, binds) = filters.pg("v", 4);
    let resolved = resolved_payments(refunds_on);
    let sql = format!(
        "WITH {resolved}
        SELECT r.payer, r.currency, r.amount::int8, r.amount_refunded::int8,
               r.amount_disputed::int8, r.in_range,
               (r.ft_visitor_id IS NOT NULL) AS attributed,
               {dim} AS value
        FROM resolved r
        {STORED_V}
        WHERE true{conditions}"
    );
    (sql, binds)
}

/// Distinct visitors active in range (visitor_days), by the value of their own first touch.
/// Parameters: $1 first day, $2 last day, then the filters.
///
/// Without a group key or a filter the count comes from `visitor_days` alone (its primary key
/// (day, visitor_id) covers the range): each of its rows is written in the same transaction
/// as the visitor's row and visitors are never deleted, so joining `visitors` would change
/// nothing but cost a probe into a wide, often-updated table per visitor.
fn visitors_sql(group: Group, filters: &Filters) -> (String, Vec<String>) {
    if group == Group::All && filters.is_empty() {
        let sql = "SELECT 'all'::text AS value, count(*)::int8 AS visitors
                   FROM (SELECT DISTINCT d.visitor_id FROM visitor_days d
                         WHERE d.day >= $1 AND d.day <= $2) active
                   HAVING count(*) > 0";
        return (sql.to_owned(), Vec::new());
    }
    let dim = dimension_sql(group);
    let (conditions, binds) = filters.pg("v", 3);
    let sql = format!(
        "SELECT {dim} AS value, count(*)::int8 AS visitors
         FROM visitors v
         WHERE v.visitor_id IN (SELECT d.visitor_id FROM visitor_days d WHERE d.day >= $1 AND d.day <= $2){conditions}
         GROUP BY 1"
    );
    (sql, binds)
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    customers: i64,
    payments: i64,
    revenue: Vec<Money>,
}

#[derive(Debug, Default)]
struct Breakdown {
    visitors: BTreeMap<String, i64>,
    /// Distinct visitors of all groups (a visitor in two groups counts once).
    visitor_total: i64,
    rows: BTreeMap<String, Bucket>,
    unattributed: Bucket,
    totals: Bucket,
}

/// Runs one report query in a transaction of its own with JIT compilation off, after the
/// extra `SET LOCAL` statements given. The revenue queries have many subplans and joins, so
/// PostgreSQL's cost estimate crosses the JIT thresholds on a large tenant, and compiling
/// (with inlining and optimisation) then took several times longer than executing: ~0.5 s
/// against tens of milliseconds.
pub(super) async fn fetch_all_local<'q, T>(
    pool: &PgPool,
    settings: &[&str],
    query: QueryAs<'q, Postgres, T, PgArguments>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let mut tx = pool.begin().await?;
    configure(&mut tx, settings).await?;
    let rows = query.fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// JIT off (see [`fetch_all_local`]), then the extra `SET LOCAL` statements given.
async fn configure(tx: &mut sqlx::PgConnection, settings: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    for setting in settings {
        sqlx::query(setting).execute(&mut *tx).await?;
    }
    Ok(())
}

/// A read-only transaction whose statements all see one snapshot, configured as
/// [`fetch_all_local`]'s, for a report made of several queries.
async fn snapshot(
    pool: &PgPool,
    settings: &[&str],
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    configure(&mut tx, settings).await?;
    Ok(tx)
}

/// The visitor side joins every visitor active in range to its `visitors` row. When the
/// tables' statistics lag behind (a fresh tenant, before autovacuum's first ANALYZE), the
/// planner takes the ~100,000 active visitors for a few hundred and probes `visitors` once per
/// visitor, which on a table full of not yet vacuumed row versions is the slowest plan there
/// is. A hash or merge join reads each table once whatever the estimates say.
const VISITORS_SETTINGS: &[&str] = &["SET LOCAL enable_nestloop = off"];

/// Customers groups the range's payments by payer (its latest payers): room to sort 100,000
/// payments in memory rather than in temporary files.
const PAYMENTS_SETTINGS: &[&str] = &["SET LOCAL work_mem = '64MB'"];

/// Where visitor counts come from: the ClickHouse visitor rollup (`uniq` estimates, the
/// default), or PostgreSQL's visitor days (`exact=true`: exact, but reads every visitor
/// active in range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitorCounts {
    Rollup,
    Exact,
}

impl VisitorCounts {
    /// `exact=true` asks for exact counts; without rollups (a ClickHouse cluster) they are
    /// always exact.
    pub fn parse(params: &Params, events: &EventStore) -> Result<Self, ReportError> {
        Ok(match params.bool("exact")? {
            Some(true) => VisitorCounts::Exact,
            None | Some(false) if !events.has_rollups() => VisitorCounts::Exact,
            None | Some(false) => VisitorCounts::Rollup,
        })
    }

    pub fn approximate(self) -> bool {
        self == VisitorCounts::Rollup
    }
}

/// Visitors active in range by group value, and their total, from PostgreSQL (exact).
async fn exact_visitors(
    pool: &PgPool,
    group: Group,
    range: DayRange,
    filters: &Filters,
) -> Result<(BTreeMap<String, i64>, i64), ReportError> {
    let (visitors_sql, visitors_binds) = visitors_sql(group, filters);
    let mut visitors = sqlx::query_as(&visitors_sql)
        .bind(range.from)
        .bind(range.to);
    for b in &visitors_binds {
        visitors = visitors.bind(b);
    }
    let rows: Vec<(Option<String>, i64)> = fetch_all_local(pool, VISITORS_SETTINGS, visitors)
        .await
        .map_err(ReportError::pg("visitors"))?;
    let groups: BTreeMap<String, i64> = rows
        .into_iter()
        .map(|(value, n)| (value.unwrap_or_default(), n))
        .collect();
    let total = groups.values().sum();
    Ok((groups, total))
}

#[allow(clippy::too_many_arguments)]
async fn breakdown(
    pool: &PgPool,
    events: &EventStore,
    counts: VisitorCounts,
    group: Group,
    range: DayRange,
    livemode: Option<bool>,
    filters: &Filters,
    refunds_on: RefundsOn,
) -> Result<Breakdown, ReportError> {
    let (payments_sql, payments_binds) = breakdown_sql(group, filters, refunds_on);
    // The visitor side and the payment side are independent: run them side by side.
    let ((visitors, visitor_total), payments) = tokio::try_join!(
        async {
            match counts {
                VisitorCounts::Rollup => rollups::visitors(events, group, range, filters).await,
                VisitorCounts::Exact => exact_visitors(pool, group, range, filters).await,
            }
        },
        async {
            tally_payments(pool, &payments_sql, &payments_binds, range, livemode)
                .await
                .map_err(ReportError::pg("payments"))
        },
    )?;
    Ok(Breakdown {
        visitors,
        visitor_total,
        rows: payments
            .groups
            .into_iter()
            .map(|(value, sums)| (value, Bucket::from(sums)))
            .collect(),
        unattributed: payments.unattributed.into(),
        totals: payments.all.into(),
    })
}

/// Reads the breakdown's payments (see [`breakdown_sql`]) row by row into a [`Tally`].
async fn tally_payments(
    pool: &PgPool,
    sql: &str,
    binds: &[String],
    range: DayRange,
    livemode: Option<bool>,
) -> Result<tally::Totals, sqlx::Error> {
    let mut query = sqlx::query(sql)
        .bind(range.start())
        .bind(range.end_exclusive())
        .bind(livemode);
    for b in binds {
        query = query.bind(b);
    }
    let mut tx = pool.begin().await?;
    configure(&mut tx, &[]).await?;
    let mut tally = Tally::default();
    {
        let mut rows = query.fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            tally.add(Payment {
                payer: row.try_get(0)?,
                currency: row.try_get(1)?,
                amount: row.try_get(2)?,
                refunded: row.try_get(3)?,
                disputed: row.try_get(4)?,
                in_range: row.try_get(5)?,
                attributed: row.try_get(6)?,
                value: row.try_get(7)?,
            });
        }
    }
    tx.commit().await?;
    Ok(tally.finish())
}

impl From<Sums> for Bucket {
    /// Currencies in order (a `BTreeMap`'s).
    fn from(sums: Sums) -> Self {
        Bucket {
            customers: sums.customers,
            payments: sums.payments,
            revenue: sums
                .money
                .into_iter()
                .map(|(currency, c)| {
                    Money::new(currency, c.payments, c.gross, c.refunded, c.disputed)
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct AttributionRow {
    pub value: String,
    pub visitors: i64,
    pub customers: i64,
    pub payments: i64,
    pub conversion_rate: Option<f64>,
    pub revenue: Vec<Money>,
    pub revenue_per_visitor: Vec<PerVisitor>,
    pub revenue_share: Vec<Share>,
}

#[derive(Serialize)]
pub struct Unattributed {
    pub customers: i64,
    pub payments: i64,
    pub revenue: Vec<Money>,
    pub revenue_share: Vec<Share>,
}

#[derive(Serialize)]
pub struct Totals {
    pub visitors: i64,
    pub customers: i64,
    pub payments: i64,
    pub conversion_rate: Option<f64>,
    pub revenue: Vec<Money>,
    pub revenue_per_visitor: Vec<PerVisitor>,
}

#[derive(Serialize)]
pub struct Attribution {
    /// The payments counted: `true` live, `false` test mode, `null` both (`livemode=all`).
    pub livemode: Option<bool>,
    /// Whether visitor counts (and the rates per visitor) are `uniq` estimates from the
    /// rollup (`exact=true` makes them exact).
    pub visitors_approximate: bool,
    pub dimension: &'static str,
    pub from: String,
    pub to: String,
    pub rows: Vec<AttributionRow>,
    pub unattributed: Unattributed,
    pub totals: Totals,
}

/// Which payments a revenue report counts: `livemode=true` live ones, `false` test-mode ones,
/// `all` both. By default live ones, and test-mode ones only while the tenant has no live
/// payment at all (a shop still testing its integration, the demo): test and live money are
/// never mixed unless asked for.
pub(super) async fn livemode(pool: &PgPool, params: &Params) -> Result<Option<bool>, ReportError> {
    match params.get("livemode") {
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some("all") => Ok(None),
        None | Some("") => {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM payments WHERE livemode AND amount > 0)",
            )
            .fetch_one(pool)
            .await
            .map_err(ReportError::pg("live payments"))?;
            Ok(Some(live))
        }
        Some(other) => Err(ReportError::bad(
            "livemode",
            format!("{other:?} is not true, false or all"),
        )),
    }
}

/// A breakdown report (attribution by a first-touch dimension, countries, devices).
async fn grouped(
    state: &ReportsState,
    group: Group,
    params: &Params,
) -> Result<Attribution, ReportError> {
    let range = params.range()?;
    let livemode = livemode(&state.pool, params).await?;
    let filters = Filters::parse(params)?;
    let counts = VisitorCounts::parse(params, &state.events)?;
    let b = breakdown(
        &state.pool,
        &state.events,
        counts,
        group,
        range,
        livemode,
        &filters,
        refunds_on(params)?,
    )
    .await?;

    let values: BTreeSet<&String> = b.visitors.keys().chain(b.rows.keys()).collect();
    let empty = Bucket::default();
    let mut rows: Vec<AttributionRow> = values
        .into_iter()
        .map(|value| {
            let visitors = b.visitors.get(value).copied().unwrap_or(0);
            let bucket = b.rows.get(value).unwrap_or(&empty);
            AttributionRow {
                value: value.clone(),
                visitors,
                customers: bucket.customers,
                payments: bucket.payments,
                conversion_rate: rate(bucket.customers, visitors),
                revenue_per_visitor: per_visitor(&bucket.revenue, visitors),
                revenue_share: shares(&bucket.revenue, &b.totals.revenue),
                revenue: bucket.revenue.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.customers
            .cmp(&a.customers)
            .then(b.visitors.cmp(&a.visitors))
            .then(a.value.cmp(&b.value))
    });
    let total_visitors = b.visitor_total;
    Ok(Attribution {
        livemode,
        visitors_approximate: counts.approximate(),
        dimension: group.as_str(),
        from: range.from.to_string(),
        to: range.to.to_string(),
        rows,
        unattributed: Unattributed {
            customers: b.unattributed.customers,
            payments: b.unattributed.payments,
            revenue_share: shares(&b.unattributed.revenue, &b.totals.revenue),
            revenue: b.unattributed.revenue,
        },
        totals: Totals {
            visitors: total_visitors,
            customers: b.totals.customers,
            payments: b.totals.payments,
            conversion_rate: rate(b.totals.customers, total_visitors),
            revenue_per_visitor: per_visitor(&b.totals.revenue, total_visitors),
            revenue: b.totals.revenue,
        },
    })
}

/// By a first-touch dimension; with `model=…`, credited by that attribution model over the
/// touch history instead (see [`super::models`]).
pub async fn attribution(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ReportError> {
    let params = Params::parse(query)?;
    if params.get("model").is_some() {
        return super::models::attribution(&state, &params).await;
    }
    let dimension: Dimension = params
        .get("dimension")
        .unwrap_or("channel")
        .parse()
        .map_err(|e: String| ReportError::bad("dimension", e))?;
    Ok(Json(grouped(&state, Group::Touch(dimension), &params).await?).into_response())
}

/// Visitors, customers and revenue by the visitor's latest country.
pub async fn countries(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Attribution>, ReportError> {
    let params = Params::parse(query)?;
    Ok(Json(grouped(&state, Group::Country, &params).await?))
}

/// Visitors, customers and revenue by the visitor's latest device type.
pub async fn devices(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Attribution>, ReportError> {
    let params = Params::parse(query)?;
    Ok(Json(grouped(&state, Group::Device, &params).await?))
}

#[derive(Serialize)]
pub struct UnattributedRevenue {
    pub customers: i64,
    pub payments: i64,
    pub revenue: Vec<Money>,
}

/// The headline numbers of one period.
#[derive(Serialize)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub visitors: i64,
    pub customers: i64,
    pub payments: i64,
    pub conversion_rate: Option<f64>,
    pub revenue: Vec<Money>,
    pub revenue_per_visitor: Vec<PerVisitor>,
}

/// Relative change of a currency's amount against the previous period.
#[derive(Debug, Serialize, PartialEq)]
pub struct CurrencyChange {
    pub currency: String,
    pub change: Option<f64>,
}

/// Relative changes (`0.25` = +25 %) against the previous period; `null` when the previous
/// value is zero or missing.
#[derive(Serialize)]
pub struct Change {
    pub visitors: Option<f64>,
    pub customers: Option<f64>,
    pub payments: Option<f64>,
    pub conversion_rate: Option<f64>,
    pub revenue: Vec<CurrencyChange>,
    pub revenue_per_visitor: Vec<CurrencyChange>,
}

#[derive(Serialize)]
pub struct Overview {
    /// The payments counted: `true` live, `false` test mode, `null` both (`livemode=all`).
    pub livemode: Option<bool>,
    /// Whether visitor counts (and the rates per visitor) are `uniq` estimates from the
    /// rollup (`exact=true` makes them exact).
    pub visitors_approximate: bool,
    #[serde(flatten)]
    pub current: Period,
    pub unattributed: UnattributedRevenue,
    /// With `compare=previous`: the same numbers for the period of equal length just before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Period>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

fn relative(current: f64, previous: f64) -> Option<f64> {
    (previous != 0.0).then(|| (current - previous) / previous)
}

fn currency_changes<T>(
    current: &[T],
    previous: &[T],
    key: impl Fn(&T) -> (&str, f64),
) -> Vec<CurrencyChange> {
    let currencies: BTreeSet<&str> = current.iter().chain(previous).map(|m| key(m).0).collect();
    let amount = |list: &[T], c: &str| {
        list.iter()
            .map(&key)
            .find(|(code, _)| *code == c)
            .map_or(0.0, |(_, a)| a)
    };
    currencies
        .into_iter()
        .map(|c| CurrencyChange {
            currency: c.to_owned(),
            change: relative(amount(current, c), amount(previous, c)),
        })
        .collect()
}

fn change(current: &Period, previous: &Period) -> Change {
    Change {
        visitors: relative(current.visitors as f64, previous.visitors as f64),
        customers: relative(current.customers as f64, previous.customers as f64),
        payments: relative(current.payments as f64, previous.payments as f64),
        conversion_rate: match (current.conversion_rate, previous.conversion_rate) {
            (Some(c), Some(p)) => relative(c, p),
            _ => None,
        },
        revenue: currency_changes(&current.revenue, &previous.revenue, |m| {
            (m.currency.as_str(), m.net as f64)
        }),
        revenue_per_visitor: currency_changes(
            &current.revenue_per_visitor,
            &previous.revenue_per_visitor,
            |m| (m.currency.as_str(), m.amount),
        ),
    }
}

fn period(range: DayRange, b: Breakdown) -> (Period, Bucket) {
    let visitors = b.visitor_total;
    (
        Period {
            from: range.from.to_string(),
            to: range.to.to_string(),
            visitors,
            customers: b.totals.customers,
            payments: b.totals.payments,
            conversion_rate: rate(b.totals.customers, visitors),
            revenue_per_visitor: per_visitor(&b.totals.revenue, visitors),
            revenue: b.totals.revenue,
        },
        b.unattributed,
    )
}

pub async fn overview(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Overview>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let livemode = livemode(&state.pool, &params).await?;
    let filters = Filters::parse(&params)?;
    let compare = match params.get("compare") {
        None | Some("") | Some("none") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ReportError::bad(
                "compare",
                format!("{other:?} is not previous or none"),
            ))
        }
    };
    let refunds_on = refunds_on(&params)?;
    let counts = VisitorCounts::parse(&params, &state.events)?;
    let current = breakdown(
        &state.pool,
        &state.events,
        counts,
        Group::All,
        range,
        livemode,
        &filters,
        refunds_on,
    );
    let (current, previous) = if compare {
        let before = range.previous();
        let previous = breakdown(
            &state.pool,
            &state.events,
            counts,
            Group::All,
            before,
            livemode,
            &filters,
            refunds_on,
        );
        let (current, previous) = tokio::try_join!(current, previous)?;
        (current, Some(period(before, previous).0))
    } else {
        (current.await?, None)
    };
    let (current, unattributed) = period(range, current);
    Ok(Json(Overview {
        livemode,
        visitors_approximate: counts.approximate(),
        change: previous.as_ref().map(|p| change(&current, p)),
        current,
        unattributed: UnattributedRevenue {
            customers: unattributed.customers,
            payments: unattributed.payments,
            revenue: unattributed.revenue,
        },
        previous,
    }))
}

#[derive(Serialize)]
pub struct Day {
    pub date: String,
    pub visitors: i64,
    pub payments: i64,
    pub revenue: Vec<Money>,
}

/// Money per day and currency with refunds and disputes on the day they happened: payments (and
/// gross) on their paid day, each refund on its own day (a charge's cumulative refund on the day
/// of its latest `charge.refunded` while no refund record is known), each dispute on its day.
fn timeseries_by_event_sql(filters: &Filters, conditions: &str) -> String {
    let resolved = resolved_payments(RefundsOn::Event);
    let credited = if filters.is_empty() {
        "SELECT r.* FROM resolved r".to_owned()
    } else {
        format!(
            "SELECT r.* FROM resolved r {STORED_V}
             WHERE v.visitor_id IS NOT NULL{conditions}"
        )
    };
    format!(
        "WITH {resolved},
         credited AS ({credited}),
         moves AS (
            SELECT (c.paid_at AT TIME ZONE 'UTC')::date AS day, c.currency, 1 AS n,
                   c.amount AS gross, 0::int8 AS refunded, 0::int8 AS disputed
              FROM credited c WHERE c.in_range
            UNION ALL
            SELECT (r.created_at AT TIME ZONE 'UTC')::date, c.currency, 0, 0, r.amount, 0
              FROM credited c JOIN refunds r ON r.payment_id = c.payment_id
             WHERE r.counts AND r.created_at >= $1 AND r.created_at < $2
            UNION ALL
            SELECT (p.charge_refunded_as_of AT TIME ZONE 'UTC')::date, c.currency, 0, 0,
                   COALESCE(p.charge_amount_refunded, 0), 0
              FROM credited c JOIN payments p ON p.payment_id = c.payment_id
             WHERE NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = c.payment_id)
               AND p.charge_refunded_as_of >= $1 AND p.charge_refunded_as_of < $2
            UNION ALL
            SELECT (d.created_at AT TIME ZONE 'UTC')::date, c.currency, 0, 0, 0, d.amount
              FROM credited c JOIN disputes d ON d.payment_id = c.payment_id
             WHERE d.counts AND d.created_at >= $1 AND d.created_at < $2
         )
         SELECT day, currency, sum(n)::int8, sum(gross)::int8, sum(refunded)::int8,
                sum(disputed)::int8
         FROM moves GROUP BY 1, 2"
    )
}

/// Visitors active on each day of the range, from PostgreSQL's visitor days (exact).
async fn exact_visitors_by_day(
    pool: &PgPool,
    range: DayRange,
    filters: &Filters,
) -> Result<BTreeMap<Date, i64>, ReportError> {
    let (conditions, binds) = filters.pg("v", 3);
    let sql = if filters.is_empty() {
        "SELECT day, count(*)::int8 FROM visitor_days WHERE day >= $1 AND day <= $2 GROUP BY day"
            .to_owned()
    } else {
        format!(
            "SELECT d.day, count(*)::int8 FROM visitor_days d JOIN visitors v ON v.visitor_id = d.visitor_id
             WHERE d.day >= $1 AND d.day <= $2{conditions} GROUP BY d.day"
        )
    };
    let mut query = sqlx::query_as(&sql).bind(range.from).bind(range.to);
    for b in &binds {
        query = query.bind(b);
    }
    let visitors: Vec<(Date, i64)> = query
        .fetch_all(pool)
        .await
        .map_err(ReportError::pg("visitor days"))?;
    Ok(visitors.into_iter().collect())
}

#[derive(Serialize)]
pub struct Timeseries {
    /// The payments counted: `true` live, `false` test mode, `null` both (`livemode=all`).
    pub livemode: Option<bool>,
    /// Whether the daily visitor counts are `uniq` estimates from the rollup.
    pub visitors_approximate: bool,
    pub from: String,
    pub to: String,
    pub currencies: Vec<String>,
    pub days: Vec<Day>,
}

pub async fn timeseries(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Timeseries>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let livemode = livemode(&state.pool, &params).await?;
    let filters = Filters::parse(&params)?;
    let counts = VisitorCounts::parse(&params, &state.events)?;

    let visitors: BTreeMap<Date, i64> = match counts {
        VisitorCounts::Rollup => rollups::visitors_by_day(&state.events, range, &filters)
            .await?
            .into_iter()
            .filter_map(|(day, n)| {
                Date::parse(&day, &time::format_description::well_known::Iso8601::DATE)
                    .ok()
                    .map(|d| (d, n))
            })
            .collect(),
        VisitorCounts::Exact => exact_visitors_by_day(&state.pool, range, &filters).await?,
    };

    // Without filters every payment counts (attributed or not); with filters only those
    // credited to a visitor that matches them.
    let (conditions, binds) = filters.pg("v", 4);
    let sql = if refunds_on(&params)? == RefundsOn::Event {
        timeseries_by_event_sql(&filters, &conditions)
    } else if filters.is_empty() {
        "SELECT (paid_at AT TIME ZONE 'UTC')::date AS day, currency, count(*)::int8,
                COALESCE(sum(amount), 0)::int8, COALESCE(sum(amount_refunded), 0)::int8,
                COALESCE(sum(amount_disputed), 0)::int8
         FROM payments
         WHERE paid_at >= $1 AND paid_at < $2 AND amount > 0 AND ($3::boolean IS NULL OR livemode = $3::boolean)
         GROUP BY 1, 2"
            .to_owned()
    } else {
        format!(
            "WITH {}
             SELECT (r.paid_at AT TIME ZONE 'UTC')::date AS day, r.currency, count(*)::int8,
                    COALESCE(sum(r.amount), 0)::int8, COALESCE(sum(r.amount_refunded), 0)::int8,
                    COALESCE(sum(r.amount_disputed), 0)::int8
             FROM resolved r
             {STORED_V}
             WHERE v.visitor_id IS NOT NULL{conditions}
             GROUP BY 1, 2",
            resolved_payments(RefundsOn::Payment)
        )
    };
    let mut query = sqlx::query_as(&sql)
        .bind(range.start())
        .bind(range.end_exclusive())
        .bind(livemode);
    for b in &binds {
        query = query.bind(b);
    }
    let revenue: Vec<(Date, String, i64, i64, i64, i64)> = query
        .fetch_all(&state.pool)
        .await
        .map_err(ReportError::pg("payments"))?;

    let currencies: Vec<String> = revenue
        .iter()
        .map(|(_, c, ..)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut money: BTreeMap<(Date, String), (i64, i64, i64, i64)> = BTreeMap::new();
    for (day, currency, payments, gross, refunded, disputed) in revenue {
        money.insert((day, currency), (payments, gross, refunded, disputed));
    }
    let days = range
        .days()
        .map(|date| {
            let revenue: Vec<Money> = currencies
                .iter()
                .map(|c| {
                    let (p, g, r, d) = money.get(&(date, c.clone())).copied().unwrap_or_default();
                    Money::new(c.clone(), p, g, r, d)
                })
                .collect();
            Day {
                date: date.to_string(),
                visitors: visitors.get(&date).copied().unwrap_or(0),
                payments: revenue.iter().map(|m| m.payments).sum(),
                revenue,
            }
        })
        .collect();
    Ok(Json(Timeseries {
        livemode,
        visitors_approximate: counts.approximate(),
        from: range.from.to_string(),
        to: range.to.to_string(),
        currencies,
        days,
    }))
}

/// One payer (user, else visitor, else email hash / Stripe customer) of payments in range.
#[derive(Serialize)]
pub struct Customer {
    /// A visitor id to open the journey with: the one of the latest payment, else the visitor
    /// carrying the first touch; `null` when the payer is known by email only.
    pub visitor_id: Option<String>,
    /// The user's own id, when identified.
    pub app_id: Option<String>,
    pub fullname: Option<String>,
    /// First-touch channel and source revenue is credited to; `null` when unattributed.
    pub channel: Option<String>,
    pub source: Option<String>,
    pub payments: i64,
    pub revenue: Vec<Money>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_paid_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_paid_at: OffsetDateTime,
}

#[derive(Serialize)]
pub struct Customers {
    /// The payments counted: `true` live, `false` test mode, `null` both (`livemode=all`).
    pub livemode: Option<bool>,
    pub from: String,
    pub to: String,
    pub rows: Vec<Customer>,
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    payer: String,
    currency: String,
    payments: i64,
    gross: i64,
    refunded: i64,
    disputed: i64,
    first_paid_at: OffsetDateTime,
    last_paid_at: OffsetDateTime,
    visitor_id: Option<String>,
    app_id: Option<String>,
    fullname: Option<String>,
    channel: Option<String>,
    source: Option<String>,
}

/// The `limit` payers whose latest payment in `labelled` (a `WITH` clause defining it over the
/// usual parameters `$1`-`$3` and `binds`) is the most recent, ties by payer key: the order
/// [`customers`] shows. A payer's first row in the order (newest payment, then payer) is its
/// latest payment, so the first `limit` payers to appear are the page. PostgreSQL reads them
/// along `payments_paid_at_idx`, sorting only within equal payment times (an incremental sort),
/// or, when the times tie a lot, keeps the top rows of one pass (a top-N sort); either way the
/// work follows the page shown, not the payments grouped. When a few payers own most of the
/// newest payments, the read doubles until enough payers, or every payment of the range, were
/// read.
async fn latest_payers(
    tx: &mut sqlx::PgConnection,
    labelled: &str,
    range: &DayRange,
    livemode: Option<bool>,
    binds: &[String],
    limit: i64,
) -> Result<Vec<String>, ReportError> {
    #[derive(sqlx::FromRow)]
    struct Payer {
        payer: String,
    }
    let limit = usize::try_from(limit).unwrap_or(0);
    let sql = format!(
        "{labelled}
        SELECT payer FROM labelled ORDER BY paid_at DESC, payer ASC LIMIT ${}",
        4 + binds.len()
    );
    let mut read = limit.saturating_mul(4).max(1);
    loop {
        let mut query = sqlx::query_as::<_, Payer>(&sql)
            .bind(range.start())
            .bind(range.end_exclusive())
            .bind(livemode);
        for b in binds {
            query = query.bind(b);
        }
        let rows = query
            .bind(i64::try_from(read).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(ReportError::pg("latest payers"))?;
        let complete = rows.len() < read;
        let mut seen = BTreeSet::new();
        let mut payers = Vec::new();
        for row in rows {
            if payers.len() == limit {
                break;
            }
            if seen.insert(row.payer.clone()) {
                payers.push(row.payer);
            }
        }
        if complete || payers.len() == limit {
            return Ok(payers);
        }
        read = read.saturating_mul(2);
    }
}

/// Payers of payments in range, most recent payment first.
pub async fn customers(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Customers>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let livemode = livemode(&state.pool, &params).await?;
    let filters = Filters::parse(&params)?;
    let limit = params.int("limit", 50, 1, 1000)?;
    let (conditions, binds) = filters.pg("v", 4);
    let resolved = resolved_payments(RefundsOn::Payment);
    let labelled = format!(
        "WITH {resolved},
        labelled AS (
            SELECT r.*, v.ft_channel, v.ft_source
            FROM resolved r
            {STORED_V}
            WHERE true{conditions}
        )"
    );
    // Both reads see one snapshot: a payment committed between them cannot make the page's
    // payers differ from the payers it sums.
    let mut tx = snapshot(&state.pool, PAYMENTS_SETTINGS)
        .await
        .map_err(ReportError::pg("customers"))?;
    let payers = latest_payers(
        &mut tx,
        &labelled,
        &range,
        livemode,
        &binds,
        i64::from(limit),
    )
    .await?;
    // Grouped by payer and currency straight from the payments: no join multiplies amounts.
    let sql = format!(
        "{labelled}
        SELECT l.payer, l.currency,
               count(*)::int8 AS payments,
               COALESCE(sum(l.amount), 0)::int8 AS gross,
               COALESCE(sum(l.amount_refunded), 0)::int8 AS refunded,
               COALESCE(sum(l.amount_disputed), 0)::int8 AS disputed,
               min(l.paid_at) AS first_paid_at,
               max(l.paid_at) AS last_paid_at,
               COALESCE((array_agg(l.visitor_id ORDER BY l.paid_at DESC)
                            FILTER (WHERE l.own_visitor))[1],
                        max(l.ft_visitor_id)) AS visitor_id,
               max(u.app_id) AS app_id,
               max(u.fullname) AS fullname,
               max(l.ft_channel) AS channel,
               max(l.ft_source) AS source
        FROM labelled l
        LEFT JOIN users u ON u.user_id = COALESCE(l.visitor_user_id, l.email_user_id)
        WHERE l.payer IN (SELECT unnest(${payers_param}::text[]))
        GROUP BY l.payer, l.currency",
        payers_param = 4 + binds.len()
    );
    let mut query = sqlx::query_as(&sql)
        .bind(range.start())
        .bind(range.end_exclusive())
        .bind(livemode);
    for b in &binds {
        query = query.bind(b);
    }
    let rows: Vec<CustomerRow> = query
        .bind(&payers)
        .fetch_all(&mut *tx)
        .await
        .map_err(ReportError::pg("customers"))?;
    tx.commit().await.map_err(ReportError::pg("customers"))?;
    let mut by_payer: BTreeMap<String, Customer> = BTreeMap::new();
    for r in rows {
        let money = Money::new(r.currency, r.payments, r.gross, r.refunded, r.disputed);
        let c = by_payer.entry(r.payer).or_insert_with(|| Customer {
            visitor_id: None,
            app_id: r.app_id,
            fullname: r.fullname,
            channel: r.channel,
            source: r.source,
            payments: 0,
            revenue: Vec::new(),
            first_paid_at: r.first_paid_at,
            last_paid_at: r.last_paid_at,
        });
        if r.visitor_id.is_some() && (r.last_paid_at >= c.last_paid_at || c.visitor_id.is_none()) {
            c.visitor_id = r.visitor_id;
        }
        c.payments += money.payments;
        c.first_paid_at = c.first_paid_at.min(r.first_paid_at);
        c.last_paid_at = c.last_paid_at.max(r.last_paid_at);
        c.revenue.push(money);
    }
    let mut rows: Vec<Customer> = by_payer.into_values().collect();
    for c in &mut rows {
        c.revenue.sort_by(|a, b| a.currency.cmp(&b.currency));
    }
    rows.sort_by_key(|c| std::cmp::Reverse(c.last_paid_at));
    rows.truncate(limit as usize);
    Ok(Json(Customers {
        livemode,
        from: range.from.to_string(),
        to: range.to.to_string(),
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_formats_net_per_currency() {
        let usd = Money::new("usd".into(), 2, 9900, 900, 0);
        assert_eq!((usd.net, usd.formatted.as_str()), (9000, "90.00"));
        let jpy = Money::new("jpy".into(), 1, 5000, 0, 0);
        assert_eq!(jpy.formatted, "5000");
        let kwd = Money::new("kwd".into(), 1, 1234, 0, 0);
        assert_eq!(kwd.formatted, "1.234");
    }

    #[test]
    fn per_visitor_and_shares() {
        let rev = vec![
            Money::new("eur".into(), 1, 1000, 0, 0),
            Money::new("usd".into(), 1, 3000, 0, 0),
        ];
        let per = per_visitor(&rev, 4);
        assert_eq!(per[0].amount, 250.0);
        assert_eq!(per[0].formatted, "2.50");
        assert_eq!(per[1].formatted, "7.50");
        assert!(per_visitor(&rev, 0).is_empty());
        let totals = vec![
            Money::new("eur".into(), 1, 1000, 0, 0),
            Money::new("usd".into(), 2, 6000, 0, 0),
        ];
        let s = shares(&rev, &totals);
        assert_eq!(s[0].share, Some(1.0));
        assert_eq!(s[1].share, Some(0.5));
        let zero = vec![Money::new("usd".into(), 1, 100, 100, 0)];
        assert_eq!(shares(&zero, &zero)[0].share, None);
        assert_eq!(rate(1, 4), Some(0.25));
        assert_eq!(rate(1, 0), None);
    }

    #[test]
    fn dimension_labels_match_the_domain() {
        assert!(dimension_sql(Group::Touch(Dimension::Medium)).contains("'(not set)'"));
        assert!(dimension_sql(Group::Touch(Dimension::Referrer)).contains("'(direct)'"));
        assert!(dimension_sql(Group::All).contains("'all'"));
        assert!(dimension_sql(Group::Country).contains("'(unknown)'"));
    }

    #[test]
    fn changes_against_the_previous_period() {
        let period = |visitors, customers, revenue: Vec<Money>| Period {
            from: String::new(),
            to: String::new(),
            visitors,
            customers,
            payments: customers,
            conversion_rate: rate(customers, visitors),
            revenue_per_visitor: per_visitor(&revenue, visitors),
            revenue,
        };
        let now = period(
            15,
            3,
            vec![
                Money::new("jpy".into(), 1, 500, 0, 0),
                Money::new("usd".into(), 2, 3000, 0, 0),
            ],
        );
        let before = period(10, 3, vec![Money::new("usd".into(), 3, 2000, 0, 0)]);
        let c = change(&now, &before);
        assert_eq!(c.visitors, Some(0.5));
        assert_eq!(c.customers, Some(0.0));
        let conversion = c.conversion_rate.unwrap();
        assert!((conversion - (0.2 / 0.3 - 1.0)).abs() < 1e-9);
        assert_eq!(
            c.revenue,
            vec![
                CurrencyChange {
                    currency: "jpy".into(),
                    change: None
                },
                CurrencyChange {
                    currency: "usd".into(),
                    change: Some(0.5)
                },
            ]
        );
        // usd per visitor: 200 now, 200 before.
        assert_eq!(c.revenue_per_visitor[1].change, Some(0.0));
        let empty = period(0, 0, vec![]);
        let c = change(&empty, &empty);
        assert_eq!((c.visitors, c.conversion_rate), (None, None));
    }
}
