//! The whole story of one visitor — and, once identified, of every visitor of the same user:
//! first touch, identity, touches, sessions, events and payments, each in time order.

use axum::{
    extract::{Path, State},
    Json,
};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use zori_core::{currency::format_minor, touch::Touch};

use super::{path_segment, ReportError, ReportsState};
use crate::ch::datetime_secs;

/// Most events listed in a journey.
pub const MAX_EVENTS: usize = 1000;
/// Most sessions listed in a journey.
pub const MAX_SESSIONS: usize = 1000;

#[derive(Debug, Serialize)]
pub struct VisitorView {
    pub visitor_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    pub first_touch: Touch,
    pub country: Option<String>,
    pub device: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LinkedVisitor {
    pub visitor_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub identified_at: OffsetDateTime,
}

#[derive(Debug, Serialize)]
pub struct IdentityView {
    pub user_id: i64,
    pub app_id: Option<String>,
    pub fullname: Option<String>,
    pub traits: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub first_identified_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_identified_at: OffsetDateTime,
    /// Every visitor id linked to the user, in order of identification.
    pub visitors: Vec<LinkedVisitor>,
    pub visitor_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub visitor_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: OffsetDateTime,
    pub duration_ms: u64,
    pub landing_page: String,
    pub page_views: u64,
    pub events: u64,
}

#[derive(Debug, Serialize)]
pub struct EventPage {
    pub url: String,
    pub path: String,
    pub title: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EventClick {
    pub tag: String,
    pub text: String,
    pub href: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: String,
    pub name: String,
    pub visitor_id: String,
    pub session_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub page: EventPage,
    pub referrer_host: Option<String>,
    pub channel: String,
    pub properties: Value,
    pub click: Option<EventClick>,
}

#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub payment_id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub paid_at: OffsetDateTime,
    pub amount: i64,
    pub amount_refunded: i64,
    pub net: i64,
    pub currency: String,
    pub formatted: String,
    pub description: Option<String>,
    pub livemode: Option<bool>,
    pub visitor_id: Option<String>,
    /// `visitor` (metadata visitor id is one of these visitors) or `email` (payer email matches
    /// the user).
    pub matched_by: &'static str,
    /// Why the payment's revenue went where it did, decided when it arrived: `visitor`,
    /// `subscription`, `customer` or `email`; `null` while it is resolved at report time.
    pub credit_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Journey {
    pub visitor_id: String,
    /// False while nothing at all is known about this visitor (never seen, or not yet
    /// processed); every other field is then empty.
    pub known: bool,
    /// The visitor's own row (its own first touch), when its events were processed.
    pub visitor: Option<VisitorView>,
    pub identity: Option<IdentityView>,
    /// The first touch revenue is credited to: the earliest among the user's visitors.
    pub first_touch: Option<Touch>,
    pub touches: Vec<Touch>,
    pub sessions: Vec<SessionView>,
    pub events: Vec<EventView>,
    /// True when more than [`MAX_EVENTS`] events exist (the first ones are listed).
    pub events_truncated: bool,
    pub payments: Vec<PaymentView>,
}

#[derive(sqlx::FromRow)]
struct VisitorRow {
    visitor_id: String,
    first_seen_at: OffsetDateTime,
    last_seen_at: OffsetDateTime,
    ft_session_id: String,
    ft_channel: String,
    ft_source: String,
    ft_medium: Option<String>,
    ft_campaign: Option<String>,
    ft_term: Option<String>,
    ft_content: Option<String>,
    ft_referrer_host: Option<String>,
    ft_landing_page: String,
    ft_click_ids: Value,
    country: Option<String>,
    device: Option<String>,
    browser: Option<String>,
    os: Option<String>,
}

fn click_ids(value: Value) -> std::collections::BTreeMap<String, String> {
    serde_json::from_value(value).unwrap_or_default()
}

fn channel(s: &str) -> zori_core::channel::Channel {
    s.parse().unwrap_or(zori_core::channel::Channel::Other)
}

impl VisitorRow {
    fn first_touch(&self) -> Touch {
        Touch {
            visitor_id: self.visitor_id.clone(),
            session_id: self.ft_session_id.clone(),
            occurred_at: self.first_seen_at,
            channel: channel(&self.ft_channel),
            source: self.ft_source.clone(),
            medium: self.ft_medium.clone(),
            campaign: self.ft_campaign.clone(),
            term: self.ft_term.clone(),
            content: self.ft_content.clone(),
            referrer_host: self.ft_referrer_host.clone(),
            landing_page: self.ft_landing_page.clone(),
            click_ids: click_ids(self.ft_click_ids.clone()),
        }
    }
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
    click_ids: Value,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: i64,
    app_id: Option<String>,
    email_hash: Option<String>,
    fullname: Option<String>,
    traits: Value,
    first_identified_at: OffsetDateTime,
    last_identified_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    payment_id: i64,
    paid_at: OffsetDateTime,
    amount: i64,
    amount_refunded: i64,
    currency: String,
    description: Option<String>,
    livemode: Option<bool>,
    visitor_id: Option<String>,
    by_visitor: bool,
    credit_reason: Option<String>,
}

#[derive(Debug, Row, Deserialize)]
struct SessionRow {
    session_id: String,
    visitor_id: String,
    started_ms: u64,
    ended_ms: u64,
    landing_page: String,
    page_views: u64,
    events: u64,
}

#[derive(Debug, Row, Deserialize)]
struct EventRow {
    event_id: String,
    name: String,
    visitor_id: String,
    session_id: String,
    occurred_ms: u64,
    page_url: String,
    page_path: String,
    page_title: String,
    referrer_host: String,
    channel: String,
    properties: String,
    click_tag: String,
    click_text: String,
    click_href: String,
}

fn from_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

const VISITOR_COLUMNS: &str = "visitor_id, first_seen_at, last_seen_at, ft_session_id, ft_channel,
    ft_source, ft_medium, ft_campaign, ft_term, ft_content, ft_referrer_host, ft_landing_page,
    ft_click_ids, country, device, browser, os";

pub async fn journey(
    State(state): State<ReportsState>,
    Path(visitor_id): Path<String>,
) -> Result<Json<Journey>, ReportError> {
    path_segment("visitor_id", &visitor_id, 256)?;
    let pool = &state.pool;

    let visitor: Option<VisitorRow> = sqlx::query_as(&format!(
        "SELECT {VISITOR_COLUMNS} FROM visitors WHERE visitor_id = $1"
    ))
    .bind(&visitor_id)
    .fetch_optional(pool)
    .await
    .map_err(ReportError::pg("visitor"))?;

    let user: Option<UserRow> = sqlx::query_as(
        "SELECT u.user_id, u.app_id, u.email_hash, u.fullname, u.traits, u.first_identified_at,
                u.last_identified_at
         FROM identities i JOIN users u ON u.user_id = i.user_id
         WHERE i.visitor_id = $1",
    )
    .bind(&visitor_id)
    .fetch_optional(pool)
    .await
    .map_err(ReportError::pg("identity"))?;

    let linked: Vec<(String, OffsetDateTime)> = match &user {
        Some(u) => sqlx::query_as(
            "SELECT visitor_id, identified_at FROM identities WHERE user_id = $1
             ORDER BY identified_at, visitor_id",
        )
        .bind(u.user_id)
        .fetch_all(pool)
        .await
        .map_err(ReportError::pg("identities"))?,
        None => Vec::new(),
    };
    let mut visitor_ids: Vec<String> = linked.iter().map(|(v, _)| v.clone()).collect();
    if !visitor_ids.contains(&visitor_id) {
        visitor_ids.insert(0, visitor_id.clone());
    }

    let first: Option<VisitorRow> = sqlx::query_as(&format!(
        "SELECT {VISITOR_COLUMNS} FROM visitors WHERE visitor_id = ANY($1)
         ORDER BY first_seen_at, ft_event_id LIMIT 1"
    ))
    .bind(&visitor_ids)
    .fetch_optional(pool)
    .await
    .map_err(ReportError::pg("first touch"))?;

    let bounds: Option<(OffsetDateTime, OffsetDateTime, i64)> = sqlx::query_as(
        "SELECT min(first_seen_at), max(last_seen_at), count(*)::int8 FROM visitors
         WHERE visitor_id = ANY($1) HAVING count(*) > 0",
    )
    .bind(&visitor_ids)
    .fetch_optional(pool)
    .await
    .map_err(ReportError::pg("visitor bounds"))?;

    let touches: Vec<TouchRow> = sqlx::query_as(
        "SELECT visitor_id, session_id, occurred_at, channel, source, medium, campaign, term,
                content, referrer_host, landing_page, click_ids
         FROM touches WHERE visitor_id = ANY($1)
         ORDER BY occurred_at, event_id",
    )
    .bind(&visitor_ids)
    .fetch_all(pool)
    .await
    .map_err(ReportError::pg("touches"))?;

    let email_hash = user.as_ref().and_then(|u| u.email_hash.clone());
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT payment_id, paid_at, amount, amount_refunded + amount_disputed AS amount_refunded,
                currency, description, livemode,
                visitor_id, COALESCE(visitor_id = ANY($1), false) AS by_visitor, credit_reason
         FROM payments
         WHERE amount > 0
           AND (visitor_id = ANY($1) OR ($2::text IS NOT NULL AND email_hash = $2::text))
         ORDER BY paid_at, payment_id",
    )
    .bind(&visitor_ids)
    .bind(&email_hash)
    .fetch_all(pool)
    .await
    .map_err(ReportError::pg("payments"))?;

    // ClickHouse: limited to the time the visitors were seen when every one of them is known
    // (prunes partitions); otherwise all time.
    let time_filter = match bounds {
        Some((from, to, n)) if n == visitor_ids.len() as i64 => format!(
            " AND occurred_at >= toDateTime({}) AND occurred_at <= toDateTime({})",
            datetime_secs(from - time::Duration::days(1)),
            datetime_secs(to + time::Duration::days(1)),
        ),
        _ => String::new(),
    };
    let sessions_query = state
        .events
        .client()
        .query(&format!(
            "SELECT session_id, visitor_id, min(occurred_ms) AS started_ms,
                    max(occurred_ms) AS ended_ms,
                    argMin(page_path, occurred_ms) AS landing_page,
                    uniqExactIf(event_id, name = 'page_view') AS page_views,
                    uniqExact(event_id) AS events
             FROM events
             WHERE has(?, visitor_id){time_filter}
             GROUP BY session_id, visitor_id
             ORDER BY started_ms, session_id
             LIMIT {MAX_SESSIONS}"
        ))
        .bind(&visitor_ids);
    let events_query = state
        .events
        .client()
        .query(&format!(
            "SELECT event_id, name, visitor_id, session_id, occurred_ms, page_url, page_path,
                    page_title, referrer_host, channel, properties, click_tag, click_text,
                    click_href
             FROM events
             WHERE has(?, visitor_id){time_filter}
             ORDER BY occurred_ms, event_id
             LIMIT 1 BY event_id
             LIMIT {}",
            MAX_EVENTS + 1
        ))
        .bind(&visitor_ids);
    let (sessions, events) = tokio::join!(
        state
            .events
            .fetch_all::<SessionRow>("journey sessions", sessions_query),
        state
            .events
            .fetch_all::<EventRow>("journey events", events_query),
    );
    let sessions = sessions?;
    let mut events = events?;

    let known = visitor.is_some()
        || user.is_some()
        || !payments.is_empty()
        || !events.is_empty()
        || !touches.is_empty();

    let events_truncated = events.len() > MAX_EVENTS;
    events.truncate(MAX_EVENTS);

    Ok(Json(Journey {
        known,
        visitor: visitor.map(|v| VisitorView {
            first_touch: v.first_touch(),
            visitor_id: v.visitor_id,
            first_seen_at: v.first_seen_at,
            last_seen_at: v.last_seen_at,
            country: v.country,
            device: v.device,
            browser: v.browser,
            os: v.os,
        }),
        identity: user.map(|u| IdentityView {
            user_id: u.user_id,
            app_id: u.app_id,
            fullname: u.fullname,
            traits: u.traits,
            first_identified_at: u.first_identified_at,
            last_identified_at: u.last_identified_at,
            visitor_ids: linked.iter().map(|(v, _)| v.clone()).collect(),
            visitors: linked
                .into_iter()
                .map(|(visitor_id, identified_at)| LinkedVisitor {
                    visitor_id,
                    identified_at,
                })
                .collect(),
        }),
        first_touch: first.map(|f| f.first_touch()),
        touches: touches
            .into_iter()
            .map(|t| Touch {
                visitor_id: t.visitor_id,
                session_id: t.session_id,
                occurred_at: t.occurred_at,
                channel: channel(&t.channel),
                source: t.source,
                medium: t.medium,
                campaign: t.campaign,
                term: t.term,
                content: t.content,
                referrer_host: t.referrer_host,
                landing_page: t.landing_page,
                click_ids: click_ids(t.click_ids),
            })
            .collect(),
        sessions: sessions
            .into_iter()
            .map(|s| SessionView {
                started_at: from_ms(s.started_ms),
                ended_at: from_ms(s.ended_ms),
                duration_ms: s.ended_ms.saturating_sub(s.started_ms),
                session_id: s.session_id,
                visitor_id: s.visitor_id,
                landing_page: s.landing_page,
                page_views: s.page_views,
                events: s.events,
            })
            .collect(),
        events: events
            .into_iter()
            .map(|e| EventView {
                occurred_at: from_ms(e.occurred_ms),
                properties: serde_json::from_str(&e.properties)
                    .unwrap_or(Value::Object(Default::default())),
                click: (!e.click_tag.is_empty()).then(|| EventClick {
                    tag: e.click_tag,
                    text: e.click_text,
                    href: non_empty(e.click_href),
                }),
                page: EventPage {
                    url: e.page_url,
                    path: e.page_path,
                    title: non_empty(e.page_title),
                },
                referrer_host: non_empty(e.referrer_host),
                id: e.event_id,
                name: e.name,
                visitor_id: e.visitor_id,
                session_id: e.session_id,
                channel: e.channel,
            })
            .collect(),
        events_truncated,
        payments: payments
            .into_iter()
            .map(|p| PaymentView {
                net: p.amount.saturating_sub(p.amount_refunded),
                formatted: format_minor(p.amount.saturating_sub(p.amount_refunded), &p.currency),
                matched_by: if p.by_visitor { "visitor" } else { "email" },
                credit_reason: p.credit_reason,
                payment_id: p.payment_id,
                paid_at: p.paid_at,
                amount: p.amount,
                amount_refunded: p.amount_refunded,
                currency: p.currency,
                description: p.description,
                livemode: p.livemode,
                visitor_id: p.visitor_id,
            })
            .collect(),
        visitor_id,
    }))
}
