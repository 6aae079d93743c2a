//! Settings of `zori-api`: flags with `ZORI_…` environment fallbacks, checked all at once at
//! start. Every flag is read as text by clap and parsed here, so that any bad value ends the
//! binary with one line naming the flag and its variable.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::Parser;
pub use zori_core::event::is_valid_tenant_id;
use zori_service::jetstream::{parse_duration, StreamLimits, StreamRetention};
pub use zori_service::secret::Secret;

/// Smallest `--max-deliver`: a message failing on its own with healthy backends goes to the dead
/// letter subject on its third delivery, so it must be allowed at least that many.
pub const MIN_MAX_DELIVER: i64 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing {flag} ({env}): {reason}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        reason: String,
    },
    #[error("invalid {flag} ({env}): {reason}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Command line of `zori-api`. Turn it into [`Settings`] with [`Config::validate`].
#[derive(Clone, Parser)]
#[command(
    name = "zori-api",
    version,
    about = "Zori API: consumes a tenant's event stream into ClickHouse and PostgreSQL, receives \
             Stripe webhooks and serves the attribution reports.",
    long_about = None,
    args_override_self = true,
    after_help = "Every flag can also be given by the environment variable shown next to it. \
                  Secrets (--api-token, --postgres-url, --clickhouse-password, \
                  --stripe-webhook-secrets, --email-salt) are best passed that way."
)]
pub struct Config {
    /// Tenant id: 1 to 48 characters of a-z, 0-9 and _. Names the stream (ZORI_<ID>), its
    /// subjects (zori.<id>.>) and the default schema and database (zori_<id>). Required.
    #[arg(long, env = "ZORI_TENANT_ID", value_name = "ID")]
    pub tenant_id: Option<String>,

    /// Address the HTTP server (reports, webhooks, health, metrics) listens on.
    #[arg(
        long,
        env = "ZORI_API_LISTEN",
        default_value = "0.0.0.0:1323",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Bearer token of the reports API (at least 16 characters). Required.
    #[arg(
        long,
        env = "ZORI_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,

    /// NATS server URL(s), comma separated.
    #[arg(
        long,
        env = "ZORI_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_name = "URL"
    )]
    pub nats_url: String,

    /// NATS credentials (`.creds` contents, or a path to the file) of the tenant's own NATS
    /// user, where NATS runs with per-tenant accounts.
    #[arg(
        long,
        env = "ZORI_NATS_CREDS",
        hide_env_values = true,
        value_name = "CREDS"
    )]
    pub nats_creds: Option<String>,

    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/db. Required.
    #[arg(
        long,
        env = "ZORI_POSTGRES_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub postgres_url: Option<String>,

    /// PostgreSQL schema holding this tenant's tables [default: zori_<tenant-id>].
    #[arg(long, env = "ZORI_POSTGRES_SCHEMA", value_name = "SCHEMA")]
    pub postgres_schema: Option<String>,

    /// Create the PostgreSQL schema and the ClickHouse database when missing (otherwise they
    /// must exist, as the operator provisions them). Tables are always created and migrated.
    #[arg(
        long,
        env = "ZORI_CREATE_SCHEMA",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub create_schema: String,

    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "ZORI_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        value_name = "URL"
    )]
    pub clickhouse_url: String,

    /// ClickHouse database holding this tenant's events [default: zori_<tenant-id>].
    #[arg(long, env = "ZORI_CLICKHOUSE_DATABASE", value_name = "DATABASE")]
    pub clickhouse_database: Option<String>,

    /// ClickHouse user (the server's default user when absent).
    #[arg(long, env = "ZORI_CLICKHOUSE_USER", value_name = "USER")]
    pub clickhouse_user: Option<String>,

    /// ClickHouse password.
    #[arg(
        long,
        env = "ZORI_CLICKHOUSE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub clickhouse_password: Option<String>,

    /// ClickHouse cluster (a name in the servers' `remote_servers`) the tenant database lives
    /// on: the schema is made `ON CLUSTER`, with replicated per-node tables behind
    /// `Distributed` ones. Empty: one server.
    #[arg(long, env = "ZORI_CLICKHOUSE_CLUSTER", value_name = "CLUSTER")]
    pub clickhouse_cluster: Option<String>,

    /// Stripe webhook signing secrets (whsec_…), comma separated; several during a rotation.
    /// Without any, the webhook routes answer 503.
    #[arg(
        long,
        env = "ZORI_STRIPE_WEBHOOK_SECRETS",
        hide_env_values = true,
        value_name = "SECRETS"
    )]
    pub stripe_webhook_secrets: Option<String>,

    /// A Stripe restricted API key (rk_…) with read access to Events, for
    /// `POST /api/v1/stripe/backfill`. Without it backfill answers 503; webhooks do not need it.
    #[arg(
        long,
        env = "ZORI_STRIPE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub stripe_api_key: Option<String>,

    /// Base URL of Stripe's API, read by backfill (`GET <url>/v1/events`).
    #[arg(
        long,
        env = "ZORI_STRIPE_API_URL",
        default_value = "https://api.stripe.com",
        value_name = "URL"
    )]
    pub stripe_api_url: String,

    /// How far a Stripe signature timestamp may be from now.
    #[arg(
        long,
        env = "ZORI_STRIPE_TOLERANCE",
        default_value = "300s",
        value_name = "DURATION"
    )]
    pub stripe_tolerance: String,

    /// How far before a payment a visitor's first touch may lie to be credited with it: among
    /// the payer's visitors (all devices of an identified user), the earliest first seen within
    /// this window wins. A payment's credit is computed when it arrives and kept.
    #[arg(
        long,
        env = "ZORI_ATTRIBUTION_LOOKBACK",
        default_value = "90days",
        value_name = "DURATION"
    )]
    pub attribution_lookback: String,

    /// Salt of the payer email hashes (at least 16 characters; the same as zori-ingest's, so
    /// identified users and payers match). Required.
    #[arg(
        long,
        env = "ZORI_EMAIL_SALT",
        hide_env_values = true,
        value_name = "SALT"
    )]
    pub email_salt: Option<String>,

    /// Most messages written per batch (one ClickHouse insert, one PostgreSQL transaction).
    #[arg(
        long,
        env = "ZORI_BATCH_SIZE",
        default_value = "5000",
        value_name = "N"
    )]
    pub batch_size: String,

    /// Longest wait for a batch to fill before writing what arrived.
    #[arg(
        long,
        env = "ZORI_BATCH_WAIT",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub batch_wait: String,

    /// How often the event-count rollup is audited against the events and recently written
    /// payments' stored credit is recomputed (closing rare races; see docs/api.md).
    #[arg(
        long,
        env = "ZORI_RECONCILE_INTERVAL",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub reconcile_interval: String,

    /// How often at most a day that received events is audited against the event-count rollup
    /// (a resent event's count is exact again within this time; see docs/api.md).
    #[arg(
        long,
        env = "ZORI_ROLLUP_AUDIT_EVERY",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub rollup_audit_every: String,

    /// Most batches written to the stores at once (1 to 16); the next batch is fetched
    /// meanwhile. Several hide the stores' round trips; every write is idempotent and
    /// order-independent, so they may commit in any order.
    #[arg(
        long,
        env = "ZORI_BATCHES_IN_FLIGHT",
        default_value = "3",
        value_name = "N"
    )]
    pub batches_in_flight: String,

    /// How long the stream waits for an acknowledgement before redelivering a message.
    #[arg(
        long,
        env = "ZORI_ACK_WAIT",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub ack_wait: String,

    /// Most deliveries of one message (at least 3; a message failing alone with healthy
    /// backends goes to the dead letter subject on its third delivery).
    #[arg(long, env = "ZORI_MAX_DELIVER", default_value = "10", value_name = "N")]
    pub max_deliver: String,

    /// Name of the durable consumer on the tenant stream (shared by all replicas).
    #[arg(
        long,
        env = "ZORI_CONSUMER_NAME",
        default_value = "zori-api",
        value_name = "NAME"
    )]
    pub consumer_name: String,

    /// Create the tenant stream, or update its limits, at start (the operator normally does).
    #[arg(
        long,
        env = "ZORI_CREATE_STREAM",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub create_stream: String,

    /// Retention of the stream, with --create-stream: `workqueue` (a message is removed once
    /// written and acknowledged; the size limit is the buffer for a consumer outage) or `limits`
    /// (everything is kept until the age or size limit, acknowledged or not). NATS cannot
    /// change the retention of an existing stream: unset, a new stream is a work queue and a live
    /// one keeps its retention (with a warning); set, a live stream with another is refused.
    #[arg(
        long,
        env = "ZORI_STREAM_RETENTION",
        default_value = "",
        value_name = "RETENTION"
    )]
    pub stream_retention: String,

    /// Age limit of the stream, with --create-stream.
    #[arg(
        long,
        env = "ZORI_STREAM_MAX_AGE",
        default_value = "7d",
        value_name = "DURATION"
    )]
    pub stream_max_age: String,

    /// Size limit of the stream (e.g. 1GiB, 500MB), with --create-stream. With workqueue
    /// retention, the buffer for a consumer outage: once this much waits unacknowledged,
    /// ingest answers 503 with Retry-After.
    #[arg(
        long,
        env = "ZORI_STREAM_MAX_BYTES",
        default_value = "1GiB",
        value_name = "BYTES"
    )]
    pub stream_max_bytes: String,

    /// Window in which the stream drops a repeated Nats-Msg-Id, with --create-stream.
    #[arg(
        long,
        env = "ZORI_STREAM_DUPLICATE_WINDOW",
        default_value = "2m",
        value_name = "DURATION"
    )]
    pub stream_duplicate_window: String,

    /// Log format: text or json.
    #[arg(
        long,
        env = "ZORI_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("Config")
            .field("tenant_id", &self.tenant_id)
            .field("listen", &self.listen)
            .field("api_token", &redacted(&self.api_token))
            .field("nats_url", &self.nats_url)
            .field("nats_creds", &redacted(&self.nats_creds))
            .field("postgres_url", &redacted(&self.postgres_url))
            .field("postgres_schema", &self.postgres_schema)
            .field("create_schema", &self.create_schema)
            .field("clickhouse_url", &self.clickhouse_url)
            .field("clickhouse_database", &self.clickhouse_database)
            .field("clickhouse_user", &self.clickhouse_user)
            .field("clickhouse_password", &redacted(&self.clickhouse_password))
            .field("clickhouse_cluster", &self.clickhouse_cluster)
            .field(
                "stripe_webhook_secrets",
                &redacted(&self.stripe_webhook_secrets),
            )
            .field("stripe_api_key", &redacted(&self.stripe_api_key))
            .field("stripe_api_url", &self.stripe_api_url)
            .field("stripe_tolerance", &self.stripe_tolerance)
            .field("attribution_lookback", &self.attribution_lookback)
            .field("email_salt", &redacted(&self.email_salt))
            .field("batch_size", &self.batch_size)
            .field("batch_wait", &self.batch_wait)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("rollup_audit_every", &self.rollup_audit_every)
            .field("batches_in_flight", &self.batches_in_flight)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("consumer_name", &self.consumer_name)
            .field("create_stream", &self.create_stream)
            .field("stream_retention", &self.stream_retention)
            .field("stream_max_age", &self.stream_max_age)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("stream_duplicate_window", &self.stream_duplicate_window)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// Validated settings; secrets are wrapped in [`Secret`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub tenant_id: String,
    pub listen: SocketAddr,
    pub api_token: Secret,
    pub nats_url: String,
    /// `.creds` of the tenant's NATS user (per-tenant NATS accounts).
    pub nats_creds: Option<Secret>,
    pub postgres_url: Secret,
    pub postgres_schema: String,
    pub create_schema: bool,
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: Option<String>,
    pub clickhouse_password: Option<Secret>,
    pub clickhouse_topology: zori_service::clickhouse::Topology,
    pub stripe_webhook_secrets: Vec<Secret>,
    pub stripe_api_key: Option<Secret>,
    pub stripe_api_url: String,
    pub stripe_tolerance: Duration,
    pub attribution_lookback: Duration,
    pub email_salt: Secret,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub reconcile_interval: Duration,
    pub rollup_audit_every: Duration,
    pub batches_in_flight: usize,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    pub consumer_name: String,
    pub create_stream: bool,
    pub stream_limits: StreamLimits,
    pub log_format: LogFormat,
}

fn invalid(flag: &'static str, env: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        env,
        reason: reason.into(),
    }
}

fn required(
    value: Option<String>,
    flag: &'static str,
    env: &'static str,
) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::Missing {
            flag,
            env,
            reason: "this setting is required".to_owned(),
        }),
    }
}

/// A name safe to interpolate (quoted) into PostgreSQL and ClickHouse DDL:
/// `^[a-z_][a-z0-9_]{0,62}$`.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// `1073741824`, `1GiB`, `500MB`, `64KiB`, `10 mb`.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 1GiB, 500MB or 1048576"))?;
    let multiplier: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

fn duration(
    value: &str,
    flag: &'static str,
    env: &'static str,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(value.trim()).map_err(|e| invalid(flag, env, e))?;
    if d < min {
        return Err(invalid(
            flag,
            env,
            format!("must be at least {}", humantime::format_duration(min)),
        ));
    }
    Ok(d)
}

fn check_http_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value.trim()).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "put credentials in --clickhouse-user / --clickhouse-password, not in the URL"
                .to_owned(),
        );
    }
    if url.query().is_some() {
        return Err("the URL must not carry a query string".to_owned());
    }
    Ok(value.trim().trim_end_matches('/').to_owned())
}

impl Config {
    /// Checks every setting; the first bad one is reported with its flag and variable.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let tenant_id = required(self.tenant_id, "--tenant-id", "ZORI_TENANT_ID")?;
        let tenant_id = tenant_id.trim().to_owned();
        if !is_valid_tenant_id(&tenant_id) {
            return Err(invalid(
                "--tenant-id",
                "ZORI_TENANT_ID",
                format!("{tenant_id:?} must be 1 to 48 characters of a-z, 0-9 and _"),
            ));
        }

        let listen = SocketAddr::from_str(self.listen.trim()).map_err(|e| {
            invalid(
                "--listen",
                "ZORI_API_LISTEN",
                format!(
                    "{:?} is not an address such as 0.0.0.0:1323: {e}",
                    self.listen
                ),
            )
        })?;

        let api_token = required(self.api_token, "--api-token", "ZORI_API_TOKEN")?;
        if api_token.chars().count() < 16 {
            return Err(invalid(
                "--api-token",
                "ZORI_API_TOKEN",
                "must be at least 16 characters",
            ));
        }
        if api_token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "--api-token",
                "ZORI_API_TOKEN",
                "must not contain whitespace or control characters",
            ));
        }

        let nats_url = self.nats_url.trim().to_owned();
        if nats_url.is_empty() {
            return Err(invalid("--nats-url", "ZORI_NATS_URL", "must not be empty"));
        }
        for part in nats_url.split(',') {
            async_nats::ServerAddr::from_str(part.trim()).map_err(|e| {
                invalid(
                    "--nats-url",
                    "ZORI_NATS_URL",
                    format!("{:?} is not a NATS server address: {e}", part.trim()),
                )
            })?;
        }

        let nats_creds = self
            .nats_creds
            .filter(|v| !v.trim().is_empty())
            .map(|v| zori_service::jetstream::load_creds(&v))
            .transpose()
            .map_err(|m| invalid("--nats-creds", "ZORI_NATS_CREDS", m))?
            .map(Secret::new);

        let postgres_url = required(self.postgres_url, "--postgres-url", "ZORI_POSTGRES_URL")?;
        let postgres_url = postgres_url.trim().to_owned();
        if let Err(e) = sqlx::postgres::PgConnectOptions::from_str(&postgres_url) {
            // The error of a URL parse never echoes the URL, so no password leaks here.
            return Err(invalid(
                "--postgres-url",
                "ZORI_POSTGRES_URL",
                format!("not a PostgreSQL URL: {e}"),
            ));
        }
        if !(postgres_url.starts_with("postgres://") || postgres_url.starts_with("postgresql://")) {
            return Err(invalid(
                "--postgres-url",
                "ZORI_POSTGRES_URL",
                "must start with postgres:// or postgresql://",
            ));
        }

        let default_name = format!("zori_{tenant_id}");
        let postgres_schema = self
            .postgres_schema
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default_name.clone());
        if !is_valid_identifier(&postgres_schema) {
            return Err(invalid(
                "--postgres-schema",
                "ZORI_POSTGRES_SCHEMA",
                format!("{postgres_schema:?} must match ^[a-z_][a-z0-9_]{{0,62}}$"),
            ));
        }

        let create_schema = parse_bool(&self.create_schema).ok_or_else(|| {
            invalid(
                "--create-schema",
                "ZORI_CREATE_SCHEMA",
                format!("{:?} is not true or false", self.create_schema),
            )
        })?;

        let clickhouse_url = check_http_url(&self.clickhouse_url)
            .map_err(|e| invalid("--clickhouse-url", "ZORI_CLICKHOUSE_URL", e))?;
        let clickhouse_database = self
            .clickhouse_database
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or(default_name);
        if !is_valid_identifier(&clickhouse_database) {
            return Err(invalid(
                "--clickhouse-database",
                "ZORI_CLICKHOUSE_DATABASE",
                format!("{clickhouse_database:?} must match ^[a-z_][a-z0-9_]{{0,62}}$"),
            ));
        }
        let clickhouse_user = self
            .clickhouse_user
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if clickhouse_user
            .as_deref()
            .is_some_and(|u| u.chars().any(|c| c.is_control()))
        {
            return Err(invalid(
                "--clickhouse-user",
                "ZORI_CLICKHOUSE_USER",
                "must not contain control characters",
            ));
        }
        let clickhouse_topology = zori_service::clickhouse::Topology::new(
            self.clickhouse_cluster.as_deref(),
        )
        .map_err(|e| {
            invalid(
                "--clickhouse-cluster",
                "ZORI_CLICKHOUSE_CLUSTER",
                e.to_string(),
            )
        })?;
        let clickhouse_password = self.clickhouse_password.filter(|s| !s.is_empty());
        if clickhouse_password
            .as_deref()
            .is_some_and(|p| p.chars().any(|c| c.is_control()))
        {
            return Err(invalid(
                "--clickhouse-password",
                "ZORI_CLICKHOUSE_PASSWORD",
                "must not contain control characters",
            ));
        }

        let stripe_webhook_secrets: Vec<Secret> = self
            .stripe_webhook_secrets
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        if stripe_webhook_secrets.iter().any(|s| {
            s.expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(invalid(
                "--stripe-webhook-secrets",
                "ZORI_STRIPE_WEBHOOK_SECRETS",
                "a secret contains whitespace or control characters",
            ));
        }
        let stripe_api_key = self
            .stripe_api_key
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty());
        if stripe_api_key
            .as_deref()
            .is_some_and(|key| key.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                "--stripe-api-key",
                "ZORI_STRIPE_API_KEY",
                "the key contains whitespace or control characters",
            ));
        }
        let stripe_api_url = check_http_url(&self.stripe_api_url)
            .map_err(|e| invalid("--stripe-api-url", "ZORI_STRIPE_API_URL", e))?;
        let stripe_tolerance = duration(
            &self.stripe_tolerance,
            "--stripe-tolerance",
            "ZORI_STRIPE_TOLERANCE",
            Duration::from_secs(1),
        )?;
        let attribution_lookback = duration(
            &self.attribution_lookback,
            "--attribution-lookback",
            "ZORI_ATTRIBUTION_LOOKBACK",
            Duration::from_secs(3600),
        )?;

        let email_salt = required(self.email_salt, "--email-salt", "ZORI_EMAIL_SALT")?;
        if email_salt.chars().count() < 16 {
            return Err(invalid(
                "--email-salt",
                "ZORI_EMAIL_SALT",
                "must be at least 16 characters",
            ));
        }

        let batch_size: usize = self.batch_size.trim().parse().map_err(|_| {
            invalid(
                "--batch-size",
                "ZORI_BATCH_SIZE",
                format!("{:?} is not a whole number", self.batch_size),
            )
        })?;
        if !(1..=100_000).contains(&batch_size) {
            return Err(invalid(
                "--batch-size",
                "ZORI_BATCH_SIZE",
                "must be between 1 and 100000",
            ));
        }
        let batch_wait = duration(
            &self.batch_wait,
            "--batch-wait",
            "ZORI_BATCH_WAIT",
            Duration::from_millis(10),
        )?;
        let reconcile_interval = duration(
            &self.reconcile_interval,
            "--reconcile-interval",
            "ZORI_RECONCILE_INTERVAL",
            Duration::from_millis(100),
        )?;
        let rollup_audit_every = duration(
            &self.rollup_audit_every,
            "--rollup-audit-every",
            "ZORI_ROLLUP_AUDIT_EVERY",
            Duration::ZERO,
        )?;
        let batches_in_flight: usize = self
            .batches_in_flight
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| {
                invalid(
                    "--batches-in-flight",
                    "ZORI_BATCHES_IN_FLIGHT",
                    format!(
                        "{:?} is not a whole number from 1 to 16",
                        self.batches_in_flight
                    ),
                )
            })?;
        let ack_wait = duration(
            &self.ack_wait,
            "--ack-wait",
            "ZORI_ACK_WAIT",
            Duration::from_secs(1),
        )?;
        if ack_wait <= batch_wait {
            return Err(invalid(
                "--ack-wait",
                "ZORI_ACK_WAIT",
                "must be longer than --batch-wait, or messages are redelivered while their batch fills",
            ));
        }
        let max_deliver: i64 = self.max_deliver.trim().parse().map_err(|_| {
            invalid(
                "--max-deliver",
                "ZORI_MAX_DELIVER",
                format!("{:?} is not a whole number", self.max_deliver),
            )
        })?;
        if max_deliver < MIN_MAX_DELIVER {
            return Err(invalid(
                "--max-deliver",
                "ZORI_MAX_DELIVER",
                format!("must be at least {MIN_MAX_DELIVER}"),
            ));
        }

        let consumer_name = self.consumer_name.trim().to_owned();
        let consumer_name_ok = !consumer_name.is_empty()
            && consumer_name.len() <= 64
            && consumer_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !consumer_name_ok {
            return Err(invalid(
                "--consumer-name",
                "ZORI_CONSUMER_NAME",
                format!("{consumer_name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, - and _"),
            ));
        }

        let create_stream = parse_bool(&self.create_stream).ok_or_else(|| {
            invalid(
                "--create-stream",
                "ZORI_CREATE_STREAM",
                format!("{:?} is not true or false", self.create_stream),
            )
        })?;
        let retention: Option<StreamRetention> = match self.stream_retention.trim() {
            "" => None,
            asked => Some(
                asked
                    .parse()
                    .map_err(|e| invalid("--stream-retention", "ZORI_STREAM_RETENTION", e))?,
            ),
        };
        let max_age = duration(
            &self.stream_max_age,
            "--stream-max-age",
            "ZORI_STREAM_MAX_AGE",
            Duration::from_secs(60),
        )?;
        let max_bytes = parse_bytes(&self.stream_max_bytes)
            .map_err(|e| invalid("--stream-max-bytes", "ZORI_STREAM_MAX_BYTES", e))?;
        let duplicate_window = duration(
            &self.stream_duplicate_window,
            "--stream-duplicate-window",
            "ZORI_STREAM_DUPLICATE_WINDOW",
            Duration::from_secs(1),
        )?;
        if duplicate_window > max_age {
            return Err(invalid(
                "--stream-duplicate-window",
                "ZORI_STREAM_DUPLICATE_WINDOW",
                "must not be longer than --stream-max-age",
            ));
        }

        let log_format = match self.log_format.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "--log-format",
                    "ZORI_LOG_FORMAT",
                    format!("{other:?} is not text or json"),
                ))
            }
        };

        Ok(Settings {
            tenant_id,
            listen,
            api_token: Secret::new(api_token),
            nats_url,
            nats_creds,
            postgres_url: Secret::new(postgres_url),
            postgres_schema,
            create_schema,
            clickhouse_url,
            clickhouse_database,
            clickhouse_user,
            clickhouse_password: clickhouse_password.map(Secret::new),
            clickhouse_topology,
            stripe_webhook_secrets,
            stripe_api_key: stripe_api_key.map(Secret::new),
            stripe_api_url,
            stripe_tolerance,
            attribution_lookback,
            email_salt: Secret::new(email_salt),
            batch_size,
            batch_wait,
            reconcile_interval,
            rollup_audit_every,
            batches_in_flight,
            ack_wait,
            max_deliver,
            consumer_name,
            create_stream,
            stream_limits: StreamLimits {
                retention,
                max_age,
                max_bytes,
                duplicate_window,
                ..StreamLimits::default()
            },
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &[&str] = &[
        "zori-api",
        "--tenant-id",
        "acme_shop",
        "--api-token",
        "0123456789abcdef-token",
        "--postgres-url",
        "postgres://zori:hunter2hunter2@db:5432/zori",
        "--email-salt",
        "salt-salt-salt-salt",
    ];

    fn parse(extra: &[&str]) -> Result<Settings, ConfigError> {
        let args: Vec<&str> = BASE.iter().chain(extra).copied().collect();
        Config::try_parse_from(args)
            .expect("clap parses")
            .validate()
    }

    fn without(flag: &str) -> Result<Settings, ConfigError> {
        let mut args: Vec<&str> = Vec::new();
        let mut skip = false;
        for a in BASE {
            if skip {
                skip = false;
                continue;
            }
            if *a == flag {
                skip = true;
                continue;
            }
            args.push(a);
        }
        Config::try_parse_from(args)
            .expect("clap parses")
            .validate()
    }

    #[test]
    fn defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.tenant_id, "acme_shop");
        assert_eq!(s.listen, "0.0.0.0:1323".parse().unwrap());
        assert_eq!(s.postgres_schema, "zori_acme_shop");
        assert_eq!(s.clickhouse_database, "zori_acme_shop");
        assert_eq!(s.clickhouse_url, "http://127.0.0.1:8123");
        assert_eq!(s.nats_url, "nats://127.0.0.1:4222");
        assert!(!s.create_schema);
        assert!(!s.create_stream);
        assert_eq!(s.batch_size, 5000);
        assert_eq!(s.batch_wait, Duration::from_secs(1));
        assert_eq!(s.batches_in_flight, 3);
        assert_eq!(s.ack_wait, Duration::from_secs(30));
        assert_eq!(s.max_deliver, 10);
        assert_eq!(s.consumer_name, "zori-api");
        assert_eq!(s.stripe_tolerance, Duration::from_secs(300));
        assert_eq!(s.attribution_lookback, Duration::from_secs(90 * 24 * 3600));
        assert!(s.stripe_webhook_secrets.is_empty());
        assert!(s.stripe_api_key.is_none());
        assert_eq!(s.stripe_api_url, "https://api.stripe.com");
        assert_eq!(s.stream_limits.retention, None);
        assert_eq!(s.stream_limits.max_age, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.stream_limits.max_bytes, 1 << 30);
        assert_eq!(s.stream_limits.duplicate_window, Duration::from_secs(120));
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_without_values_and_lists() {
        let s = parse(&[
            "--create-schema",
            "--create-stream",
            "--stripe-webhook-secrets",
            "whsec_a, whsec_b,,",
        ])
        .unwrap();
        assert!(s.create_schema);
        assert!(s.create_stream);
        assert_eq!(
            s.stripe_webhook_secrets,
            vec![Secret::new("whsec_a"), Secret::new("whsec_b")]
        );
        let s = parse(&[
            "--create-schema=false",
            "--create-stream=1",
            "--stream-retention",
            "limits",
        ])
        .unwrap();
        assert!(!s.create_schema);
        assert!(s.create_stream);
        assert_eq!(s.stream_limits.retention, Some(StreamRetention::Limits));
        let s = parse(&[
            "--stripe-api-key",
            " rk_test_abc ",
            "--stripe-api-url",
            "http://127.0.0.1:12111/",
        ])
        .unwrap();
        assert_eq!(s.stripe_api_key, Some(Secret::new("rk_test_abc")));
        assert_eq!(s.stripe_api_url, "http://127.0.0.1:12111");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--tenant-id", "Acme"],
                "invalid --tenant-id (ZORI_TENANT_ID)",
            ),
            (
                &["--tenant-id", &"a".repeat(49)],
                "invalid --tenant-id (ZORI_TENANT_ID)",
            ),
            (
                &["--listen", "nowhere"],
                "invalid --listen (ZORI_API_LISTEN)",
            ),
            (
                &["--api-token", "short"],
                "invalid --api-token (ZORI_API_TOKEN)",
            ),
            (
                &["--nats-url", "http://x:4222 y"],
                "invalid --nats-url (ZORI_NATS_URL)",
            ),
            (
                &["--postgres-url", "mysql://x"],
                "invalid --postgres-url (ZORI_POSTGRES_URL)",
            ),
            (
                &["--postgres-schema", "Bad-Name"],
                "invalid --postgres-schema (ZORI_POSTGRES_SCHEMA)",
            ),
            (
                &["--create-schema=maybe"],
                "invalid --create-schema (ZORI_CREATE_SCHEMA)",
            ),
            (
                &["--clickhouse-url", "ftp://x"],
                "invalid --clickhouse-url (ZORI_CLICKHOUSE_URL)",
            ),
            (
                &["--clickhouse-url", "not a url"],
                "invalid --clickhouse-url (ZORI_CLICKHOUSE_URL)",
            ),
            (
                &["--clickhouse-database", "1db"],
                "invalid --clickhouse-database (ZORI_CLICKHOUSE_DATABASE)",
            ),
            (
                &["--stripe-api-key", "rk_live two"],
                "invalid --stripe-api-key (ZORI_STRIPE_API_KEY)",
            ),
            (
                &["--stripe-api-url", "api.stripe.com"],
                "invalid --stripe-api-url (ZORI_STRIPE_API_URL)",
            ),
            (
                &["--stripe-tolerance", "soon"],
                "invalid --stripe-tolerance (ZORI_STRIPE_TOLERANCE)",
            ),
            (
                &["--email-salt", "short"],
                "invalid --email-salt (ZORI_EMAIL_SALT)",
            ),
            (
                &["--batch-size", "0"],
                "invalid --batch-size (ZORI_BATCH_SIZE)",
            ),
            (
                &["--batch-size", "many"],
                "invalid --batch-size (ZORI_BATCH_SIZE)",
            ),
            (
                &["--batch-wait", "1 fortnight"],
                "invalid --batch-wait (ZORI_BATCH_WAIT)",
            ),
            (
                &["--batches-in-flight", "0"],
                "invalid --batches-in-flight (ZORI_BATCHES_IN_FLIGHT)",
            ),
            (
                &["--batches-in-flight", "17"],
                "invalid --batches-in-flight (ZORI_BATCHES_IN_FLIGHT)",
            ),
            (
                &["--ack-wait", "500ms"],
                "invalid --ack-wait (ZORI_ACK_WAIT)",
            ),
            (
                &["--ack-wait", "2s", "--batch-wait", "3s"],
                "invalid --ack-wait (ZORI_ACK_WAIT)",
            ),
            (
                &["--max-deliver", "2"],
                "invalid --max-deliver (ZORI_MAX_DELIVER)",
            ),
            (
                &["--consumer-name", "a.b"],
                "invalid --consumer-name (ZORI_CONSUMER_NAME)",
            ),
            (
                &["--create-stream=perhaps"],
                "invalid --create-stream (ZORI_CREATE_STREAM)",
            ),
            (
                &["--stream-retention", "interest"],
                "invalid --stream-retention (ZORI_STREAM_RETENTION)",
            ),
            (
                &["--stream-max-age", "x"],
                "invalid --stream-max-age (ZORI_STREAM_MAX_AGE)",
            ),
            (
                &["--stream-max-bytes", "1 parsec"],
                "invalid --stream-max-bytes (ZORI_STREAM_MAX_BYTES)",
            ),
            (
                &["--stream-duplicate-window", "30d"],
                "invalid --stream-duplicate-window (ZORI_STREAM_DUPLICATE_WINDOW)",
            ),
            (
                &["--log-format", "xml"],
                "invalid --log-format (ZORI_LOG_FORMAT)",
            ),
        ];
        for (extra, expected) in cases {
            let error = parse(extra).expect_err(expected).to_string();
            assert!(error.starts_with(expected), "{extra:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn required_settings() {
        for (flag, env) in [
            ("--tenant-id", "ZORI_TENANT_ID"),
            ("--api-token", "ZORI_API_TOKEN"),
            ("--postgres-url", "ZORI_POSTGRES_URL"),
            ("--email-salt", "ZORI_EMAIL_SALT"),
        ] {
            if std::env::var_os(env).is_some() {
                continue;
            }
            let error = without(flag).expect_err(flag).to_string();
            assert_eq!(
                error,
                format!("missing {flag} ({env}): this setting is required")
            );
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let args: Vec<&str> = BASE
            .iter()
            .copied()
            .chain([
                "--clickhouse-password",
                "ch-secret-pw",
                "--stripe-webhook-secrets",
                "whsec_topsecret",
                "--stripe-api-key",
                "rk_live_topsecret",
            ])
            .collect();
        let config = Config::try_parse_from(args).unwrap();
        let settings = config.clone().validate().unwrap();
        for dump in [format!("{config:?}"), format!("{settings:?}")] {
            for secret in [
                "hunter2hunter2",
                "0123456789abcdef-token",
                "salt-salt-salt-salt",
                "ch-secret-pw",
                "whsec_topsecret",
                "rk_live_topsecret",
            ] {
                assert!(!dump.contains(secret), "{secret} leaked: {dump}");
            }
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1GiB", Some(1 << 30)),
            ("1gib", Some(1 << 30)),
            ("500MB", Some(500_000_000)),
            ("64 KiB", Some(65536)),
            ("1048576", Some(1048576)),
            ("0", None),
            ("GiB", None),
            ("1 parsec", None),
            ("99999999999TiB", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_bytes(input).ok(), *expected, "{input}");
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_valid_tenant_id("acme_shop_2"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id("acme-shop"));
        assert!(is_valid_identifier("zori_acme"));
        assert!(is_valid_identifier("_x"));
        assert!(!is_valid_identifier("9x"));
        assert!(!is_valid_identifier("x;drop"));
        assert!(!is_valid_identifier(&"a".repeat(64)));
    }
}
