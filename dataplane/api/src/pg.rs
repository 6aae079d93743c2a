//! PostgreSQL: "who visitors are". The tenant's schema holds visitors, touches, visitor days,
//! users and identities (this module, written by the consumer), and payments (the Stripe module).
//!
//! Every connection has `search_path` set to the tenant schema, so migrations and queries use
//! unqualified names and `_sqlx_migrations` lands in the schema too.

use std::{str::FromStr, time::Duration};

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres, Transaction,
};
use time::OffsetDateTime;

use crate::{
    batch::{pg_json, pg_opt, pg_text, Plan},
    config::Settings,
    identity::{self, ExistingIdentity, ExistingUser, UserRef, UserState},
};

/// The schema of this binary, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("failed to connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("failed to create PostgreSQL schema {schema}: {source}")]
    CreateSchema {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("PostgreSQL schema {0} does not exist; create it (the operator does) or pass --create-schema")]
    MissingSchema(String),
    #[error("failed to migrate PostgreSQL schema {schema}: {source}")]
    Migrate {
        schema: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("failed to write {what} to PostgreSQL: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to read {what} from PostgreSQL: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn write(what: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
    move |source| PgError::Write { what, source }
}

fn read(what: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
    move |source| PgError::Read { what, source }
}

/// Connects with `search_path` = the tenant schema, creates the schema when asked, migrates.
pub async fn open(settings: &Settings) -> Result<PgPool, PgError> {
    let schema = settings.postgres_schema.clone();
    let options = PgConnectOptions::from_str(settings.postgres_url.expose())
        .map_err(PgError::Url)?
        .application_name("zori-api")
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(PgError::Connect)?;
    if settings.create_schema {
        // The name is validated (^[a-z_][a-z0-9_]{0,62}$) and quoted.
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&pool)
            .await
            .map_err(|source| PgError::CreateSchema {
                schema: schema.clone(),
                source,
            })?;
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&schema)
            .fetch_one(&pool)
            .await
            .map_err(PgError::Connect)?;
    if !exists {
        return Err(PgError::MissingSchema(schema));
    }
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| PgError::Migrate {
            schema: schema.clone(),
            source,
        })?;
    Ok(pool)
}

/// `SELECT 1`, bounded by `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("postgres: {e}")),
        Err(_) => Err(format!("postgres: no answer within {timeout:?}")),
    }
}

/// Rows written per table, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub visitors: u64,
    pub touches: u64,
    pub visitor_days: u64,
    pub users: u64,
    pub identities: u64,
    pub unverified_identifies: u64,
}

/// Writes the Postgres side of a batch in one transaction: set-based upserts, one statement per
/// table, whatever the batch size.
pub async fn write_batch(pool: &PgPool, plan: &Plan<'_>) -> Result<Written, PgError> {
    let mut tx = pool.begin().await.map_err(write("begin transaction"))?;
    let visitors = upsert_visitors(&mut tx, plan).await?;
    let touches = upsert_touches(&mut tx, plan).await?;
    let visitor_days = insert_visitor_days(&mut tx, plan).await?;
    let (users, identities, unverified_identifies) = apply_identifies(&mut tx, plan).await?;
    tx.commit().await.map_err(write("commit"))?;
    let written = Written {
        visitors,
        touches,
        visitor_days,
        users,
        identities,
        unverified_identifies,
    };
    Ok(written)
}

/// First-touch columns of `visitors`, all replaced together when an earlier event shows up.
const FT_COLUMNS: &[&str] = &[
    "ft_event_id",
    "ft_session_id",
    "ft_channel",
    "ft_source",
    "ft_medium",
    "ft_campaign",
    "ft_term",
    "ft_content",
    "ft_referrer_host",
    "ft_landing_page",
    "ft_click_ids",
    "ft_arrival",
    "ft_at",
];

/// Latest-state columns of `visitors`, taken from the latest event.
const LATEST_COLUMNS: &[&str] = &["country", "device", "browser", "os"];

fn upsert_visitors_sql() -> String {
    // A better first touch: an arrival event before any other, then the earliest.
    let earlier = "(NOT EXCLUDED.ft_arrival, EXCLUDED.ft_at, EXCLUDED.ft_event_id) \
         < (NOT v.ft_arrival, COALESCE(v.ft_at, v.first_seen_at), v.ft_event_id)";
    let later = "EXCLUDED.last_seen_at >= v.last_seen_at";
    let mut sets = vec![
        "first_seen_at = LEAST(v.first_seen_at, EXCLUDED.first_seen_at)".to_owned(),
        "last_seen_at = GREATEST(v.last_seen_at, EXCLUDED.last_seen_at)".to_owned(),
    ];
    for c in FT_COLUMNS {
        sets.push(format!(
            "{c} = CASE WHEN {earlier} THEN EXCLUDED.{c} ELSE v.{c} END"
        ));
    }
    for c in LATEST_COLUMNS {
        sets.push(format!(
            "{c} = CASE WHEN {later} THEN COALESCE(EXCLUDED.{c}, v.{c}) ELSE COALESCE(v.{c}, EXCLUDED.{c}) END"
        ));
    }
    sets.push("updated_at = now()".to_owned());
    format!(
        "INSERT INTO visitors AS v (
            visitor_id, first_seen_at, last_seen_at,
            ft_event_id, ft_session_id, ft_channel, ft_source, ft_medium, ft_campaign, ft_term,
            ft_content, ft_referrer_host, ft_landing_page, ft_click_ids,
            country, device, browser, os, ft_arrival, ft_at)
         SELECT t.visitor_id, t.first_seen_at, t.last_seen_at,
            t.ft_event_id, t.ft_session_id, t.ft_channel, t.ft_source, t.ft_medium, t.ft_campaign,
            t.ft_term, t.ft_content, t.ft_referrer_host, t.ft_landing_page, t.ft_click_ids::jsonb,
            t.country, t.device, t.browser, t.os, t.ft_arrival, t.ft_at
         FROM UNNEST(
            $1::text[], $2::timestamptz[], $3::timestamptz[],
            $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
            $11::text[], $12::text[], $13::text[], $14::text[],
            $15::text[], $16::text[], $17::text[], $18::text[], $19::boolean[], $20::timestamptz[]
         ) AS t(visitor_id, first_seen_at, last_seen_at,
            ft_event_id, ft_session_id, ft_channel, ft_source, ft_medium, ft_campaign, ft_term,
            ft_content, ft_referrer_host, ft_landing_page, ft_click_ids,
            country, device, browser, os, ft_arrival, ft_at)
         ON CONFLICT (visitor_id) DO UPDATE SET {}
         WHERE {earlier} OR EXCLUDED.last_seen_at > v.last_seen_at
            OR EXCLUDED.first_seen_at < v.first_seen_at",
        sets.join(",\n            ")
    )
}

async fn upsert_visitors(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan<'_>,
) -> Result<u64, PgError> {
    if plan.visitors.is_empty() {
        return Ok(0);
    }
    let n = plan.visitors.len();
    let mut visitor_id = Vec::with_capacity(n);
    let mut first_seen = Vec::with_capacity(n);
    let mut last_seen = Vec::with_capacity(n);
    let mut ft_event_id = Vec::with_capacity(n);
    let mut ft_session_id = Vec::with_capacity(n);
    let mut ft_channel = Vec::with_capacity(n);
    let mut ft_source = Vec::with_capacity(n);
    let mut ft_medium = Vec::with_capacity(n);
    let mut ft_campaign = Vec::with_capacity(n);
    let mut ft_term = Vec::with_capacity(n);
    let mut ft_content = Vec::with_capacity(n);
    let mut ft_referrer = Vec::with_capacity(n);
    let mut ft_landing = Vec::with_capacity(n);
    let mut ft_click_ids = Vec::with_capacity(n);
    let mut country = Vec::with_capacity(n);
    let mut device = Vec::with_capacity(n);
    let mut browser = Vec::with_capacity(n);
    let mut os = Vec::with_capacity(n);
    let mut ft_arrival = Vec::with_capacity(n);
    let mut ft_at = Vec::with_capacity(n);
    for v in &plan.visitors {
        let t = &v.first_touch;
        visitor_id.push(pg_text(&v.visitor_id));
        first_seen.push(v.first_seen_at);
        last_seen.push(v.last_seen_at);
        ft_event_id.push(pg_text(&v.ft_event_id));
        ft_session_id.push(pg_text(&t.session_id));
        ft_channel.push(t.channel.as_str().to_owned());
        ft_source.push(pg_text(&t.source));
        ft_medium.push(pg_opt(t.medium.as_deref()));
        ft_campaign.push(pg_opt(t.campaign.as_deref()));
        ft_term.push(pg_opt(t.term.as_deref()));
        ft_content.push(pg_opt(t.content.as_deref()));
        ft_referrer.push(pg_opt(t.referrer_host.as_deref()));
        ft_landing.push(pg_text(&t.landing_page));
        ft_click_ids.push(pg_json(&serde_json::json!(t.click_ids)));
        country.push(pg_opt(v.country.as_deref()));
        device.push(Some(pg_text(&v.device)).filter(|s| !s.is_empty()));
        browser.push(Some(pg_text(&v.browser)).filter(|s| !s.is_empty()));
        os.push(Some(pg_text(&v.os)).filter(|s| !s.is_empty()));
        ft_arrival.push(v.ft_arrival);
        ft_at.push(t.occurred_at);
    }
    let result = sqlx::query(&upsert_visitors_sql())
        .bind(visitor_id)
        .bind(first_seen)
        .bind(last_seen)
        .bind(ft_event_id)
        .bind(ft_session_id)
        .bind(ft_channel)
        .bind(ft_source)
        .bind(ft_medium)
        .bind(ft_campaign)
        .bind(ft_term)
        .bind(ft_content)
        .bind(ft_referrer)
        .bind(ft_landing)
        .bind(ft_click_ids)
        .bind(country)
        .bind(device)
        .bind(browser)
        .bind(os)
        .bind(ft_arrival)
        .bind(ft_at)
        .execute(&mut **tx)
        .await
        .map_err(write("visitors"))?;
    Ok(result.rows_affected())
}

const UPSERT_TOUCHES: &str = "
    INSERT INTO touches AS t (
        visitor_id, session_id, occurred_at, event_id, channel, source, medium, campaign, term,
        content, referrer_host, landing_page, click_ids, arrival)
    SELECT u.visitor_id, u.session_id, u.occurred_at, u.event_id, u.channel, u.source, u.medium,
        u.campaign, u.term, u.content, u.referrer_host, u.landing_page, u.click_ids::jsonb,
        u.arrival
    FROM UNNEST(
        $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::boolean[]
    ) AS u(visitor_id, session_id, occurred_at, event_id, channel, source, medium, campaign, term,
        content, referrer_host, landing_page, click_ids, arrival)
    ON CONFLICT (visitor_id, session_id) DO UPDATE SET
        occurred_at = EXCLUDED.occurred_at,
        event_id = EXCLUDED.event_id,
        channel = EXCLUDED.channel,
        source = EXCLUDED.source,
        medium = EXCLUDED.medium,
        campaign = EXCLUDED.campaign,
        term = EXCLUDED.term,
        content = EXCLUDED.content,
        referrer_host = EXCLUDED.referrer_host,
        landing_page = EXCLUDED.landing_page,
        click_ids = EXCLUDED.click_ids,
        arrival = EXCLUDED.arrival
    WHERE (NOT EXCLUDED.arrival, EXCLUDED.occurred_at, EXCLUDED.event_id)
        < (NOT t.arrival, t.occurred_at, t.event_id)";

async fn upsert_touches(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan<'_>,
) -> Result<u64, PgError> {
    if plan.touches.is_empty() {
        return Ok(0);
    }
    let n = plan.touches.len();
    let mut visitor_id = Vec::with_capacity(n);
    let mut session_id = Vec::with_capacity(n);
    let mut occurred_at = Vec::with_capacity(n);
    let mut event_id = Vec::with_capacity(n);
    let mut channel = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut medium = Vec::with_capacity(n);
    let mut campaign = Vec::with_capacity(n);
    let mut term = Vec::with_capacity(n);
    let mut content = Vec::with_capacity(n);
    let mut referrer = Vec::with_capacity(n);
    let mut landing = Vec::with_capacity(n);
    let mut click_ids = Vec::with_capacity(n);
    let mut arrival = Vec::with_capacity(n);
    for row in &plan.touches {
        let t = &row.touch;
        visitor_id.push(pg_text(&t.visitor_id));
        session_id.push(pg_text(&t.session_id));
        occurred_at.push(t.occurred_at);
        event_id.push(pg_text(&row.event_id));
        channel.push(t.channel.as_str().to_owned());
        source.push(pg_text(&t.source));
        medium.push(pg_opt(t.medium.as_deref()));
        campaign.push(pg_opt(t.campaign.as_deref()));
        term.push(pg_opt(t.term.as_deref()));
        content.push(pg_opt(t.content.as_deref()));
        referrer.push(pg_opt(t.referrer_host.as_deref()));
        landing.push(pg_text(&t.landing_page));
        click_ids.push(pg_json(&serde_json::json!(t.click_ids)));
        arrival.push(row.arrival);
    }
    let result = sqlx::query(UPSERT_TOUCHES)
        .bind(visitor_id)
        .bind(session_id)
        .bind(occurred_at)
        .bind(event_id)
        .bind(channel)
        .bind(source)
        .bind(medium)
        .bind(campaign)
        .bind(term)
        .bind(content)
        .bind(referrer)
        .bind(landing)
        .bind(click_ids)
        .bind(arrival)
        .execute(&mut **tx)
        .await
        .map_err(write("touches"))?;
    Ok(result.rows_affected())
}

async fn insert_visitor_days(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan<'_>,
) -> Result<u64, PgError> {
    if plan.visitor_days.is_empty() {
        return Ok(0);
    }
    let (days, visitors): (Vec<time::Date>, Vec<String>) = plan
        .visitor_days
        .iter()
        .map(|(d, v)| (*d, pg_text(v)))
        .unzip();
    let result = sqlx::query(
        "INSERT INTO visitor_days (day, visitor_id)
         SELECT * FROM UNNEST($1::date[], $2::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(days)
    .bind(visitors)
    .execute(&mut **tx)
    .await
    .map_err(write("visitor days"))?;
    Ok(result.rows_affected())
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: i64,
    app_id: Option<String>,
    email_hash: Option<String>,
    fullname: Option<String>,
    traits: sqlx::types::JsonValue,
    first_identified_at: OffsetDateTime,
    last_identified_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    visitor_id: String,
    user_id: i64,
    identified_at: OffsetDateTime,
}

/// Key of the transaction-level advisory lock serialising identity writes of one schema (the
/// first half of the two-key form, so it never collides with single-key locks).
const IDENTIFY_LOCK_CLASS: i32 = 0x5a6f_7269; // "Zori"

/// Resolves and writes the batch's identify records: users found or created, missing fields
/// filled, visitors linked; records whose identity claim could not be verified are only kept
/// in `unverified_identifies`. Returns (users, identities, unverified identifies) written.
async fn apply_identifies(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan<'_>,
) -> Result<(u64, u64, u64), PgError> {
    if plan.identifies.is_empty() {
        return Ok((0, 0, 0));
    }
    // Identity writers of this schema take turns: resolution reads, then writes, users.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(IDENTIFY_LOCK_CLASS)
        .execute(&mut **tx)
        .await
        .map_err(write("identify lock"))?;

    let clean = |s: &Option<String>| {
        s.as_deref()
            .map(pg_text)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    // NUL-free copies: what the database will hold is what resolution must compare with.
    let records: Vec<zori_core::event::IdentifyRecord> = plan
        .identifies
        .iter()
        .map(|r| {
            let mut r = (*r).clone();
            r.visitor_id = pg_text(&r.visitor_id);
            r.app_id = clean(&r.app_id);
            r.email_hash = clean(&r.email_hash);
            r.fullname = clean(&r.fullname);
            r.traits = match serde_json::from_str(&pg_json(&serde_json::Value::Object(r.traits))) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
            r
        })
        .collect();
    let (records, unverified): (Vec<_>, Vec<_>) =
        records.into_iter().partition(|r| r.proof.links());
    let unverified_written = keep_unverified(tx, &unverified).await?;
    if records.is_empty() {
        return Ok((0, 0, unverified_written));
    }
    let app_ids: Vec<String> = records.iter().filter_map(|r| r.app_id.clone()).collect();
    let emails: Vec<String> = records
        .iter()
        .filter_map(|r| r.email_hash.clone())
        .collect();
    let visitors: Vec<String> = records.iter().map(|r| r.visitor_id.clone()).collect();

    let identities: Vec<IdentityRow> = sqlx::query_as(
        "SELECT visitor_id, user_id, identified_at FROM identities WHERE visitor_id = ANY($1)",
    )
    .bind(&visitors)
    .fetch_all(&mut **tx)
    .await
    .map_err(read("identities"))?;
    let linked_users: Vec<i64> = identities.iter().map(|i| i.user_id).collect();
    let users: Vec<UserRow> = sqlx::query_as(
        "SELECT user_id, app_id, email_hash, fullname, traits, first_identified_at, last_identified_at
         FROM users
         WHERE app_id = ANY($1) OR email_hash = ANY($2) OR user_id = ANY($3)
         FOR UPDATE",
    )
    .bind(&app_ids)
    .bind(&emails)
    .bind(&linked_users)
    .fetch_all(&mut **tx)
    .await
    .map_err(read("users"))?;

    let existing_users = users
        .into_iter()
        .map(|u| ExistingUser {
            user_id: u.user_id,
            state: UserState {
                app_id: u.app_id,
                email_hash: u.email_hash,
                fullname: u.fullname,
                traits: match u.traits {
                    serde_json::Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                },
                first_identified_at: u.first_identified_at,
                last_identified_at: u.last_identified_at,
            },
        })
        .collect();
    let existing_identities = identities
        .into_iter()
        .map(|i| ExistingIdentity {
            visitor_id: i.visitor_id,
            user_id: i.user_id,
            identified_at: i.identified_at,
        })
        .collect();
    let refs: Vec<&zori_core::event::IdentifyRecord> = records.iter().collect();
    let resolution = identity::resolve(existing_users, existing_identities, &refs);

    // New users get their ids up front, so links can name them without relying on the order
    // of RETURNING rows.
    let new_ids: Vec<i64> = if resolution.new_users.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('users', 'user_id')) FROM generate_series(1, $1)",
        )
        .bind(i32::try_from(resolution.new_users.len()).unwrap_or(i32::MAX))
        .fetch_all(&mut **tx)
        .await
        .map_err(write("user ids"))?
    };
    let mut users_written = 0;
    if !resolution.new_users.is_empty() {
        users_written += write_users(tx, &new_ids, &resolution.new_users, true).await?;
    }
    if !resolution.updated_users.is_empty() {
        let (ids, states): (Vec<i64>, Vec<UserState>) =
            resolution.updated_users.iter().cloned().unzip();
        users_written += write_users(tx, &ids, &states, false).await?;
    }

    let mut identities_written = 0;
    if !resolution.links.is_empty() {
        let mut visitor_ids = Vec::new();
        let mut user_ids = Vec::new();
        let mut at = Vec::new();
        for link in &resolution.links {
            let user_id = match link.user {
                UserRef::Existing(id) => Some(id),
                UserRef::New(n) => new_ids.get(n).copied(),
            };
            if let Some(user_id) = user_id {
                visitor_ids.push(link.visitor_id.clone());
                user_ids.push(user_id);
                at.push(link.identified_at);
            }
        }
        let result = sqlx::query(
            "INSERT INTO identities AS i (visitor_id, user_id, identified_at)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[])
             ON CONFLICT (visitor_id) DO UPDATE SET
                user_id = EXCLUDED.user_id,
                identified_at = EXCLUDED.identified_at,
                updated_at = now()
             WHERE EXCLUDED.identified_at > i.identified_at",
        )
        .bind(visitor_ids)
        .bind(user_ids)
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(write("identities"))?;
        identities_written = result.rows_affected();
    }
    Ok((users_written, identities_written, unverified_written))
}

/// Stores identify records verification could not prove, apart from users and identities
/// (idempotent: a redelivered record is stored once).
async fn keep_unverified(
    tx: &mut Transaction<'_, Postgres>,
    records: &[zori_core::event::IdentifyRecord],
) -> Result<u64, PgError> {
    if records.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = records.iter().map(|r| pg_text(&r.id)).collect();
    let visitors: Vec<String> = records.iter().map(|r| r.visitor_id.clone()).collect();
    let app_ids: Vec<Option<String>> = records.iter().map(|r| r.app_id.clone()).collect();
    let emails: Vec<Option<String>> = records.iter().map(|r| r.email_hash.clone()).collect();
    let names: Vec<Option<String>> = records.iter().map(|r| r.fullname.clone()).collect();
    let traits: Vec<String> = records
        .iter()
        .map(|r| pg_json(&serde_json::Value::Object(r.traits.clone())))
        .collect();
    let occurred: Vec<OffsetDateTime> = records.iter().map(|r| r.occurred_at).collect();
    let received: Vec<OffsetDateTime> = records.iter().map(|r| r.received_at).collect();
    let result = sqlx::query(
        "INSERT INTO unverified_identifies
            (event_id, visitor_id, app_id, email_hash, fullname, traits, occurred_at, received_at)
         SELECT t.id, t.visitor_id, t.app_id, t.email_hash, t.fullname, t.traits::jsonb, t.occurred_at, t.received_at
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[])
              AS t(id, visitor_id, app_id, email_hash, fullname, traits, occurred_at, received_at)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(ids)
    .bind(visitors)
    .bind(app_ids)
    .bind(emails)
    .bind(names)
    .bind(traits)
    .bind(occurred)
    .bind(received)
    .execute(&mut **tx)
    .await
    .map_err(write("unverified identifies"))?;
    Ok(result.rows_affected())
}

async fn write_users(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
    states: &[UserState],
    insert: bool,
) -> Result<u64, PgError> {
    let app_ids: Vec<Option<String>> = states.iter().map(|s| s.app_id.clone()).collect();
    let emails: Vec<Option<String>> = states.iter().map(|s| s.email_hash.clone()).collect();
    let names: Vec<Option<String>> = states.iter().map(|s| s.fullname.clone()).collect();
    let traits: Vec<String> = states
        .iter()
        .map(|s| pg_json(&serde_json::Value::Object(s.traits.clone())))
        .collect();
    let first: Vec<OffsetDateTime> = states.iter().map(|s| s.first_identified_at).collect();
    let last: Vec<OffsetDateTime> = states.iter().map(|s| s.last_identified_at).collect();
    let sql = if insert {
        "INSERT INTO users (user_id, app_id, email_hash, fullname, traits, first_identified_at, last_identified_at)
         SELECT t.user_id, t.app_id, t.email_hash, t.fullname, t.traits::jsonb, t.first_at, t.last_at
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[])
              AS t(user_id, app_id, email_hash, fullname, traits, first_at, last_at)"
    } else {
        "UPDATE users u SET
            app_id = t.app_id,
            email_hash = t.email_hash,
            fullname = t.fullname,
            traits = t.traits::jsonb,
            first_identified_at = t.first_at,
            last_identified_at = t.last_at,
            updated_at = now()
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[])
              AS t(user_id, app_id, email_hash, fullname, traits, first_at, last_at)
         WHERE u.user_id = t.user_id"
    };
    let result = sqlx::query(sql)
        .bind(ids)
        .bind(app_ids)
        .bind(emails)
        .bind(names)
        .bind(traits)
        .bind(first)
        .bind(last)
        .execute(&mut **tx)
        .await
        .map_err(write("users"))?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_upsert_replaces_first_touch_columns_together() {
        let sql = upsert_visitors_sql();
        for c in FT_COLUMNS {
            assert!(
                sql.contains(&format!("{c} = CASE WHEN (NOT EXCLUDED.ft_arrival")),
                "{c}"
            );
        }
        for c in LATEST_COLUMNS {
            assert!(
                sql.contains(&format!("{c} = CASE WHEN EXCLUDED.last_seen_at")),
                "{c}"
            );
        }
    }
}
