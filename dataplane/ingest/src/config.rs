//! Settings of `zori-ingest`: flags with `ZORI_…` environment fallbacks ([`Config`]), checked
//! once at start into typed [`Settings`]. A bad value is reported as one line that names the
//! flag and its environment variable.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use axum::http::HeaderName;
use clap::Parser;
use zori_core::{
    enrich::EnrichSettings,
    event::{is_valid_tenant_id, Subjects, MAX_TENANT_ID},
};
use zori_service::jetstream::{parse_duration, StreamLimits, StreamRetention};
pub use zori_service::secret::{Secret, REDACTED};

pub use crate::identity::VerificationMode;

/// Command-line flags and environment variables, as given. Every value is read as text and
/// checked by [`Config::validate`], so that every mistake produces the same one-line error.
#[derive(Clone, Parser)]
#[command(
    name = "zori-ingest",
    args_override_self = true,
    version,
    about = "Zori tracking endpoint: receives browser events, validates and enriches them, and \
             hands them to the tenant's NATS JetStream stream.",
    long_about = "Zori tracking endpoint: receives browser events, validates and enriches them, \
                  and hands them to the tenant's NATS JetStream stream.\n\n\
                  Every flag can also be set through the environment variable shown next to it. \
                  A request is answered 2xx only after JetStream has stored the event; when NATS \
                  is unavailable the answer is 503 with Retry-After, and the tracker retries.\n\n\
                  Endpoints: POST /ingest, /identify, /batch; GET /zori.js, /v/<version>/zori.js, \
                  /health, /healthz, /readyz, /metrics.",
    after_help = "Example (local demo):\n  \
                  ZORI_TENANT_ID=demo ZORI_PUBLISHABLE_KEY=zori_pt_0123456789abcdef \\\n  \
                  ZORI_EMAIL_SALT=change-me-to-a-long-random-value \\\n  \
                  ZORI_ALLOWED_ORIGINS=http://localhost:8080 zori-ingest --create-stream"
)]
pub struct Config {
    /// Tenant id: 1 to 48 characters of a-z, 0-9 and _. Names the stream `ZORI_<ID>` and the
    /// subjects `zori.<id>.>`. (required)
    #[arg(long, env = "ZORI_TENANT_ID", value_name = "ID")]
    pub tenant_id: Option<String>,

    /// Address and port to listen on.
    #[arg(
        long,
        env = "ZORI_INGEST_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:1324"
    )]
    pub listen: String,

    /// Publishable key the tracker sends in the X-Zori-PT header or the `key` query parameter;
    /// at least 16 characters. (required)
    #[arg(
        long,
        env = "ZORI_PUBLISHABLE_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub publishable_key: Option<String>,

    /// Comma-separated origins of the tenant's site, such as
    /// `https://shop.example.com,https://www.shop.example.com`. Only these get CORS answers,
    /// and events must come from pages on these hosts. (required)
    #[arg(long, env = "ZORI_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub allowed_origins: Option<String>,

    /// NATS server with JetStream enabled.
    #[arg(
        long,
        env = "ZORI_NATS_URL",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// NATS credentials (`.creds` contents, or a path to the file) of the tenant's own NATS
    /// user, where NATS runs with per-tenant accounts.
    #[arg(
        long,
        env = "ZORI_NATS_CREDS",
        value_name = "CREDS",
        hide_env_values = true
    )]
    pub nats_creds: Option<String>,

    /// Redis server holding the rate-limit counters. If it is down, requests are let through.
    #[arg(
        long,
        env = "ZORI_REDIS_URL",
        value_name = "URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Tenant secret salting the hashes of emails and client IPs; at least 16 characters.
    /// Keep it stable: changing it changes every hash. (required)
    #[arg(
        long,
        env = "ZORI_EMAIL_SALT",
        value_name = "SALT",
        hide_env_values = true
    )]
    pub email_salt: Option<String>,

    /// Largest request body accepted, in bytes (suffixes KiB and MiB allowed); larger bodies
    /// get 413.
    #[arg(
        long,
        env = "ZORI_MAX_BODY_BYTES",
        allow_negative_numbers = true,
        value_name = "BYTES",
        default_value = "65536"
    )]
    pub max_body_bytes: String,

    /// Most elements (events plus identifies) in one POST /batch; more gets 413.
    #[arg(
        long,
        env = "ZORI_MAX_BATCH_EVENTS",
        allow_negative_numbers = true,
        value_name = "N",
        default_value = "100"
    )]
    pub max_batch_events: String,

    /// Events one visitor id may send per rate-limit window; more gets 429. 0 turns it off.
    #[arg(
        long,
        env = "ZORI_RATE_LIMIT_PER_VISITOR",
        allow_negative_numbers = true,
        value_name = "N",
        default_value = "600"
    )]
    pub rate_limit_per_visitor: String,

    /// Events one client IP may send per rate-limit window; more gets 429. 0 turns it off.
    #[arg(
        long,
        env = "ZORI_RATE_LIMIT_PER_IP",
        allow_negative_numbers = true,
        value_name = "N",
        default_value = "3000"
    )]
    pub rate_limit_per_ip: String,

    /// Length of the fixed rate-limit window, in whole seconds (e.g. 60s, 5m).
    #[arg(
        long,
        env = "ZORI_RATE_LIMIT_WINDOW",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub rate_limit_window: String,

    /// What the rate limiter does while Redis does not answer: `open` lets every request
    /// through unchecked (nothing is lost; a metric counts them and readiness stays green) or
    /// `closed` answers 503 with Retry-After (and readiness fails) until Redis is back.
    #[arg(
        long,
        env = "ZORI_RATE_LIMIT_FAILURE_MODE",
        value_name = "open|closed",
        default_value = "open"
    )]
    pub rate_limit_failure_mode: String,

    /// What to do with events from known bots and crawlers: `drop` (answer 200, store nothing)
    /// or `flag` (store them marked as bots).
    #[arg(
        long,
        env = "ZORI_BOT_TRAFFIC",
        value_name = "drop|flag",
        default_value = "drop"
    )]
    pub bot_traffic: String,

    /// Client timestamps further in the past than this are replaced by the receive time.
    #[arg(
        long,
        env = "ZORI_MAX_PAST_SKEW",
        value_name = "DURATION",
        default_value = "72h"
    )]
    pub max_past_skew: String,

    /// Client timestamps further in the future than this are replaced by the receive time.
    #[arg(
        long,
        env = "ZORI_MAX_FUTURE_SKEW",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub max_future_skew: String,

    /// Header carrying the client address when running behind a proxy, such as
    /// `x-forwarded-for` (see --trusted-proxies for which entry is used). Without it, the peer
    /// address is used.
    /// The address only feeds the country lookup and a salted rate-limit key; it is never
    /// stored.
    #[arg(long, env = "ZORI_CLIENT_IP_HEADER", value_name = "HEADER")]
    pub client_ip_header: Option<String>,

    /// How many proxies in front of ingest append to --client-ip-header (a load balancer and
    /// an ingress controller are 2). The client address is the right-most entry that none of
    /// them added: entries further left are whatever the client sent, so they cannot be trusted.
    /// 0 ignores the header.
    #[arg(
        long,
        env = "ZORI_TRUSTED_PROXIES",
        allow_negative_numbers = true,
        value_name = "N",
        default_value = "1"
    )]
    pub trusted_proxies: String,

    /// Most request bodies read and handled at once; a request that finds no room within
    /// 100 ms gets 503 with Retry-After (the tracker retries). Bounds ingest's memory: each body
    /// in flight holds at most --max-body-bytes plus what it parses into.
    #[arg(
        long,
        env = "ZORI_MAX_INFLIGHT_BODIES",
        allow_negative_numbers = true,
        value_name = "N",
        default_value = "64"
    )]
    pub max_inflight_bodies: String,

    /// Identity verification of identify(): `off` (trust every identify), `ignore` (an identify
    /// without a valid signature is stored apart and never links a visitor to a user, so it
    /// cannot move attribution or a user's name) or `refuse` (it is answered 403). Signed
    /// identifies, and identifies sent with the API token, are always trusted.
    #[arg(
        long,
        env = "ZORI_IDENTITY_VERIFICATION",
        value_name = "off|ignore|refuse",
        default_value = "off"
    )]
    pub identity_verification: String,

    /// Tenant secret the site's server signs identities with: `signature` = hex
    /// HMAC-SHA256 of the app_id (or of the email when there is no app_id); at least 16
    /// characters.
    #[arg(
        long,
        env = "ZORI_IDENTITY_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub identity_secret: Option<String>,

    /// The tenant's API token (as given to zori-api): identify requests sent by the site's
    /// server with `Authorization: Bearer <token>` are trusted without a signature.
    #[arg(
        long,
        env = "ZORI_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// How long to wait for JetStream to acknowledge an event before answering 503.
    #[arg(
        long,
        env = "ZORI_PUBLISH_TIMEOUT",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub publish_timeout: String,

    /// Create (or update) the tenant stream at start. Normally the operator owns the stream;
    /// the local demo and the tests pass this.
    #[arg(
        long,
        env = "ZORI_CREATE_STREAM",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub create_stream: bool,

    /// With --create-stream: `workqueue` (a message is removed once zori-api has written and
    /// acknowledged it; the size limit is the buffer for a consumer outage) or `limits`
    /// (everything is kept until the age or size limit). NATS cannot change the retention of an
    /// existing stream: unset, a new stream is a work queue and a live one keeps its retention
    /// (with a warning); set, a live stream with another is refused at start.
    #[arg(
        long,
        env = "ZORI_STREAM_RETENTION",
        value_name = "workqueue|limits",
        default_value = ""
    )]
    pub stream_retention: String,

    /// With --create-stream: how long the stream keeps a message (with workqueue retention:
    /// the longest a message waits for the consumer).
    #[arg(
        long,
        env = "ZORI_STREAM_MAX_AGE",
        value_name = "DURATION",
        default_value = "7d"
    )]
    pub stream_max_age: String,

    /// With --create-stream: most bytes the stream holds (with workqueue retention: the buffer
    /// for a consumer outage); when full, new events get 503 with Retry-After (nothing already
    /// accepted is discarded). Suffixes KiB, MiB, GiB allowed.
    #[arg(
        long,
        env = "ZORI_STREAM_MAX_BYTES",
        allow_negative_numbers = true,
        value_name = "BYTES",
        default_value = "1GiB"
    )]
    pub stream_max_bytes: String,

    /// With --create-stream: window in which a repeated event id is stored only once.
    #[arg(
        long,
        env = "ZORI_STREAM_DUPLICATE_WINDOW",
        value_name = "DURATION",
        default_value = "2m"
    )]
    pub stream_duplicate_window: String,

    /// Log format: `text` or `json`. RUST_LOG filters (default: info).
    #[arg(
        long,
        env = "ZORI_LOG_FORMAT",
        value_name = "text|json",
        default_value = "text"
    )]
    pub log_format: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("tenant_id", &self.tenant_id)
            .field("listen", &self.listen)
            .field(
                "publishable_key",
                &self.publishable_key.as_ref().map(|_| REDACTED),
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("nats_url", &redact_url(&self.nats_url))
            .field("nats_creds", &self.nats_creds.as_ref().map(|_| REDACTED))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("email_salt", &self.email_salt.as_ref().map(|_| REDACTED))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_events", &self.max_batch_events)
            .field("rate_limit_per_visitor", &self.rate_limit_per_visitor)
            .field("rate_limit_per_ip", &self.rate_limit_per_ip)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("rate_limit_failure_mode", &self.rate_limit_failure_mode)
            .field("bot_traffic", &self.bot_traffic)
            .field("max_past_skew", &self.max_past_skew)
            .field("max_future_skew", &self.max_future_skew)
            .field("client_ip_header", &self.client_ip_header)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_inflight_bodies", &self.max_inflight_bodies)
            .field("identity_verification", &self.identity_verification)
            .field(
                "identity_secret",
                &self.identity_secret.as_ref().map(|_| REDACTED),
            )
            .field("api_token", &self.api_token.as_ref().map(|_| REDACTED))
            .field("publish_timeout", &self.publish_timeout)
            .field("create_stream", &self.create_stream)
            .field("stream_retention", &self.stream_retention)
            .field("stream_max_age", &self.stream_max_age)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("stream_duplicate_window", &self.stream_duplicate_window)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// A setting that was missing or could not be used. Displays as one line naming the flag and
/// its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing --{flag} ({env}): {hint}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        hint: &'static str,
    },
    #[error("invalid --{flag} ({env}): {message}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        message: String,
    },
}

impl ConfigError {
    /// The flag (without `--`) the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::Missing { flag, .. } | ConfigError::Invalid { flag, .. } => flag,
        }
    }
}

/// What happens to events from bots and crawlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotTraffic {
    /// Answer 200 but store nothing.
    Drop,
    /// Store them with `client.is_bot = true`.
    Flag,
}

impl FromStr for BotTraffic {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop" => Ok(BotTraffic::Drop),
            "flag" => Ok(BotTraffic::Flag),
            _ => Err(format!("{s:?} is not one of drop, flag")),
        }
    }
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

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not one of text, json")),
        }
    }
}

/// Per-window event budgets; `None` means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub per_visitor: Option<u64>,
    pub per_ip: Option<u64>,
    /// Whole seconds, at least one.
    pub window: Duration,
    /// What happens while Redis does not answer.
    pub failure_mode: FailureMode,
}

/// What the rate limiter does while Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Let requests through unchecked: a burst may pass, nothing is refused.
    #[default]
    Open,
    /// Answer 503 with Retry-After: nothing passes unchecked, clients retry later.
    Closed,
}

impl FromStr for FailureMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(FailureMode::Open),
            "closed" => Ok(FailureMode::Closed),
            _ => Err(format!("{s:?} is not one of open, closed")),
        }
    }
}

impl RateLimits {
    pub fn enabled(&self) -> bool {
        self.per_visitor.is_some() || self.per_ip.is_some()
    }
}

/// The checked settings `run` works with. Secrets are wrapped in [`Secret`]; `Debug` shows no
/// secret and no URL credentials.
#[derive(Clone)]
pub struct Settings {
    pub tenant_id: String,
    pub subjects: Subjects,
    pub listen: SocketAddr,
    pub publishable_key: Secret,
    /// Serialized origins (`https://shop.example.com`, lower case, no default port).
    pub allowed_origins: Vec<String>,
    pub nats_url: Secret,
    /// `.creds` of the tenant's NATS user (per-tenant NATS accounts).
    pub nats_creds: Option<Secret>,
    pub redis_url: Secret,
    pub email_salt: Secret,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub rate_limits: RateLimits,
    pub bot_traffic: BotTraffic,
    pub max_past_skew: Duration,
    pub max_future_skew: Duration,
    pub client_ip_header: Option<HeaderName>,
    pub trusted_proxies: usize,
    pub max_inflight_bodies: usize,
    pub identity_verification: VerificationMode,
    pub identity_secret: Option<Secret>,
    pub api_token: Option<Secret>,
    pub publish_timeout: Duration,
    pub create_stream: bool,
    pub stream_limits: StreamLimits,
    pub log_format: LogFormat,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("tenant_id", &self.tenant_id)
            .field("stream", &self.subjects.stream)
            .field("listen", &self.listen)
            .field("publishable_key", &self.publishable_key)
            .field("allowed_origins", &self.allowed_origins)
            .field("nats_url", &redact_url(self.nats_url.expose()))
            .field("nats_creds", &self.nats_creds)
            .field("redis_url", &redact_url(self.redis_url.expose()))
            .field("email_salt", &self.email_salt)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_events", &self.max_batch_events)
            .field("rate_limits", &self.rate_limits)
            .field("bot_traffic", &self.bot_traffic)
            .field("max_past_skew", &self.max_past_skew)
            .field("max_future_skew", &self.max_future_skew)
            .field("client_ip_header", &self.client_ip_header)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_inflight_bodies", &self.max_inflight_bodies)
            .field("identity_verification", &self.identity_verification)
            .field("identity_secret", &self.identity_secret)
            .field("api_token", &self.api_token)
            .field("publish_timeout", &self.publish_timeout)
            .field("create_stream", &self.create_stream)
            .field("stream_limits", &self.stream_limits)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Settings {
    /// The enrichment settings derived from these settings: allowed page hosts come from the
    /// allowed origins.
    pub fn enrich_settings(&self) -> EnrichSettings {
        EnrichSettings {
            allowed_hosts: self
                .allowed_origins
                .iter()
                .filter_map(|origin| origin_host(origin))
                .collect(),
            max_past_skew: self.max_past_skew,
            max_future_skew: self.max_future_skew,
            email_salt: self.email_salt.expose().to_owned(),
        }
    }
}

/// `https://shop.example.com:8443` → `shop.example.com:8443`.
fn origin_host(origin: &str) -> Option<String> {
    origin.split_once("://").map(|(_, host)| host.to_owned())
}

/// Hides the user-info part of a URL (`nats://user:pass@host` → `nats://[redacted]@host`), and
/// of each URL of a comma-separated NATS seed list.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{REDACTED}{}", &rest[at..]),
        None => url.to_owned(),
    }
}

const MIN_SECRET_CHARS: usize = 16;
const MIN_BODY_BYTES: u64 = 1024;
const MAX_BODY_BYTES: u64 = 16 << 20;
const MAX_BATCH_EVENTS: u64 = 10_000;
const MAX_TRUSTED_PROXIES: u64 = 16;
const MAX_INFLIGHT_BODIES: u64 = 65_536;

impl Config {
    /// Checks every setting and turns them into [`Settings`]; the first problem found is
    /// returned as a one-line [`ConfigError`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let tenant_id = required(
            self.tenant_id,
            "tenant-id",
            "ZORI_TENANT_ID",
            "set the tenant id, such as acme_shop",
        )?;
        if !is_valid_tenant_id(&tenant_id) {
            return Err(invalid(
                "tenant-id",
                "ZORI_TENANT_ID",
                format!("{tenant_id:?} must be 1 to {MAX_TENANT_ID} characters of a-z, 0-9 and _"),
            ));
        }

        let listen = self.listen.trim().parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen",
                "ZORI_INGEST_LISTEN",
                format!(
                    "{:?} is not an address and port such as 0.0.0.0:1324",
                    self.listen
                ),
            )
        })?;

        let publishable_key = required(
            self.publishable_key,
            "publishable-key",
            "ZORI_PUBLISHABLE_KEY",
            "set the key the tracker sends in X-Zori-PT",
        )?;
        check_secret(&publishable_key, "publishable-key", "ZORI_PUBLISHABLE_KEY")?;

        let origins = required(
            self.allowed_origins,
            "allowed-origins",
            "ZORI_ALLOWED_ORIGINS",
            "set the comma-separated origins of the tenant's site, such as https://shop.example.com",
        )?;
        let allowed_origins = parse_origins(&origins)
            .map_err(|message| invalid("allowed-origins", "ZORI_ALLOWED_ORIGINS", message))?;

        // One URL, or a comma-separated seed list of the nodes of a NATS cluster.
        let nats_url = self.nats_url.trim().to_owned();
        let seeds = zori_service::jetstream::seed_list(&nats_url);
        if seeds.is_empty() {
            return Err(invalid(
                "nats-url",
                "ZORI_NATS_URL",
                "must not be empty".to_owned(),
            ));
        }
        for seed in seeds {
            if let Err(error) = seed.parse::<async_nats::ServerAddr>() {
                return Err(invalid(
                    "nats-url",
                    "ZORI_NATS_URL",
                    format!("{:?} is not a NATS server URL: {error}", redact_url(seed)),
                ));
            }
        }

        let nats_creds = optional(self.nats_creds)
            .map(|v| zori_service::jetstream::load_creds(&v))
            .transpose()
            .map_err(|m| invalid("nats-creds", "ZORI_NATS_CREDS", m))?;

        let redis_url = self.redis_url.trim().to_owned();
        if let Err(error) = redis::Client::open(redis_url.as_str()) {
            return Err(invalid(
                "redis-url",
                "ZORI_REDIS_URL",
                format!("{:?} is not a Redis URL: {error}", redact_url(&redis_url)),
            ));
        }

        let email_salt = required(
            self.email_salt,
            "email-salt",
            "ZORI_EMAIL_SALT",
            "set a long random tenant secret (at least 16 characters)",
        )?;
        check_secret(&email_salt, "email-salt", "ZORI_EMAIL_SALT")?;

        let max_body_bytes = parse_size(&self.max_body_bytes)
            .and_then(|n| in_range(n, MIN_BODY_BYTES, MAX_BODY_BYTES, &self.max_body_bytes))
            .map_err(|m| invalid("max-body-bytes", "ZORI_MAX_BODY_BYTES", m))?;
        let max_batch_events = parse_count(&self.max_batch_events)
            .and_then(|n| in_range(n, 1, MAX_BATCH_EVENTS, &self.max_batch_events))
            .map_err(|m| invalid("max-batch-events", "ZORI_MAX_BATCH_EVENTS", m))?;

        let per_visitor = parse_count(&self.rate_limit_per_visitor)
            .map_err(|m| invalid("rate-limit-per-visitor", "ZORI_RATE_LIMIT_PER_VISITOR", m))?;
        let per_ip = parse_count(&self.rate_limit_per_ip)
            .map_err(|m| invalid("rate-limit-per-ip", "ZORI_RATE_LIMIT_PER_IP", m))?;
        let window = parse_duration(self.rate_limit_window.trim())
            .and_then(|d| {
                if d.as_secs() >= 1 && d.subsec_nanos() == 0 {
                    Ok(d)
                } else {
                    Err(format!(
                        "{:?} must be a whole number of seconds, at least 1s",
                        self.rate_limit_window
                    ))
                }
            })
            .map_err(|m| invalid("rate-limit-window", "ZORI_RATE_LIMIT_WINDOW", m))?;
        let failure_mode = self
            .rate_limit_failure_mode
            .parse::<FailureMode>()
            .map_err(|m| invalid("rate-limit-failure-mode", "ZORI_RATE_LIMIT_FAILURE_MODE", m))?;

        let bot_traffic = self
            .bot_traffic
            .parse::<BotTraffic>()
            .map_err(|m| invalid("bot-traffic", "ZORI_BOT_TRAFFIC", m))?;
        let max_past_skew = parse_duration(self.max_past_skew.trim())
            .map_err(|m| invalid("max-past-skew", "ZORI_MAX_PAST_SKEW", m))?;
        let max_future_skew = parse_duration(self.max_future_skew.trim())
            .map_err(|m| invalid("max-future-skew", "ZORI_MAX_FUTURE_SKEW", m))?;

        let client_ip_header = match self.client_ip_header.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => Some(
                HeaderName::from_str(&name.to_ascii_lowercase()).map_err(|_| {
                    invalid(
                        "client-ip-header",
                        "ZORI_CLIENT_IP_HEADER",
                        format!("{name:?} is not an HTTP header name"),
                    )
                })?,
            ),
        };

        let trusted_proxies = parse_count(&self.trusted_proxies)
            .and_then(|n| in_range(n, 0, MAX_TRUSTED_PROXIES, &self.trusted_proxies))
            .map_err(|m| invalid("trusted-proxies", "ZORI_TRUSTED_PROXIES", m))?;
        let max_inflight_bodies = parse_count(&self.max_inflight_bodies)
            .and_then(|n| in_range(n, 1, MAX_INFLIGHT_BODIES, &self.max_inflight_bodies))
            .map_err(|m| invalid("max-inflight-bodies", "ZORI_MAX_INFLIGHT_BODIES", m))?;

        let identity_verification = self
            .identity_verification
            .parse::<VerificationMode>()
            .map_err(|m| invalid("identity-verification", "ZORI_IDENTITY_VERIFICATION", m))?;
        let identity_secret = optional(self.identity_secret);
        if let Some(secret) = &identity_secret {
            check_secret(secret, "identity-secret", "ZORI_IDENTITY_SECRET")?;
        }
        let api_token = optional(self.api_token);
        if let Some(token) = &api_token {
            check_secret(token, "api-token", "ZORI_API_TOKEN")?;
        }
        if identity_verification != VerificationMode::Off
            && identity_secret.is_none()
            && api_token.is_none()
        {
            return Err(invalid(
                "identity-verification",
                "ZORI_IDENTITY_VERIFICATION",
                format!(
                    "{:?} needs --identity-secret (ZORI_IDENTITY_SECRET) to check signatures, \
                     or --api-token (ZORI_API_TOKEN) for server-side identifies",
                    identity_verification.as_str()
                ),
            ));
        }

        let publish_timeout = parse_duration(self.publish_timeout.trim())
            .and_then(|d| {
                if d >= Duration::from_millis(10) && d <= Duration::from_secs(300) {
                    Ok(d)
                } else {
                    Err(format!(
                        "{:?} must be between 10ms and 5m",
                        self.publish_timeout
                    ))
                }
            })
            .map_err(|m| invalid("publish-timeout", "ZORI_PUBLISH_TIMEOUT", m))?;

        let retention: Option<StreamRetention> = match self.stream_retention.trim() {
            "" => None,
            asked => Some(
                asked
                    .parse()
                    .map_err(|m| invalid("stream-retention", "ZORI_STREAM_RETENTION", m))?,
            ),
        };
        let max_age = parse_duration(self.stream_max_age.trim())
            .map_err(|m| invalid("stream-max-age", "ZORI_STREAM_MAX_AGE", m))?;
        let max_bytes = parse_size(&self.stream_max_bytes)
            .and_then(|n| in_range(n, 1 << 20, i64::MAX as u64, &self.stream_max_bytes))
            .map_err(|m| invalid("stream-max-bytes", "ZORI_STREAM_MAX_BYTES", m))?;
        let duplicate_window = parse_duration(self.stream_duplicate_window.trim())
            .and_then(|d| {
                if d < Duration::from_secs(1) {
                    Err(format!(
                        "{:?} must be at least 1s",
                        self.stream_duplicate_window
                    ))
                } else if !max_age.is_zero() && d > max_age {
                    Err(format!(
                        "{:?} must not be longer than --stream-max-age ({})",
                        self.stream_duplicate_window, self.stream_max_age
                    ))
                } else {
                    Ok(d)
                }
            })
            .map_err(|m| invalid("stream-duplicate-window", "ZORI_STREAM_DUPLICATE_WINDOW", m))?;

        let log_format = self
            .log_format
            .parse::<LogFormat>()
            .map_err(|m| invalid("log-format", "ZORI_LOG_FORMAT", m))?;

        Ok(Settings {
            subjects: Subjects::for_tenant(&tenant_id),
            tenant_id,
            listen,
            publishable_key: Secret::new(publishable_key),
            allowed_origins,
            nats_url: Secret::new(nats_url),
            nats_creds: nats_creds.map(Secret::new),
            redis_url: Secret::new(redis_url),
            email_salt: Secret::new(email_salt),
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            max_batch_events: usize::try_from(max_batch_events).unwrap_or(usize::MAX),
            rate_limits: RateLimits {
                per_visitor: (per_visitor > 0).then_some(per_visitor),
                per_ip: (per_ip > 0).then_some(per_ip),
                window,
                failure_mode,
            },
            bot_traffic,
            max_past_skew,
            max_future_skew,
            client_ip_header,
            trusted_proxies: usize::try_from(trusted_proxies).unwrap_or(usize::MAX),
            max_inflight_bodies: usize::try_from(max_inflight_bodies).unwrap_or(usize::MAX),
            identity_verification,
            identity_secret: identity_secret.map(Secret::new),
            api_token: api_token.map(Secret::new),
            publish_timeout,
            create_stream: self.create_stream,
            stream_limits: StreamLimits {
                retention,
                max_age,
                max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
                duplicate_window,
                ..StreamLimits::default()
            },
            log_format,
        })
    }
}

fn required(
    value: Option<String>,
    flag: &'static str,
    env: &'static str,
    hint: &'static str,
) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ConfigError::Missing { flag, env, hint }),
    }
}

fn optional(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn invalid(flag: &'static str, env: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { flag, env, message }
}

fn check_secret(value: &str, flag: &'static str, env: &'static str) -> Result<(), ConfigError> {
    let chars = value.chars().count();
    if chars < MIN_SECRET_CHARS {
        // The value itself is a secret: only its length is reported.
        return Err(invalid(
            flag,
            env,
            format!("the value has {chars} characters; at least {MIN_SECRET_CHARS} are required"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            flag,
            env,
            "the value contains control characters".to_owned(),
        ));
    }
    Ok(())
}

/// Parses `https://a.example,http://localhost:3000` into serialized origins.
fn parse_origins(list: &str) -> Result<Vec<String>, String> {
    let mut origins: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let origin = parse_origin(item)?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    if origins.is_empty() {
        return Err(format!(
            "{list:?} contains no origin; give at least one, such as https://shop.example.com"
        ));
    }
    Ok(origins)
}

fn parse_origin(item: &str) -> Result<String, String> {
    let not_origin =
        || format!("{item:?} is not an http(s) origin such as https://shop.example.com");
    let url = url::Url::parse(item).map_err(|_| not_origin())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(not_origin());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{item:?} must not contain credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{item:?} must be an origin only: scheme, host and optional port, no path"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

/// Parses a byte size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB;
/// K, M, G, T mean KiB, MiB, GiB, TiB).
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size in bytes such as 65536, 64KiB or 1GiB");
    let t = s.trim().replace('_', "");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "k" | "kib" => 1 << 10,
        "mb" => 1_000_000,
        "m" | "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "g" | "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

fn in_range(n: u64, min: u64, max: u64, raw: &str) -> Result<u64, String> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{raw:?} must be between {min} and {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &[&str] = &[
        "zori-ingest",
        "--tenant-id",
        "acme_shop",
        "--publishable-key",
        "zori_pt_0123456789abcdef",
        "--email-salt",
        "salt-salt-salt-salt",
        "--allowed-origins",
        "https://shop.example.com",
    ];

    fn config(extra: &[&str]) -> Config {
        let args: Vec<&str> = BASE.iter().chain(extra).copied().collect();
        Config::try_parse_from(args).expect("flags parse")
    }

    fn error_of(extra: &[&str]) -> String {
        config(extra)
            .validate()
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let s = config(&[]).validate().expect("valid");
        assert_eq!(s.tenant_id, "acme_shop");
        assert_eq!(s.subjects.stream, "ZORI_ACME_SHOP");
        assert_eq!(s.listen, "0.0.0.0:1324".parse().expect("addr"));
        assert_eq!(s.allowed_origins, vec!["https://shop.example.com"]);
        assert_eq!(s.max_body_bytes, 65536);
        assert_eq!(s.max_batch_events, 100);
        assert_eq!(s.rate_limits.per_visitor, Some(600));
        assert_eq!(s.rate_limits.per_ip, Some(3000));
        assert_eq!(s.rate_limits.window, Duration::from_secs(60));
        assert_eq!(s.bot_traffic, BotTraffic::Drop);
        assert_eq!(s.max_past_skew, Duration::from_secs(72 * 3600));
        assert_eq!(s.max_future_skew, Duration::from_secs(300));
        assert_eq!(s.client_ip_header, None);
        assert_eq!(s.trusted_proxies, 1);
        assert_eq!(s.max_inflight_bodies, 64);
        assert_eq!(s.identity_verification, VerificationMode::Off);
        assert!(s.identity_secret.is_none() && s.api_token.is_none());
        assert_eq!(s.publish_timeout, Duration::from_secs(5));
        assert!(!s.create_stream);
        assert_eq!(s.rate_limits.failure_mode, FailureMode::Open);
        assert_eq!(s.stream_limits.retention, None);
        assert_eq!(s.stream_limits.max_age, Duration::from_secs(7 * 86400));
        assert_eq!(s.stream_limits.max_bytes, 1 << 30);
        assert_eq!(s.stream_limits.duplicate_window, Duration::from_secs(120));
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn takes_a_seed_list_of_nats_servers() {
        let s = config(&["--nats-url", "nats://a:4222, nats://b:4222,nats://c:4222"])
            .validate()
            .expect("a seed list is valid");
        assert_eq!(
            zori_service::jetstream::seed_list(s.nats_url.expose()),
            vec!["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
    }

    #[test]
    fn rejects_bad_values_with_one_line_naming_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--tenant-id", "Acme"], "invalid --tenant-id (ZORI_TENANT_ID): \"Acme\" must be 1 to 48 characters of a-z, 0-9 and _"),
            (&["--tenant-id", "a-b"], "invalid --tenant-id (ZORI_TENANT_ID)"),
            (&["--tenant-id", &"a".repeat(49)], "invalid --tenant-id (ZORI_TENANT_ID)"),
            (&["--listen", "1324"], "invalid --listen (ZORI_INGEST_LISTEN): \"1324\" is not an address and port"),
            (&["--publishable-key", "short"], "invalid --publishable-key (ZORI_PUBLISHABLE_KEY): the value has 5 characters; at least 16 are required"),
            (&["--email-salt", "tiny"], "invalid --email-salt (ZORI_EMAIL_SALT): the value has 4 characters"),
            (&["--allowed-origins", "ftp://x"], "invalid --allowed-origins (ZORI_ALLOWED_ORIGINS): \"ftp://x\" is not an http(s) origin"),
            (&["--allowed-origins", "shop.example.com"], "invalid --allowed-origins (ZORI_ALLOWED_ORIGINS): \"shop.example.com\" is not an http(s) origin"),
            (&["--allowed-origins", "https://a.example/path"], "invalid --allowed-origins (ZORI_ALLOWED_ORIGINS): \"https://a.example/path\" must be an origin only"),
            (&["--allowed-origins", " , "], "invalid --allowed-origins (ZORI_ALLOWED_ORIGINS): \",\" contains no origin"),
            (&["--nats-url", "http://x"], "invalid --nats-url (ZORI_NATS_URL)"),
            (&["--nats-url", "nats://a:4222,http://b"], "invalid --nats-url (ZORI_NATS_URL): \"http://b\" is not a NATS server URL"),
            (&["--nats-url", " , "], "invalid --nats-url (ZORI_NATS_URL): must not be empty"),
            (&["--redis-url", "mysql://x"], "invalid --redis-url (ZORI_REDIS_URL)"),
            (&["--max-body-bytes", "abc"], "invalid --max-body-bytes (ZORI_MAX_BODY_BYTES): \"abc\" is not a size in bytes"),
            (&["--max-body-bytes", "10"], "invalid --max-body-bytes (ZORI_MAX_BODY_BYTES): \"10\" must be between 1024 and 16777216"),
            (&["--max-batch-events", "0"], "invalid --max-batch-events (ZORI_MAX_BATCH_EVENTS)"),
            (&["--rate-limit-per-visitor", "-1"], "invalid --rate-limit-per-visitor (ZORI_RATE_LIMIT_PER_VISITOR): \"-1\" is not a whole number"),
            (&["--rate-limit-per-ip", "many"], "invalid --rate-limit-per-ip (ZORI_RATE_LIMIT_PER_IP)"),
            (&["--rate-limit-window", "500ms"], "invalid --rate-limit-window (ZORI_RATE_LIMIT_WINDOW): \"500ms\" must be a whole number of seconds"),
            (&["--rate-limit-window", "soon"], "invalid --rate-limit-window (ZORI_RATE_LIMIT_WINDOW): invalid duration"),
            (&["--bot-traffic", "keep"], "invalid --bot-traffic (ZORI_BOT_TRAFFIC): \"keep\" is not one of drop, flag"),
            (&["--max-past-skew", "3 fortnights"], "invalid --max-past-skew (ZORI_MAX_PAST_SKEW)"),
            (&["--max-future-skew", "x"], "invalid --max-future-skew (ZORI_MAX_FUTURE_SKEW)"),
            (&["--client-ip-header", "x forwarded"], "invalid --client-ip-header (ZORI_CLIENT_IP_HEADER): \"x forwarded\" is not an HTTP header name"),
            (&["--trusted-proxies", "-1"], "invalid --trusted-proxies (ZORI_TRUSTED_PROXIES): \"-1\" is not a whole number"),
            (&["--trusted-proxies", "17"], "invalid --trusted-proxies (ZORI_TRUSTED_PROXIES): \"17\" must be between 0 and 16"),
            (&["--max-inflight-bodies", "0"], "invalid --max-inflight-bodies (ZORI_MAX_INFLIGHT_BODIES): \"0\" must be between 1 and 65536"),
            (&["--identity-verification", "strict"], "invalid --identity-verification (ZORI_IDENTITY_VERIFICATION): \"strict\" is not one of off, ignore, refuse"),
            (&["--identity-verification", "refuse"], "invalid --identity-verification (ZORI_IDENTITY_VERIFICATION): \"refuse\" needs --identity-secret (ZORI_IDENTITY_SECRET)"),
            (&["--identity-secret", "short"], "invalid --identity-secret (ZORI_IDENTITY_SECRET): the value has 5 characters; at least 16 are required"),
            (&["--api-token", "short"], "invalid --api-token (ZORI_API_TOKEN): the value has 5 characters"),
            (&["--publish-timeout", "0s"], "invalid --publish-timeout (ZORI_PUBLISH_TIMEOUT): \"0s\" must be between 10ms and 5m"),
            (&["--rate-limit-failure-mode", "ajar"], "invalid --rate-limit-failure-mode (ZORI_RATE_LIMIT_FAILURE_MODE): \"ajar\" is not one of open, closed"),
            (&["--stream-retention", "interest"], "invalid --stream-retention (ZORI_STREAM_RETENTION): \"interest\" is not workqueue or limits"),
            (&["--stream-max-age", "forever"], "invalid --stream-max-age (ZORI_STREAM_MAX_AGE)"),
            (&["--stream-max-bytes", "1 lot"], "invalid --stream-max-bytes (ZORI_STREAM_MAX_BYTES)"),
            (&["--stream-duplicate-window", "8d"], "invalid --stream-duplicate-window (ZORI_STREAM_DUPLICATE_WINDOW): \"8d\" must not be longer than --stream-max-age (7d)"),
            (&["--log-format", "xml"], "invalid --log-format (ZORI_LOG_FORMAT): \"xml\" is not one of text, json"),
        ];
        for (extra, expected) in cases {
            let message = error_of(extra);
            assert!(message.starts_with(expected), "{extra:?}: {message}");
            assert!(!message.contains('\n'), "{extra:?}: {message}");
        }
    }

    #[test]
    fn reports_missing_required_settings() {
        let cases: &[(&str, &str)] = &[
            ("--tenant-id", "missing --tenant-id (ZORI_TENANT_ID)"),
            (
                "--publishable-key",
                "missing --publishable-key (ZORI_PUBLISHABLE_KEY)",
            ),
            ("--email-salt", "missing --email-salt (ZORI_EMAIL_SALT)"),
            (
                "--allowed-origins",
                "missing --allowed-origins (ZORI_ALLOWED_ORIGINS)",
            ),
        ];
        for (flag, expected) in cases {
            // BASE without the flag and its value.
            let position = BASE.iter().position(|a| a == flag).expect("flag in BASE");
            let args: Vec<&str> = BASE
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != position && *i != position + 1)
                .map(|(_, a)| *a)
                .collect();
            let message = Config::try_parse_from(args)
                .expect("flags parse")
                .validate()
                .expect_err("missing")
                .to_string();
            assert!(message.starts_with(expected), "{flag}: {message}");
        }
    }

    #[test]
    fn normalises_values() {
        let s = config(&[
            "--allowed-origins",
            "https://Shop.Example.com/, http://localhost:3000,https://shop.example.com:443",
            "--client-ip-header",
            "X-Forwarded-For",
            "--rate-limit-per-visitor",
            "0",
            "--max-body-bytes",
            "128KiB",
            "--stream-max-bytes",
            "2GiB",
            "--stream-retention",
            "Limits",
            "--rate-limit-failure-mode",
            "CLOSED",
            "--bot-traffic",
            "FLAG",
        ])
        .validate()
        .expect("valid");
        assert_eq!(
            s.allowed_origins,
            vec!["https://shop.example.com", "http://localhost:3000"]
        );
        assert_eq!(
            s.enrich_settings().allowed_hosts,
            vec!["shop.example.com", "localhost:3000"]
        );
        assert_eq!(
            s.client_ip_header.as_ref().map(HeaderName::as_str),
            Some("x-forwarded-for")
        );
        assert_eq!(s.rate_limits.per_visitor, None);
        assert!(s.rate_limits.enabled());
        assert_eq!(s.max_body_bytes, 128 * 1024);
        assert_eq!(s.stream_limits.max_bytes, 2 << 30);
        assert_eq!(s.stream_limits.retention, Some(StreamRetention::Limits));
        assert_eq!(s.rate_limits.failure_mode, FailureMode::Closed);
        assert_eq!(s.bot_traffic, BotTraffic::Flag);
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let config = config(&[
            "--nats-url",
            "nats://user:natspassword@127.0.0.1:4222",
            "--redis-url",
            "redis://:redispassword@127.0.0.1:6379/0",
            "--identity-secret",
            "identity-secret-value-0123",
            "--api-token",
            "zori_at_token_value_0123456789",
            "--identity-verification",
            "refuse",
        ]);
        let debug = format!("{config:?}");
        let settings = config.validate().expect("valid");
        let debug_settings = format!("{settings:?}");
        for text in [&debug, &debug_settings] {
            for secret in [
                "zori_pt_0123456789abcdef",
                "salt-salt-salt-salt",
                "natspassword",
                "redispassword",
                "identity-secret-value-0123",
                "zori_at_token_value_0123456789",
            ] {
                assert!(!text.contains(secret), "{secret} leaked in {text}");
            }
        }
        assert!(debug_settings.contains("127.0.0.1:6379"));
        let message = error_of(&["--publishable-key", "0123456789"]);
        assert!(!message.contains("0123456789"), "{message}");
        let message = error_of(&["--redis-url", "mysql://root:hunter2@db"]);
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn parses_sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("65536", Some(65536)),
            ("64KiB", Some(65536)),
            ("64k", Some(65536)),
            ("1GiB", Some(1 << 30)),
            ("1 GiB", Some(1 << 30)),
            ("1GB", Some(1_000_000_000)),
            ("1_000", Some(1000)),
            ("", None),
            ("GiB", None),
            ("1.5GiB", None),
            ("-1", None),
            ("99999999999999999999", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input).ok(), *expected, "{input:?}");
        }
    }

    #[test]
    fn redacts_url_credentials() {
        let cases: &[(&str, &str)] = &[
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:pw@host:6379/0", "redis://[redacted]@host:6379/0"),
            ("nats://u:p@host", "nats://[redacted]@host"),
            ("nats://host/a@b", "nats://host/a@b"),
            (
                "nats://u:p@a:4222,nats://u:p@b:4222",
                "nats://[redacted]@a:4222,nats://[redacted]@b:4222",
            ),
            ("not a url", "not a url"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn create_stream_reads_a_boolean() {
        assert!(config(&["--create-stream"]).create_stream);
        assert!(!config(&[]).create_stream);
    }

    #[test]
    fn help_names_every_environment_variable() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for env in [
            "ZORI_TENANT_ID",
            "ZORI_INGEST_LISTEN",
            "ZORI_PUBLISHABLE_KEY",
            "ZORI_ALLOWED_ORIGINS",
            "ZORI_NATS_URL",
            "ZORI_REDIS_URL",
            "ZORI_EMAIL_SALT",
            "ZORI_MAX_BODY_BYTES",
            "ZORI_MAX_BATCH_EVENTS",
            "ZORI_RATE_LIMIT_PER_VISITOR",
            "ZORI_RATE_LIMIT_PER_IP",
            "ZORI_RATE_LIMIT_WINDOW",
            "ZORI_BOT_TRAFFIC",
            "ZORI_MAX_PAST_SKEW",
            "ZORI_MAX_FUTURE_SKEW",
            "ZORI_CLIENT_IP_HEADER",
            "ZORI_TRUSTED_PROXIES",
            "ZORI_MAX_INFLIGHT_BODIES",
            "ZORI_IDENTITY_VERIFICATION",
            "ZORI_IDENTITY_SECRET",
            "ZORI_API_TOKEN",
            "ZORI_PUBLISH_TIMEOUT",
            "ZORI_CREATE_STREAM",
            "ZORI_STREAM_MAX_AGE",
            "ZORI_STREAM_MAX_BYTES",
            "ZORI_STREAM_DUPLICATE_WINDOW",
            "ZORI_LOG_FORMAT",
        ] {
            assert!(help.contains(env), "{env} missing from --help");
        }
    }
}
