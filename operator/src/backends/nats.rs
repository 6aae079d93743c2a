//! The tenant stream on NATS JetStream: created, or updated only in the settings that differ
//! (see `zori_service::jetstream::ensure_stream`), and deleted by the `Delete` reclaim policy.

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream::Config, ErrorCode};
use zori_service::jetstream::{connect, ensure_stream, JetStreamError, StreamOutcome};

use super::{marker_in, Foreign, Owner, Provisioned, Removed};
use crate::buffer::StreamFill;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("failed to delete stream {stream}: {message}")]
    Delete { stream: String, message: String },
    #[error(transparent)]
    Foreign(#[from] Foreign),
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

    /// Checks the owner marker in the description of a live stream; `Ok(true)` when the
    /// stream exists unmarked and may be adopted.
    async fn check_owner(&self, stream: &str, owner: Owner<'_>) -> Result<bool, NatsError> {
        match self.stream_config(stream).await? {
            None => Ok(false),
            Some(live) => Ok(owner.check(
                &format!("stream {stream}"),
                live.description.as_deref().and_then(marker_in),
            )?),
        }
    }

    /// Creates the stream or updates what differs from `desired` (whose description carries
    /// the owner marker); an existing stream is used only when it carries `owner`'s marker.
    pub async fn ensure(
        &self,
        desired: Config,
        owner: Owner<'_>,
    ) -> Result<Provisioned, NatsError> {
        let stamp = self.check_owner(&desired.name, owner).await?;
        let outcome = ensure_stream(&self.js, desired.clone()).await?;
        if stamp {
            let name = desired.name.clone();
            self.js
                .update_stream(desired)
                .await
                .map_err(|e| JetStreamError::Update {
                    stream: name,
                    message: format!("stamping the owner marker: {e}"),
                })?;
        }
        Ok(match outcome {
            StreamOutcome::Created => Provisioned::Created,
            StreamOutcome::Updated(changed) => {
                Provisioned::Updated(changed.into_iter().map(str::to_owned).collect())
            }
            StreamOutcome::Unchanged => Provisioned::Unchanged,
        })
    }

    /// Deletes the stream and its messages; a stream already gone is fine, a stream marked
    /// for another project is refused.
    pub async fn delete(&self, stream: &str, owner: Owner<'_>) -> Result<Removed, NatsError> {
        self.check_owner(stream, owner).await?;
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

    /// What a stream holds against its limits, if it exists.
    pub async fn fill(&self, stream: &str) -> Result<Option<StreamFill>, NatsError> {
        match self.js.get_stream(stream).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| JetStreamError::Read {
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })?;
                Ok(Some(StreamFill {
                    bytes: info.state.bytes,
                    messages: info.state.messages,
                    max_bytes: info.config.max_bytes,
                    max_messages: info.config.max_messages,
                }))
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
