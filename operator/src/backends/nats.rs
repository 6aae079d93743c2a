//! The tenant stream on NATS JetStream: created, or updated only in the settings that differ
//! (see `zori_service::jetstream::ensure_stream`), and deleted by the `Delete` reclaim policy.

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream::Config, ErrorCode};
use zori_service::jetstream::{connect, ensure_stream, JetStreamError, StreamOutcome};

use super::{Provisioned, Removed};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("failed to delete stream {stream}: {message}")]
    Delete { stream: String, message: String },
}

/// JetStream with the operator's connection.
#[derive(Clone)]
pub struct NatsBackend {
    js: jetstream::Context,
}

impl NatsBackend {
    /// Connects (retrying in the background while the server is down).
    pub async fn connect(url: &str) -> Result<Self, NatsError> {
        let client = connect(url, "zori-operator").await?;
        Ok(Self {
            js: jetstream::new(client),
        })
    }

    /// Creates the stream or updates what differs from `desired`.
    pub async fn ensure(&self, desired: Config) -> Result<Provisioned, NatsError> {
        Ok(match ensure_stream(&self.js, desired).await? {
            StreamOutcome::Created => Provisioned::Created,
            StreamOutcome::Updated(changed) => {
                Provisioned::Updated(changed.into_iter().map(str::to_owned).collect())
            }
            StreamOutcome::Unchanged => Provisioned::Unchanged,
        })
    }

    /// Deletes the stream and its messages; a stream already gone is fine.
    pub async fn delete(&self, stream: &str) -> Result<Removed, NatsError> {
        match self.js.delete_stream(stream).await {
            Ok(_) => Ok(Removed::Removed),
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(Removed::AlreadyGone)
            }
            Err(e) => Err(NatsError::Delete {
                stream: stream.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// The live configuration of a stream, if it exists (for tests and diagnostics).
    pub async fn stream_config(&self, stream: &str) -> Result<Option<Config>, NatsError> {
        match self.js.get_stream(stream).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| JetStreamError::Read {
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })?;
                Ok(Some(info.config.clone()))
            }
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(None)
            }
            Err(e) => Err(NatsError::JetStream(JetStreamError::Read {
                stream: stream.to_owned(),
                message: e.to_string(),
            })),
        }
    }
}
