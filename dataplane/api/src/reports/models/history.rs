//! Reading the touch history for the model reports: the range's payments with their payers,
//! each payer's touches, and the journeys the data-driven model is fitted to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use zori_core::{
    attribution::{Attribution, PathCount},
    channel::Channel,
    touch::{Dimension, Touch, DIRECT, NOT_SET},
};

use super::PaymentToCredit;
use crate::reports::{
    filters::Filters,
    revenue::{fetch_all_local, RESOLVED_PAYMENTS},
    DayRange, ReportError,
};

/// Payments of the range with their payer, and each payer's touches.
pub(super) struct History {
    pub(super) payments: Vec<PaymentToCredit>,
    pub(super) touches: HashMap<String, Vec<Touch>>,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    paid_at: OffsetDateTime,
    amount: i64,
    amount_refunded: i64,
    amount_disputed: i64,
    currency: String,
    payer: String,
    /// The user of the first-touch visitor, whose visitors' touches all count.
    user_id: Option<i64>,
    /// The first-touch visitor (`None`: unattributed), whose touches count when it has no user.
    visitor_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TouchRow {
    visitor_id: String,
    session_id: String,
    occurred_at: OffsetDateTime,
    channel: String,
    source: String,
    medium: Option<String>,
    campaign: Option<String>,
    term: Option<String>,
    content: Option<String>,
    referrer_host: Option<String>,
    landing_page: String,
}

impl TouchRow {
    fn into_touch(self) -> Touch {
        Touch {
            channel: self.channel.parse().unwrap_or(Channel::Other),
            visitor_id: self.visitor_id,
            session_id: self.session_id,
            occurred_at: self.occurred_at,
            source: self.source,
            medium: self.medium,
            campaign: self.campaign,
            term: self.term,
            content: self.content,
            referrer_host: self.referrer_host,
            landing_page: self.landing_page,
            click_ids: BTreeMap::new(),
        }
    }
}

/// The touches of a payer are those of the visitor its revenue's first touch comes from
/// (`ft_visitor_id`, however the payment was resolved to it) and, when that visitor is
/// identified, of every visitor of the same user.
fn payments_sql(filters: &Filters) -> (String, Vec<String>) {
    let (conditions, binds) = filters.pg("v", 4);
    let sql = format!(
        "WITH {RESOLVED_PAYMENTS}
        SELECT r.paid_at, r.amount, r.amount_refunded, r.amount_disputed, r.currency, r.payer,
               ft_identity.user_id, r.ft_visitor_id AS visitor_id
        FROM resolved r
        LEFT JOIN visitors v ON v.visitor_id = r.ft_visitor_id
        LEFT JOIN identities ft_identity ON ft_identity.visitor_id = r.ft_visitor_id
        WHERE true{conditions}
        ORDER BY r.paid_at, r.payment_id"
    );
    (sql, binds)
}

pub(super) async fn load_history(
    pool: &PgPool,
    range: DayRange,
    livemode: Option<bool>,
    filters: &Filters,
    lookback: Duration,
) -> Result<History, ReportError> {
    let (sql, binds) = payments_sql(filters);
    let mut query = sqlx::query_as(&sql)
        .bind(range.start())
        .bind(range.end_exclusive())
        .bind(livemode);
    for b in &binds {
        query = query.bind(b);
    }
    let rows: Vec<PaymentRow> = fetch_all_local(pool, &[], query)
        .await
        .map_err(ReportError::pg("payments"))?;

    let users: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.user_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let linked: Vec<(i64, String)> = if users.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT user_id, visitor_id FROM identities WHERE user_id = ANY($1)")
            .bind(&users)
            .fetch_all(pool)
            .await
            .map_err(ReportError::pg("identities"))?
    };
    // visitor → payers whose touches it carries.
    let mut payers_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut user_visitors: HashMap<i64, Vec<String>> = HashMap::new();
    for (user, visitor) in linked {
        user_visitors.entry(user).or_default().push(visitor);
    }
    for r in &rows {
        let visitors = match (r.user_id, &r.visitor_id) {
            (Some(user), _) => user_visitors.get(&user).cloned().unwrap_or_default(),
            (None, Some(visitor)) => vec![visitor.clone()],
            (None, None) => Vec::new(),
        };
        for v in visitors {
            payers_of.entry(v).or_default().insert(r.payer.clone());
        }
    }
    let visitor_ids: Vec<String> = payers_of.keys().cloned().collect();
    let touch_rows: Vec<TouchRow> = if visitor_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT visitor_id, session_id, occurred_at, channel, source, medium, campaign, term,
                    content, referrer_host, landing_page
             FROM touches
             WHERE visitor_id = ANY($1) AND occurred_at >= $2 AND occurred_at < $3
             ORDER BY occurred_at, event_id",
        )
        .bind(&visitor_ids)
        .bind(range.start() - lookback)
        .bind(range.end_exclusive())
        .fetch_all(pool)
        .await
        .map_err(ReportError::pg("touches"))?
    };
    let mut touches: HashMap<String, Vec<Touch>> = HashMap::new();
    for row in touch_rows {
        let payers = payers_of.get(&row.visitor_id).cloned().unwrap_or_default();
        let touch = row.into_touch();
        for payer in payers {
            touches.entry(payer).or_default().push(touch.clone());
        }
    }
    let payments = rows
        .into_iter()
        .map(|r| PaymentToCredit {
            paid_at: r.paid_at,
            net: r
                .amount
                .saturating_sub(r.amount_refunded)
                .saturating_sub(r.amount_disputed),
            currency: r.currency,
            payer: r.payer,
        })
        .collect();
    Ok(History { payments, touches })
}

/// SQL for a touch's value of `dimension` on the `touches` row `t`, with the labels of
/// [`Touch::dimension`].
fn state_sql(dimension: Dimension) -> String {
    match dimension {
        Dimension::Channel => "t.channel".to_owned(),
        Dimension::Source => "t.source".to_owned(),
        Dimension::Medium => format!("COALESCE(t.medium, '{NOT_SET}')"),
        Dimension::Campaign => format!("COALESCE(t.campaign, '{NOT_SET}')"),
        Dimension::Referrer => format!("COALESCE(t.referrer_host, '{DIRECT}')"),
        Dimension::LandingPage => "t.landing_page".to_owned(),
    }
}

/// Paths of the people (user, else visitor) with a session starting in the range who paid
/// nothing in it: their touches in the lookback window before the end of the range.
///
/// Driven by `touches` alone (a person is active in the range when their latest touch of the
/// window falls in it), grouped on (user id, visitor id) with the visitor id in the "C"
/// collation, and payers excluded by a hashed anti-join: on 300,000 touches this is one scan,
/// one sort and one aggregation.
pub(super) async fn non_converting_paths(
    pool: &PgPool,
    range: DayRange,
    filters: &Filters,
    lookback: Duration,
    dimension: Dimension,
    payers: &[String],
) -> Result<Vec<PathCount>, ReportError> {
    let (conditions, binds) = filters.pg("v", 5);
    let visitors_join = if filters.is_empty() {
        ""
    } else {
        "JOIN visitors v ON v.visitor_id = t.visitor_id"
    };
    let state = state_sql(dimension);
    let sql = format!(
        "WITH paths AS (
             SELECT i.user_id,
                    (CASE WHEN i.user_id IS NULL THEN t.visitor_id END) COLLATE \"C\" AS visitor_id,
                    array_agg({state} ORDER BY t.occurred_at, t.event_id) AS path,
                    max(t.occurred_at) AS last_at
             FROM touches t
             {visitors_join}
             LEFT JOIN identities i ON i.visitor_id = t.visitor_id
             WHERE t.occurred_at >= $2 AND t.occurred_at < $3{conditions}
             GROUP BY 1, 2
         )
         SELECT path, count(*)::int8 FROM paths
         WHERE last_at >= $1 AND NOT EXISTS (
             SELECT 1 FROM unnest($4::text[]) AS payer(p)
             WHERE payer.p = COALESCE('u:' || paths.user_id::text, 'v:' || paths.visitor_id)
         )
         GROUP BY path"
    );
    let end = range.end_exclusive();
    let mut query = sqlx::query_as(&sql)
        .bind(range.start())
        .bind(end - lookback)
        .bind(end)
        .bind(payers);
    for b in &binds {
        query = query.bind(b);
    }
    let rows: Vec<(Vec<String>, i64)> = fetch_all_local(pool, &[], query)
        .await
        .map_err(ReportError::pg("journeys"))?;
    Ok(rows
        .into_iter()
        .map(|(path, n)| PathCount {
            path,
            conversions: 0,
            non_conversions: u64::try_from(n).unwrap_or(0),
        })
        .collect())
}

/// Converting paths: one per payment, its touches in the window.
pub(super) fn converting_paths(attribution: &Attribution, history: &History) -> Vec<PathCount> {
    let none = Vec::new();
    let mut counts: HashMap<Vec<String>, u64> = HashMap::new();
    for p in &history.payments {
        let touches = history.touches.get(&p.payer).unwrap_or(&none);
        let path = attribution.path(touches, p.paid_at);
        if !path.is_empty() {
            *counts.entry(path).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(path, conversions)| PathCount {
            path,
            conversions,
            non_conversions: 0,
        })
        .collect()
}
