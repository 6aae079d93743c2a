//! The tenant's JetStream stream: connection, and create-or-update with the desired limits.
//!
//! The stream discards *new* messages when full, so a full stream turns into publish errors
//! (503 at the edge) instead of silently dropping what was already accepted.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, StorageType},
};

#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("failed to connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("failed to read stream {stream}: {message}")]
    Read { stream: String, message: String },
    #[error("failed to create stream {stream}: {message}")]
    Create { stream: String, message: String },
    #[error("failed to update stream {stream}: {message}")]
    Update { stream: String, message: String },
}

/// Size and age bounds of a tenant stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_age: Duration,
    pub max_bytes: i64,
    pub max_messages: i64,
    pub duplicate_window: Duration,
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
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

/// Connects to NATS with a client name that shows up in `nats server report connections`.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, JetStreamError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| JetStreamError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// The desired configuration of a tenant stream.
pub fn desired_config(stream: &str, subjects: Vec<String>, limits: &StreamLimits) -> Config {
    Config {
        name: stream.to_owned(),
        subjects,
        storage: StorageType::File,
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

/// Creates the stream, or updates only the managed settings that differ from the desired ones.
pub async fn ensure_stream(
    js: &jetstream::Context,
    desired: Config,
) -> Result<StreamOutcome, JetStreamError> {
    let name = desired.name.clone();
    match js.get_stream(&name).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(|e| JetStreamError::Read {
                stream: name.clone(),
                message: e.to_string(),
            })?;
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
