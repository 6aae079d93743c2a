//! Hands accepted messages to the tenant's JetStream stream and waits for the acknowledgement:
//! an answered 2xx means the stream has stored the message. `Nats-Msg-Id` = message id, so a
//! client retry within the duplicate window is stored once (and acknowledged as a duplicate).

use std::time::{Duration, Instant};

use async_nats::{
    header::{HeaderMap, NATS_MESSAGE_ID},
    jetstream::{
        self,
        context::{PublishAckFuture, PublishErrorKind},
    },
    Subject,
};
use bytes::Bytes;
use futures::future::try_join_all;
use zori_core::event::StreamMessage;

use crate::metrics::Metrics;

/// Typical size of an encoded event: the buffer rarely has to grow.
const ENCODE_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("failed to encode message {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("stream {stream} does not exist or does not take subject {subject}")]
    StreamNotFound { stream: String, subject: String },
    #[error("stream {stream} did not acknowledge within {timeout:?}")]
    Timeout { stream: String, timeout: Duration },
    #[error("failed to publish to stream {stream}: {message}")]
    Failed { stream: String, message: String },
}

#[derive(Clone)]
pub(crate) struct Publisher {
    js: jetstream::Context,
    subject: Subject,
    stream: String,
    timeout: Duration,
    metrics: Metrics,
}

impl Publisher {
    pub(crate) fn new(
        mut js: jetstream::Context,
        subject: &str,
        stream: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        js.set_timeout(timeout);
        Self {
            js,
            subject: Subject::from(subject),
            stream: stream.to_owned(),
            timeout,
            metrics,
        }
    }

    /// Publishes every message (all sent before any acknowledgement is awaited) and returns
    /// once all are acknowledged, or the first failure. Everything happens within the publish
    /// timeout.
    pub(crate) async fn publish_all(&self, messages: &[StreamMessage]) -> Result<(), PublishError> {
        if messages.is_empty() {
            return Ok(());
        }
        // Encode first: nothing is sent if a message cannot be encoded.
        let mut encoded = Vec::with_capacity(messages.len());
        for message in messages {
            let mut payload = Vec::with_capacity(ENCODE_CAPACITY);
            serde_json::to_writer(&mut payload, message).map_err(|source| {
                PublishError::Encode {
                    id: message.id().to_owned(),
                    source,
                }
            })?;
            encoded.push((message.id(), Bytes::from(payload)));
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.send_and_confirm(encoded)).await;
        let result = match result {
            Ok(Ok(duplicates)) => {
                self.metrics.publishes.inc_by(messages.len() as u64);
                self.metrics.publish_duplicates.inc_by(duplicates);
                Ok(())
            }
            Ok(Err(error)) => Err(self.classify(error)),
            Err(_) => Err(PublishError::Timeout {
                stream: self.stream.clone(),
                timeout: self.timeout,
            }),
        };
        self.metrics.publish_latency.observe(started.elapsed());
        if result.is_err() {
            self.metrics.publish_failures.inc();
        }
        result
    }

    /// Returns how many acknowledgements were duplicates.
    async fn send_and_confirm(
        &self,
        encoded: Vec<(&str, Bytes)>,
    ) -> Result<u64, jetstream::context::PublishError> {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(encoded.len());
        for (id, payload) in encoded {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, id);
            acks.push(
                self.js
                    .publish_with_headers(self.subject.clone(), headers, payload)
                    .await?,
            );
        }
        let acks = try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await?;
        Ok(acks.iter().filter(|ack| ack.duplicate).count() as u64)
    }

    fn classify(&self, error: jetstream::context::PublishError) -> PublishError {
        match error.kind() {
            PublishErrorKind::StreamNotFound => PublishError::StreamNotFound {
                stream: self.stream.clone(),
                subject: self.subject.to_string(),
            },
            PublishErrorKind::TimedOut => PublishError::Timeout {
                stream: self.stream.clone(),
                timeout: self.timeout,
            },
            _ => PublishError::Failed {
                stream: self.stream.clone(),
                message: error.to_string(),
            },
        }
    }
}
