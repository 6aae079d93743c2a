//! The tenant's JetStream stream: connection, and create-or-update with the desired limits.
//!
//! The stream is a queue, not an archive: by default it uses work-queue retention, so a
//! message is removed once `zori-api` has written and acknowledged it, and `max_bytes` is the
//! buffer for a consumer outage. It discards *new* messages when full, so a full stream turns
//! into publish errors (503 at the edge) instead of silently dropping what was already accepted.

use std::{fmt, str::FromStr, time::Duration};

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("failed to connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("invalid NATS credentials: {0}")]
    Credentials(String),
    #[error("failed to read stream {stream}: {message}")]
    Read { stream: String, message: String },
    #[error("failed to create stream {stream}: {message}")]
    Create { stream: String, message: String },
    #[error("failed to update stream {stream}: {message}")]
    Update { stream: String, message: String },
    #[error(
        "stream {stream} has {live} retention but {desired} was asked for, and NATS cannot change \
         the retention of an existing stream: ask for {live} (--stream-retention), or let the \
         consumer drain the stream (zori_api_consumer_lag_messages at 0), stop ingest, delete \
         the stream and create it again"
    )]
    RetentionChange {
        stream: String,
        live: &'static str,
        desired: &'static str,
    },
}

/// How the stream decides that a message may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamRetention {
    /// A message is removed once the (single) consumer acknowledged it; the limits only bound
    /// what waits for the consumer. The default: at steady state the stream stays nearly empty.
    #[default]
    WorkQueue,
    /// Messages stay until `max_age` or `max_bytes` push them out, acknowledged or not: the
    /// stream doubles as a replay window, and must be sized for everything sent in `max_age`.
    Limits,
}

impl StreamRetention {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamRetention::WorkQueue => "workqueue",
            StreamRetention::Limits => "limits",
        }
    }

    fn policy(self) -> RetentionPolicy {
        match self {
            StreamRetention::WorkQueue => RetentionPolicy::WorkQueue,
            StreamRetention::Limits => RetentionPolicy::Limits,
        }
    }
}

/// The name `--stream-retention` uses for a stream's retention (`interest` is never created by
/// Zori, but may be found).
fn retention_name(policy: RetentionPolicy) -> &'static str {
    match policy {
        RetentionPolicy::WorkQueue => StreamRetention::WorkQueue.as_str(),
        RetentionPolicy::Limits => StreamRetention::Limits.as_str(),
        RetentionPolicy::Interest => "interest",
    }
}

impl fmt::Display for StreamRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StreamRetention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "workqueue" | "work-queue" | "work_queue" => Ok(StreamRetention::WorkQueue),
            "limits" => Ok(StreamRetention::Limits),
            other => Err(format!("{other:?} is not workqueue or limits")),
        }
    }
}

/// Retention and size and age bounds of a tenant stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    /// `None`: work-queue for a stream created now, and a live stream keeps the retention it
    /// has (an upgrade never stops a tenant). `Some`: asked for explicitly, so a live stream
    /// with another retention is refused with [`JetStreamError::RetentionChange`].
    pub retention: Option<StreamRetention>,
    /// With work-queue retention: the longest a message waits for the consumer. With limits
    /// retention: how long every message is kept.
    pub max_age: Duration,
    /// With work-queue retention: the buffer for a consumer outage (what the stream holds
    /// unacknowledged before ingest answers 503). With limits retention: everything kept.
    pub max_bytes: i64,
    pub max_messages: i64,
    pub duplicate_window: Duration,
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            retention: None,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            max_messages: -1,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

/// What [`ensure_stream`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    Created,
    /// Names of the settings that differed and were updated.
    Updated(Vec<&'static str>),
    Unchanged,
}

/// The servers of a NATS URL setting: one URL, or a comma-separated seed list of the nodes of a
/// cluster (`nats://a:4222,nats://b:4222,nats://c:4222`). Empty parts are ignored.
pub fn seed_list(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect()
}

/// Connects to NATS with a client name that shows up in `nats server report connections`.
/// `url` may be a seed list ([`seed_list`]): the client connects to any of them, and after a
/// node is lost reconnects to the others (and to the cluster members the servers announce).
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, JetStreamError> {
    connect_options(name)
        .connect(seed_list(url))
        .await
        .map_err(|source| JetStreamError::Connect {
            url: url.to_owned(),
            source,
        })
}

fn connect_options(name: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
}

/// The inbox prefix of a tenant's binaries, `_INBOX_<tenant id>`: a tenant NATS user may
/// subscribe only below it.
pub fn tenant_inbox_prefix(tenant_id: &str) -> String {
    format!("_INBOX_{tenant_id}")
}

/// The `.creds` of `ZORI_NATS_CREDS`: the value itself when it holds a user JWT, else the
/// file it names. The error names the problem, never the value.
pub fn load_creds(value: &str) -> Result<String, String> {
    let creds = if value.contains("-----BEGIN") {
        value.to_owned()
    } else {
        std::fs::read_to_string(value.trim())
            .map_err(|e| format!("neither credentials nor a readable credentials file ({e})"))?
    };
    async_nats::ConnectOptions::new()
        .credentials(&creds)
        .map_err(|e| format!("not NATS credentials: {e}"))?;
    Ok(creds)
}

/// Connects as a tenant's binary: with the tenant user's `.creds` when given (NATS accounts),
/// and the tenant's inbox prefix always.
pub async fn connect_tenant(
    url: &str,
    name: &str,
    tenant_id: &str,
    creds: Option<&str>,
) -> Result<async_nats::Client, JetStreamError> {
    let connect_error = |source| JetStreamError::Connect {
        url: url.to_owned(),
        source,
    };
    let mut options = connect_options(name).custom_inbox_prefix(tenant_inbox_prefix(tenant_id));
    if let Some(creds) = creds {
        options = options
            .credentials(creds)
            .map_err(|e| JetStreamError::Credentials(e.to_string()))?;
    }
    options.connect(seed_list(url)).await.map_err(connect_error)
}

/// The desired configuration of a tenant stream.
pub fn desired_config(stream: &str, subjects: Vec<String>, limits: &StreamLimits) -> Config {
    Config {
        name: stream.to_owned(),
        subjects,
        storage: StorageType::File,
        retention: limits.retention.unwrap_or_default().policy(),
        discard: DiscardPolicy::New,
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        max_messages: limits.max_messages,
        duplicate_window: limits.duplicate_window,
        num_replicas: limits.replicas,
        ..Config::default()
    }
}

/// Names of the settings in which `live` differs from `desired` (only those we manage).
pub fn differences(live: &Config, desired: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut subjects_live = live.subjects.clone();
    let mut subjects_desired = desired.subjects.clone();
    subjects_live.sort();
    subjects_desired.sort();
    if subjects_live != subjects_desired {
        changed.push("subjects");
    }
    if live.discard != desired.discard {
        changed.push("discard");
    }
    if live.max_age != desired.max_age {
        changed.push("max_age");
    }
    if live.max_bytes != desired.max_bytes {
        changed.push("max_bytes");
    }
    if live.max_messages != desired.max_messages {
        changed.push("max_messages");
    }
    if live.duplicate_window != desired.duplicate_window {
        changed.push("duplicate_window");
    }
    if live.num_replicas != desired.num_replicas {
        changed.push("num_replicas");
    }
    changed
}

/// Creates the tenant stream with `limits`, or updates only the managed settings that differ;
/// the retention of a live stream is checked only when `limits` asks for one explicitly.
pub async fn ensure_tenant_stream(
    js: &jetstream::Context,
    stream: &str,
    subjects: Vec<String>,
    limits: &StreamLimits,
) -> Result<StreamOutcome, JetStreamError> {
    let desired = desired_config(stream, subjects, limits);
    match limits.retention {
        Some(_) => ensure_stream_exact(js, desired).await,
        None => ensure_stream(js, desired).await,
    }
}

/// Creates the stream, or updates only the managed settings that differ from the desired ones.
/// A live stream keeps its retention (NATS cannot change it): a stream created as `limits`
/// before work-queue became the default goes on working, with a warning saying how to move.
pub async fn ensure_stream(
    js: &jetstream::Context,
    desired: Config,
) -> Result<StreamOutcome, JetStreamError> {
    ensure(js, desired, false).await
}

/// [`ensure_stream`], but a live stream whose retention differs is refused with
/// [`JetStreamError::RetentionChange`] instead of kept.
pub async fn ensure_stream_exact(
    js: &jetstream::Context,
    desired: Config,
) -> Result<StreamOutcome, JetStreamError> {
    ensure(js, desired, true).await
}

async fn ensure(
    js: &jetstream::Context,
    desired: Config,
    exact_retention: bool,
) -> Result<StreamOutcome, JetStreamError> {
    let name = desired.name.clone();
    match js.get_stream(&name).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(|e| JetStreamError::Read {
                stream: name.clone(),
                message: e.to_string(),
            })?;
            if info.config.retention != desired.retention {
                if exact_retention {
                    return Err(JetStreamError::RetentionChange {
                        stream: name,
                        live: retention_name(info.config.retention),
                        desired: retention_name(desired.retention),
                    });
                }
                tracing::warn!(
                    stream = %name,
                    live = retention_name(info.config.retention),
                    default = retention_name(desired.retention),
                    "the stream keeps its retention (NATS cannot change it); to move to the \
                     default, drain the stream, delete it and let it be created again"
                );
            }
            let changed = differences(&info.config, &desired);
            if changed.is_empty() {
                return Ok(StreamOutcome::Unchanged);
            }
            let mut update = info.config.clone();
            update.subjects = desired.subjects;
            update.discard = desired.discard;
            update.max_age = desired.max_age;
            update.max_bytes = desired.max_bytes;
            update.max_messages = desired.max_messages;
            update.duplicate_window = desired.duplicate_window;
            update.num_replicas = desired.num_replicas;
            js.update_stream(update)
                .await
                .map_err(|e| JetStreamError::Update {
                    stream: name,
                    message: e.to_string(),
                })?;
            Ok(StreamOutcome::Updated(changed))
        }
        Err(error) if is_not_found(&error) => {
            js.create_stream(desired)
                .await
                .map_err(|e| JetStreamError::Create {
                    stream: name,
                    message: e.to_string(),
                })?;
            Ok(StreamOutcome::Created)
        }
        Err(error) => Err(JetStreamError::Read {
            stream: name,
            message: error.to_string(),
        }),
    }
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Parses durations such as `7d`, `90s`, `2m` for flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_url_may_be_a_seed_list() {
        assert_eq!(seed_list("nats://a:4222"), vec!["nats://a:4222"]);
        assert_eq!(
            seed_list(" nats://a:4222, nats://b:4223 ,,nats://c:4224"),
            vec!["nats://a:4222", "nats://b:4223", "nats://c:4224"]
        );
    }

    #[test]
    fn nats_creds_come_as_a_value_or_a_file_and_are_never_echoed() {
        // The decorated format of `nsc generate creds` (the seed is async-nats' doc example).
        let creds = "-----BEGIN NATS USER JWT-----\n\
                     eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n\
                     ------END NATS USER JWT------\n\n\
                     -----BEGIN USER NKEY SEED-----\n\
                     SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\n\
                     ------END USER NKEY SEED------\n";
        assert_eq!(load_creds(creds).as_deref(), Ok(creds));
        let path = std::env::temp_dir().join(format!("zori-creds-{}.creds", std::process::id()));
        std::fs::write(&path, creds).expect("write");
        assert_eq!(
            load_creds(path.to_str().expect("utf-8")).as_deref(),
            Ok(creds)
        );
        let _ = std::fs::remove_file(&path);

        let error = load_creds("/nonexistent/zori.creds").expect_err("no file");
        assert!(
            error.starts_with("neither credentials nor a readable credentials file"),
            "{error}"
        );
        let broken = creds.replace("SUAIO3FHUX5PNV2LQ", "SUAIO3FHUX5PNV2LX");
        let error = load_creds(&broken).expect_err("a bad seed");
        assert!(error.starts_with("not NATS credentials"), "{error}");
        assert!(!error.contains("SUAIO3FHUX5PNV2L"), "{error}");
    }

    #[test]
    fn retention_names_round_trip() {
        for retention in [StreamRetention::WorkQueue, StreamRetention::Limits] {
            assert_eq!(retention.as_str().parse(), Ok(retention));
            assert_eq!(retention_name(retention.policy()), retention.as_str());
        }
        assert_eq!(" Work-Queue ".parse(), Ok(StreamRetention::WorkQueue));
        assert_eq!(
            "interest".parse::<StreamRetention>(),
            Err("\"interest\" is not workqueue or limits".to_owned())
        );
    }

    #[test]
    fn the_default_stream_is_a_work_queue_that_refuses_when_full() {
        let config = desired_config("ZORI_A", vec!["zori.a.>".into()], &StreamLimits::default());
        assert_eq!(config.retention, RetentionPolicy::WorkQueue);
        assert_eq!(config.discard, DiscardPolicy::New);
        assert_eq!(config.max_bytes, 1 << 30);
        let limits = StreamLimits {
            retention: Some(StreamRetention::Limits),
            ..StreamLimits::default()
        };
        let config = desired_config("ZORI_A", vec!["zori.a.>".into()], &limits);
        assert_eq!(config.retention, RetentionPolicy::Limits);
    }
}
