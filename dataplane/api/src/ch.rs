//! ClickHouse: "what visitors did". One `events` table, written in batches over HTTP RowBinary
//! and read by the reports.
//!
//! Runs on ClickHouse 18.16 and on current releases alike: plain `DateTime('UTC')`, `String`,
//! `UInt*`, `Float64` and `Array(String)` columns; no `DateTime64`, `Map`, `LowCardinality`,
//! `Nullable`, `JSON*` functions or window functions.
//!
//! `events` is a `ReplacingMergeTree` keyed by the event id among others, and the consumer
//! inserts only the events of a batch it does not hold yet ([`EventStore::insert`]), so the
//! daily rollups fed by its inserts count each event once; raw queries stay exact either way by
//! counting `uniqExact(event_id)` or reading `LIMIT 1 BY event_id`.

use std::time::Duration;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zori_core::event::TrackedEvent;
use zori_service::clickhouse::Topology;

use crate::config::Settings;

/// Events looked up per query by [`EventStore::stored_ids`]: 1,000 ids and visitor ids make a
/// query of well under 100 KB (ClickHouse refuses queries beyond `max_query_size`, 256 KiB).
pub const LOOKUP_CHUNK: usize = 1000;

/// Longest any ClickHouse request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ChError {
    #[error("failed to create ClickHouse database {database}: {source}")]
    CreateDatabase {
        database: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse database {0} does not exist; create it (the operator does) or pass --create-schema")]
    MissingDatabase(String),
    #[error("failed to migrate ClickHouse database {database} (step {version} {name}): {source}")]
    Migrate {
        database: String,
        version: u32,
        name: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("failed to insert {rows} events into ClickHouse: {source}")]
    Insert {
        rows: usize,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("failed to query ClickHouse ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse did not answer within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("failed to migrate ClickHouse database {database} (step {version} {name}) on a cluster: {message}")]
    ClusterSchema {
        database: String,
        version: u32,
        name: &'static str,
        message: String,
    },
}

/// The ClickHouse side of one tenant.
#[derive(Clone)]
pub struct EventStore {
    client: Client,
    database: String,
    /// One server, or a cluster: the schema statements differ, the queries do not.
    topology: Topology,
}

fn base_client(settings: &Settings) -> Client {
    // No LZ4 over HTTP: ClickHouse 18.16 answers `compress=1` queries with an empty body.
    let mut client = Client::default()
        .with_compression(clickhouse::Compression::None)
        .with_url(settings.clickhouse_url.clone())
        .with_product_info("zori-api", env!("CARGO_PKG_VERSION"));
    if let Some(user) = &settings.clickhouse_user {
        client = client.with_user(user.clone());
    }
    if let Some(password) = &settings.clickhouse_password {
        client = client.with_password(password.expose().to_owned());
    }
    for (name, value) in settings.clickhouse_topology.insert_settings() {
        client = client.with_option(*name, *value);
    }
    client
}

async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, ChError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(ChError::Query { what, source }),
        Err(_) => Err(ChError::Timeout(REQUEST_TIMEOUT, what)),
    }
}

/// Schema steps, applied in order once each (then the rollups', [`crate::rollup::CH_MIGRATIONS`]). Every step is idempotent on its own as well, so two
/// replicas starting together are harmless.
const MIGRATIONS: &[(u32, &str, &str)] = &[(
    1,
    "events",
    "CREATE TABLE IF NOT EXISTS events (
        event_id String,
        name String,
        visitor_id String,
        session_id String,
        occurred_at DateTime('UTC'),
        occurred_ms UInt64,
        received_at DateTime('UTC'),
        page_url String,
        page_host String,
        page_path String,
        page_query String,
        page_title String,
        referrer_url String,
        referrer_host String,
        referrer_path String,
        utm_source String,
        utm_medium String,
        utm_campaign String,
        utm_term String,
        utm_content String,
        click_ids String,
        channel String,
        browser String,
        os String,
        device String,
        is_bot UInt8,
        country String,
        properties String,
        prop_keys Array(String),
        prop_values Array(String),
        click_tag String,
        click_selector String,
        click_text String,
        click_kind String,
        click_href String,
        click_target String,
        click_x Float64,
        click_y Float64,
        click_viewport_width Float64,
        click_viewport_height Float64,
        click_data String
    )
    ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (name, toDate(occurred_at), visitor_id, event_id)
    SETTINGS index_granularity = 8192",
)];

/// The migrations table, made before any step.
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS zori_migrations (
    version UInt32,
    name String,
    applied_at DateTime('UTC') DEFAULT now()
) ENGINE = MergeTree() ORDER BY version";

/// Every schema statement zori-api runs on an empty `database`, in order, as `topology` wants
/// them (for tests of the cluster DDL and for operators who make the schema by hand).
pub fn schema_statements(
    topology: &Topology,
    database: &str,
) -> Result<Vec<String>, zori_service::clickhouse::DdlError> {
    let mut all = topology.statements(database, MIGRATIONS_TABLE)?;
    for (_, _, sql) in MIGRATIONS {
        all.extend(topology.statements(database, sql)?);
    }
    Ok(all)
}

#[derive(Debug, Row, Deserialize)]
struct Version {
    version: u32,
}

#[derive(Debug, Row, Deserialize)]
struct StoredId {
    event_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct Exists {
    n: u64,
}

impl EventStore {
    /// Connects, creates the database when `create_schema`, and applies the schema steps.
    pub async fn open(settings: &Settings) -> Result<Self, ChError> {
        let database = settings.clickhouse_database.clone();
        let root = base_client(settings);
        if settings.create_schema {
            timed(
                "create database",
                root.query(&settings.clickhouse_topology.create_database(&database))
                    .execute(),
            )
            .await
            .map_err(|e| match e {
                ChError::Query { source, .. } => ChError::CreateDatabase {
                    database: database.clone(),
                    source,
                },
                other => other,
            })?;
        }
        let exists = timed(
            "look up database",
            root.query("SELECT count() AS n FROM system.databases WHERE name = ?")
                .bind(database.as_str())
                .fetch_one::<Exists>(),
        )
        .await?;
        if exists.n == 0 {
            return Err(ChError::MissingDatabase(database));
        }
        let store = Self {
            client: root.with_database(database.clone()),
            database,
            topology: settings.clickhouse_topology.clone(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), ChError> {
        let fail = |version: u32, name: &'static str| {
            let database = self.database.clone();
            move |e: ChError| match e {
                ChError::Query { source, .. } => ChError::Migrate {
                    database,
                    version,
                    name,
                    source,
                },
                other => other,
            }
        };
        self.run_schema(0, "zori_migrations", MIGRATIONS_TABLE)
            .await?;
        let applied: Vec<u32> = timed(
            "read migrations",
            self.client
                .query("SELECT DISTINCT version FROM zori_migrations")
                .fetch_all::<Version>(),
        )
        .await?
        .into_iter()
        .map(|v| v.version)
        .collect();
        let rollups: &[(u32, &str, &str)] = if self.has_rollups() {
            crate::rollup::CH_MIGRATIONS
        } else {
            &[]
        };
        for (version, name, sql) in MIGRATIONS.iter().chain(rollups) {
            if applied.contains(version) {
                continue;
            }
            self.run_schema(*version, name, sql).await?;
            timed(
                "record migration",
                self.client
                    .query("INSERT INTO zori_migrations (version, name) VALUES (?, ?)")
                    .bind(*version)
                    .bind(*name)
                    .execute(),
            )
            .await
            .map_err(fail(*version, name))?;
            tracing::info!(database = %self.database, version, name, "applied ClickHouse migration");
        }
        Ok(())
    }

    /// Runs one schema statement as the topology wants it (on a cluster: `ON CLUSTER`, a
    /// replicated per-node table and a `Distributed` one).
    async fn run_schema(&self, version: u32, name: &'static str, sql: &str) -> Result<(), ChError> {
        let statements =
            self.topology
                .statements(&self.database, sql)
                .map_err(|e| ChError::ClusterSchema {
                    database: self.database.clone(),
                    version,
                    name,
                    message: e.to_string(),
                })?;
        for statement in statements {
            timed("migrate", self.client.query(&statement).execute())
                .await
                .map_err(|e| match e {
                    ChError::Query { source, .. } => ChError::Migrate {
                        database: self.database.clone(),
                        version,
                        name,
                        source,
                    },
                    other => other,
                })?;
        }
        Ok(())
    }

    /// Whether the daily rollups ([`crate::rollup`]) exist: on one server. On a cluster the
    /// reports read the events themselves (the rollups' materialized views would need a
    /// replicated form on every node, which is not built yet).
    pub fn has_rollups(&self) -> bool {
        matches!(self.topology, Topology::Single)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// `SELECT 1`, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.client.query("SELECT 1").execute()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("clickhouse: {e}")),
            Err(_) => Err(format!("clickhouse: no answer within {timeout:?}")),
        }
    }

    /// Ids among `events` that `events` already holds (a redelivered message, or an event the
    /// tracker sent again after the stream's duplicate window). Reads by the table's key: the
    /// batch's names, time span and visitors narrow it to a few granules per visitor. One query
    /// per [`LOOKUP_CHUNK`] events, to stay well inside ClickHouse's `max_query_size`.
    pub async fn stored_ids(
        &self,
        events: &[&TrackedEvent],
    ) -> Result<std::collections::HashSet<String>, ChError> {
        let mut stored = std::collections::HashSet::new();
        for chunk in events.chunks(LOOKUP_CHUNK) {
            stored.extend(self.stored_ids_of(chunk).await?);
        }
        Ok(stored)
    }

    async fn stored_ids_of(&self, events: &[&TrackedEvent]) -> Result<Vec<String>, ChError> {
        use std::collections::BTreeSet;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let names: BTreeSet<&str> = events.iter().map(|e| e.name.as_str()).collect();
        let visitors: BTreeSet<&str> = events.iter().map(|e| e.visitor_id.as_str()).collect();
        let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let (min, max) = events.iter().fold((u32::MAX, 0), |(lo, hi), e| {
            let at = datetime_secs(e.occurred_at);
            (lo.min(at), hi.max(at))
        });
        let placeholders = |n: usize| vec!["?"; n].join(",");
        let mut query = self.client.query(&format!(
            "SELECT event_id FROM events
             WHERE name IN ({}) AND occurred_at >= toDateTime(?) AND occurred_at <= toDateTime(?)
               AND visitor_id IN ({}) AND event_id IN ({})",
            placeholders(names.len()),
            placeholders(visitors.len()),
            placeholders(ids.len())
        ));
        for name in &names {
            query = query.bind(*name);
        }
        query = query.bind(min).bind(max);
        for visitor in &visitors {
            query = query.bind(*visitor);
        }
        for id in &ids {
            query = query.bind(*id);
        }
        let rows: Vec<StoredId> = timed("look up stored events", query.fetch_all()).await?;
        Ok(rows.into_iter().map(|r| r.event_id).collect())
    }

    /// One insert for the whole batch, of the events not stored yet: the daily rollup
    /// ([`crate::rollup`]) counts each inserted row, so an event must be inserted once to be
    /// counted once. (`events` itself would collapse a duplicate on merge either way.)
    ///
    /// Returns how many of `events` were stored already (a sign of a redelivery or a resend).
    ///
    /// `look_up`: check first which events are stored already (a batch with a redelivered
    /// message); without it every event is inserted (see [`crate::reconcile`] for what
    /// corrects the counts of a resent one).
    pub async fn insert(&self, events: &[&TrackedEvent], look_up: bool) -> Result<usize, ChError> {
        if events.is_empty() {
            return Ok(0);
        }
        let stored = if look_up {
            self.stored_ids(events).await?
        } else {
            std::collections::HashSet::new()
        };
        let all = events.len();
        let events: Vec<&TrackedEvent> = events
            .iter()
            .copied()
            .filter(|e| !stored.contains(&e.id))
            .collect();
        let already = all - events.len();
        if events.is_empty() {
            return Ok(already);
        }
        let rows = events.len();
        let fail = |source| ChError::Insert { rows, source };
        let work = async {
            let mut insert = self
                .client
                .insert::<EventRow>("events")?
                .with_timeouts(Some(REQUEST_TIMEOUT), Some(REQUEST_TIMEOUT));
            for event in &events {
                insert.write(&EventRow::from_event(event)).await?;
            }
            insert.end().await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT * 2, work).await {
            Ok(result) => result.map(|()| already).map_err(fail),
            Err(_) => Err(ChError::Timeout(REQUEST_TIMEOUT * 2, "insert events")),
        }
    }

    /// Runs a read query and collects its rows, bounded by [`REQUEST_TIMEOUT`].
    pub async fn fetch_all<T>(
        &self,
        what: &'static str,
        query: clickhouse::query::Query,
    ) -> Result<Vec<T>, ChError>
    where
        T: Row + for<'b> Deserialize<'b>,
    {
        timed(what, query.fetch_all::<T>()).await
    }
}

/// Seconds since the epoch as ClickHouse `DateTime` stores them (1970 to 2106).
pub fn datetime_secs(at: OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp().max(0)).unwrap_or(u32::MAX)
}

/// Milliseconds since the epoch, for ordering within a second.
pub fn epoch_ms(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// One row of `events`. Absent values are empty strings or zero (no `Nullable`).
#[derive(Debug, Row, Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub name: String,
    pub visitor_id: String,
    pub session_id: String,
    pub occurred_at: u32,
    pub occurred_ms: u64,
    pub received_at: u32,
    pub page_url: String,
    pub page_host: String,
    pub page_path: String,
    pub page_query: String,
    pub page_title: String,
    pub referrer_url: String,
    pub referrer_host: String,
    pub referrer_path: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub click_ids: String,
    pub channel: String,
    pub browser: String,
    pub os: String,
    pub device: String,
    pub is_bot: u8,
    pub country: String,
    pub properties: String,
    /// Top-level property names, parallel to `prop_values`.
    pub prop_keys: Vec<String>,
    /// Each top-level property value as JSON text (`"pro"`, `42`, `true`, `{"a":1}`).
    pub prop_values: Vec<String>,
    pub click_tag: String,
    pub click_selector: String,
    pub click_text: String,
    pub click_kind: String,
    pub click_href: String,
    pub click_target: String,
    pub click_x: f64,
    pub click_y: f64,
    pub click_viewport_width: f64,
    pub click_viewport_height: f64,
    pub click_data: String,
}

fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

impl EventRow {
    pub fn from_event(e: &TrackedEvent) -> Self {
        let opt = |s: &Option<String>| s.clone().unwrap_or_default();
        let (prop_keys, prop_values) = e
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .unzip();
        let click = e.click.as_ref();
        let num = |f: Option<f64>| f.filter(|x| x.is_finite()).unwrap_or(0.0);
        EventRow {
            event_id: e.id.clone(),
            name: e.name.clone(),
            visitor_id: e.visitor_id.clone(),
            session_id: e.session_id.clone(),
            occurred_at: datetime_secs(e.occurred_at),
            occurred_ms: epoch_ms(e.occurred_at),
            received_at: datetime_secs(e.received_at),
            page_url: e.page.url.clone(),
            page_host: e.page.host.clone(),
            page_path: e.page.path.clone(),
            page_query: e.page.query.clone(),
            page_title: opt(&e.page.title),
            referrer_url: e
                .referrer
                .as_ref()
                .map(|r| r.url.clone())
                .unwrap_or_default(),
            referrer_host: e
                .referrer
                .as_ref()
                .map(|r| r.host.clone())
                .unwrap_or_default(),
            referrer_path: e
                .referrer
                .as_ref()
                .map(|r| r.path.clone())
                .unwrap_or_default(),
            utm_source: opt(&e.utm.source),
            utm_medium: opt(&e.utm.medium),
            utm_campaign: opt(&e.utm.campaign),
            utm_term: opt(&e.utm.term),
            utm_content: opt(&e.utm.content),
            click_ids: json_text(&e.click_ids),
            channel: e.channel.as_str().to_owned(),
            browser: e.client.browser.clone(),
            os: e.client.os.clone(),
            device: e.client.device.as_str().to_owned(),
            is_bot: u8::from(e.client.is_bot),
            country: opt(&e.country),
            properties: json_text(&e.properties),
            prop_keys,
            prop_values,
            click_tag: click.map(|c| c.tag.clone()).unwrap_or_default(),
            click_selector: click.map(|c| c.selector.clone()).unwrap_or_default(),
            click_text: click.map(|c| c.text.clone()).unwrap_or_default(),
            click_kind: click.map(|c| c.kind.clone()).unwrap_or_default(),
            click_href: click.and_then(|c| c.href.clone()).unwrap_or_default(),
            click_target: click.and_then(|c| c.target.clone()).unwrap_or_default(),
            click_x: num(click.and_then(|c| c.x)),
            click_y: num(click.and_then(|c| c.y)),
            click_viewport_width: num(click.and_then(|c| c.viewport_width)),
            click_viewport_height: num(click.and_then(|c| c.viewport_height)),
            click_data: click
                .map(|c| json_text(&c.data_attributes))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use zori_core::event::Click;

    use super::*;
    use crate::batch::tests::event;

    #[test]
    fn row_from_event() {
        let mut e = event("e1", "v1", "s1", datetime!(2025-03-01 10:00:00.123 UTC));
        e.properties
            .insert("plan".to_owned(), serde_json::Value::from("pro"));
        e.properties
            .insert("seats".to_owned(), serde_json::Value::from(3));
        e.click = Some(Click {
            tag: "a".to_owned(),
            x: Some(f64::NAN),
            y: Some(12.5),
            ..Click::default()
        });
        let row = EventRow::from_event(&e);
        assert_eq!(row.occurred_at, 1_740_823_200);
        assert_eq!(row.occurred_ms, 1_740_823_200_123);
        assert_eq!(row.prop_keys, vec!["plan", "seats"]);
        assert_eq!(row.prop_values, vec!["\"pro\"", "3"]);
        assert_eq!(row.properties, r#"{"plan":"pro","seats":3}"#);
        assert_eq!(row.click_tag, "a");
        assert_eq!(row.click_x, 0.0);
        assert_eq!(row.click_y, 12.5);
        assert_eq!(row.device, "desktop");
        assert_eq!(row.channel, "direct");
        assert_eq!(row.click_ids, "{}");
    }

    #[test]
    fn time_bounds() {
        assert_eq!(datetime_secs(datetime!(1960-01-01 0:00 UTC)), 0);
        assert_eq!(datetime_secs(datetime!(2200-01-01 0:00 UTC)), u32::MAX);
        assert_eq!(epoch_ms(datetime!(1960-01-01 0:00 UTC)), 0);
    }
}
