//! The durable JetStream pull consumer that moves the tenant's ingress subject into ClickHouse
//! and PostgreSQL.
//!
//! Per batch (up to `--batch-size` messages or `--batch-wait`): decode, one ClickHouse insert,
//! one PostgreSQL transaction, then acknowledge every message. Nothing is acknowledged before
//! both stores committed, and every write is idempotent, so a crash at any point only causes a
//! redelivery that changes nothing. Up to `--batches-in-flight` batches are written at once
//! while the next one is fetched: a batch waits mostly on the stores' round trips, and the
//! writes do not depend on order (the earliest event wins whatever order batches commit in;
//! upserts take their row locks in key order, so concurrent batches wait, never deadlock, and a
//! batch failing with healthy stores is tried once more before it is split).
//!
//! Failures (zori-spec §9.10: never a poison loop, never silent loss):
//! - a message that cannot be decoded goes to the dead letter subject at once, then is acked;
//! - when a write fails and a backend does not answer a ping, it is an outage, not a bad
//!   message: the batch is held (its ack deadline extended) and retried with backoff until the
//!   backends are back, so an outage burns no deliveries;
//! - when a batch fails with healthy backends, it is retried in halves down to single messages
//!   (bisection: a few writes, never thousands of single-row inserts); a message failing alone
//!   is NAKed with a growing delay, and goes to the dead letter subject on its
//!   [`DEAD_LETTER_AFTER`]-th delivery;
//! - at shutdown during an outage the held messages are NAKed for immediate redelivery, except
//!   one on the last delivery `--max-deliver` allows, which goes to the dead letter subject
//!   (a NAK would let the stream drop it).

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::{
    jetstream::{
        self,
        consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer},
        context::Publish,
        AckKind, Message,
    },
    HeaderMap,
};
use futures::{stream::FuturesUnordered, StreamExt};
use sqlx::PgPool;
use tokio::sync::watch;
use zori_core::event::{StreamMessage, Subjects};
use zori_service::jetstream::{ensure_tenant_stream, JetStreamError, StreamOutcome};

use crate::{
    batch,
    ch::{ChError, EventStore},
    config::Settings,
    known::{Known, Skipped},
    metrics::ApiMetrics,
    pg::{self, PgError},
    reconcile::{self, RollupLock},
    rollup,
};

/// A message failing on its own while the backends are healthy is dead-lettered on this
/// delivery.
pub const DEAD_LETTER_AFTER: i64 = 3;
/// How long a backend may take to answer the health ping.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How often consumer lag is read from the server.
const LAG_REFRESH: Duration = Duration::from_secs(5);
/// Longest reason kept in the dead letter header.
const MAX_REASON_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Stream(#[from] JetStreamError),
    #[error(
        "stream {stream} does not exist; create it (the operator does) or pass --create-stream"
    )]
    MissingStream { stream: String },
    #[error("failed to read stream {stream}: {message}")]
    ReadStream { stream: String, message: String },
    #[error("failed to create or update consumer {consumer} on stream {stream}: {message}")]
    CreateConsumer {
        stream: String,
        consumer: String,
        message: String,
    },
    /// A batch write failed in ClickHouse.
    #[error(transparent)]
    ClickHouse(#[from] ChError),
    /// A batch write failed in PostgreSQL.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// The batch's visitor-day rollup rows could not be written.
    #[error(transparent)]
    Rollup(#[from] crate::rollup::RollupError),
    /// The rollup lock could not be taken.
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::ReconcileError),
}

/// The two stores a batch goes to.
#[derive(Clone)]
pub struct Backends {
    pub events: EventStore,
    pub pool: PgPool,
    /// What this process committed to PostgreSQL: upserts that cannot change a row are left
    /// out.
    pub known: Arc<Known>,
    /// Guards the event-count rollup against half-done inserts during its audit (`None` where
    /// there are no rollups: a ClickHouse cluster).
    pub rollup_lock: Option<RollupLock>,
}

/// Rows written by one batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchWritten {
    pub events: u64,
    pub postgres: pg::Written,
    /// PostgreSQL rows left out because the database already held them (or better).
    pub skipped: Skipped,
}

impl Backends {
    /// Writes decoded messages to ClickHouse and, in one transaction, to PostgreSQL, both at
    /// once. Both writes are idempotent, so when one fails the whole batch is simply retried.
    /// `look_up`: an earlier attempt may have stored part of the batch (a message was delivered
    /// before, or this process's own attempt failed): ClickHouse is asked which events it holds
    /// already, and the days are audited at the next round.
    pub async fn write<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a StreamMessage>,
        look_up: bool,
    ) -> Result<BatchWritten, ConsumerError> {
        let mut plan = batch::plan(messages);
        let skipped = self.known.prune(&mut plan);
        // A ClickHouse failure ends the batch at once (the PostgreSQL transaction, dropped
        // before its commit, rolls back). A PostgreSQL failure waits for the ClickHouse insert
        // to end first: an insert cancelled while its rows are on the wire may still commit,
        // and the retried batch's look-up of the events already stored must see it (the
        // rollup counts each inserted event).
        let (inserted_tx, inserted_rx) = tokio::sync::oneshot::channel::<()>();
        let ((), postgres) = tokio::try_join!(
            async {
                let insert = self.events.insert(&plan.events, look_up);
                let result = match &self.rollup_lock {
                    Some(lock) => {
                        let days = reconcile::days_of(plan.events.iter().map(|e| e.occurred_at));
                        lock.inserting(days, insert, |outcome| reconcile::suspect(outcome, look_up))
                            .await
                            .map_err(ConsumerError::from)
                            .and_then(|r| r.map(|_| ()).map_err(ConsumerError::from))
                    }
                    None => insert.await.map(|_| ()).map_err(ConsumerError::from),
                };
                let _ = inserted_tx.send(());
                result
            },
            async {
                let written = async {
                    let written = pg::write_batch(&self.pool, &plan).await?;
                    // The visitor rollup takes the first touch as PostgreSQL has it after this
                    // batch; a set of visitor ids, so a retried batch adds nothing twice. Only
                    // then is the batch remembered as committed: a retry after a failed rollup
                    // insert must write its visitor days again.
                    if self.events.has_rollups() {
                        rollup::write_visitor_days(&self.pool, &self.events, &plan.visitor_days)
                            .await?;
                    }
                    self.known.committed(&plan);
                    Ok::<_, ConsumerError>(written)
                }
                .await;
                if written.is_err() {
                    let _ = inserted_rx.await;
                }
                written
            },
        )?;
        Ok(BatchWritten {
            events: plan.events.len() as u64,
            postgres,
            skipped,
        })
    }

    /// `Ok` when both stores answer.
    pub async fn ping(&self) -> Result<(), String> {
        let (ch, pg) = tokio::join!(
            self.events.ping(PING_TIMEOUT),
            pg::ping(&self.pool, PING_TIMEOUT)
        );
        pg.and(ch)
    }
}

/// Creates (with `--create-stream`) or checks the stream, then creates or updates the durable
/// consumer.
pub async fn setup(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<PullConsumer, ConsumerError> {
    let subjects = Subjects::for_tenant(&settings.tenant_id);
    if settings.create_stream {
        match ensure_tenant_stream(
            js,
            &subjects.stream,
            vec![subjects.wildcard.clone()],
            &settings.stream_limits,
        )
        .await?
        {
            StreamOutcome::Created => tracing::info!(stream = %subjects.stream, "created stream"),
            StreamOutcome::Updated(changed) => {
                tracing::info!(stream = %subjects.stream, ?changed, "updated stream")
            }
            StreamOutcome::Unchanged => {}
        }
    }
    let stream = match js.get_stream(&subjects.stream).await {
        Ok(stream) => stream,
        Err(error) => {
            let not_found = matches!(
                error.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            return Err(if not_found {
                ConsumerError::MissingStream {
                    stream: subjects.stream,
                }
            } else {
                ConsumerError::ReadStream {
                    stream: subjects.stream,
                    message: error.to_string(),
                }
            });
        }
    };
    let config = pull::Config {
        durable_name: Some(settings.consumer_name.clone()),
        description: Some("zori-api: events and identities into ClickHouse and PostgreSQL".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        filter_subject: subjects.ingress.clone(),
        // Room for every batch in flight, the one being fetched, and redeliveries.
        max_ack_pending: i64::try_from(
            settings
                .batch_size
                .saturating_mul(settings.batches_in_flight.saturating_add(1))
                .saturating_mul(2),
        )
        .unwrap_or(i64::MAX)
        .max(20_000),
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| ConsumerError::CreateConsumer {
            message: match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(js)
                    if [
                        jetstream::ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE,
                        jetstream::ErrorCode::CONSUMER_WQ_MULTIPLE_UNFILTERED,
                    ]
                    .contains(&js.error_code()) =>
                {
                    format!(
                        "{e}; a workqueue stream gives each message to one consumer only: remove \
                         the other consumer on {} (`nats consumer ls {}`), and give every zori-api \
                         replica the same --consumer-name",
                        subjects.ingress, subjects.stream
                    )
                }
                _ => e.to_string(),
            },
            stream: subjects.stream.clone(),
            consumer: settings.consumer_name.clone(),
        })
}

/// Decodes one payload; `Err` carries the reason it is unusable.
pub fn decode(payload: &[u8]) -> Result<StreamMessage, String> {
    let message = crate::wire::stream_message(payload)
        .map_err(|e| format!("undecodable stream message: {e}"))?;
    let (kind, id, visitor) = match &message {
        StreamMessage::Event(e) => {
            if e.name.trim().is_empty() {
                return Err("invalid event: empty name".to_owned());
            }
            ("event", &e.id, &e.visitor_id)
        }
        StreamMessage::Identify(i) => ("identify", &i.id, &i.visitor_id),
    };
    if id.trim().is_empty() {
        return Err(format!("invalid {kind}: empty id"));
    }
    if visitor.trim().is_empty() {
        return Err(format!("invalid {kind}: empty visitor_id"));
    }
    Ok(message)
}

/// NAK delay for a message on its `delivered`-th delivery: 2 s, 4 s, 8 s, … up to 60 s.
pub fn nak_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 6) - 1).unwrap_or(0);
    Duration::from_secs(2u64.saturating_mul(1 << exponent).min(60))
}

/// Header values must be one line of visible text.
fn header_value(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    zori_core::text::truncate_bytes(one_line.trim(), MAX_REASON_LEN).to_owned()
}

fn delivered(message: &Message) -> i64 {
    message.info().map(|i| i.delivered).unwrap_or(1)
}

/// Resolves once shutdown was asked for.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        // The sender is gone: nobody can ask for shutdown any more, so this never resolves.
        std::future::pending::<()>().await;
    }
}

fn is_stopped(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow()
}

/// What became of a whole-batch write.
enum Whole {
    /// Written and acknowledged.
    Written,
    /// The backends answer, yet the batch fails: some message in it is bad.
    Failing,
    /// Shutdown came while a backend was down.
    Stopped,
}

pub struct Consumer {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub consumer: PullConsumer,
    pub subjects: Subjects,
    pub backends: Backends,
    pub metrics: ApiMetrics,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    /// Most batches written at once.
    pub batches_in_flight: usize,
}

impl Consumer {
    /// Fetches and writes batches until shutdown; the batches in flight at shutdown (and one
    /// already fetched) are finished, committed and acknowledged before this returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let lag = tokio::spawn(refresh_lag(
            self.consumer.clone(),
            self.js.clone(),
            self.subjects.stream.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let this = &self;
        let fetch_failures = AtomicU32::new(0);
        let mut in_flight = FuturesUnordered::new();
        // The fetch in progress: kept across loop turns, never dropped half-way (messages it
        // already received would wait out the ack deadline).
        let mut fetching = None;
        loop {
            if fetching.is_none()
                && in_flight.len() < self.batches_in_flight.max(1)
                && !is_stopped(&shutdown)
            {
                let mut rx = shutdown.clone();
                let failures = &fetch_failures;
                fetching = Some(Box::pin(async move {
                    match this.fetch(&mut rx).await {
                        Ok(messages) => {
                            failures.store(0, Ordering::Relaxed);
                            messages
                        }
                        Err(error) => {
                            this.back_off(failures, &error, &mut rx).await;
                            Vec::new()
                        }
                    }
                }));
            }
            tokio::select! {
                fetched = async {
                    match fetching.as_mut() {
                        Some(fetch) => fetch.await,
                        None => std::future::pending().await,
                    }
                }, if fetching.is_some() => {
                    fetching = None;
                    // A batch fetched as shutdown came is still written, not left to
                    // redelivery.
                    if !fetched.is_empty() {
                        let mut rx = shutdown.clone();
                        in_flight.push(async move { this.process(fetched, &mut rx).await });
                    }
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                () = stopped(&mut shutdown), if fetching.is_none() && in_flight.is_empty() => break,
            }
        }
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "failed to flush acknowledgements to NATS");
        }
        lag.abort();
        tracing::info!("consumer stopped");
    }

    async fn back_off(
        &self,
        failures: &AtomicU32,
        error: &async_nats::Error,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let failures = failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let pause = Duration::from_millis(250 * u64::from(failures.min(20)));
        tracing::warn!(%error, retry_in = ?pause, "failed to fetch from the stream");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopped(shutdown) => {}
        }
    }

    /// Up to `batch_size` messages, waiting at most `batch_wait`. On shutdown, stops waiting and
    /// keeps only what already arrived.
    async fn fetch(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Vec<Message>, async_nats::Error> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(self.batch_size)
            .expires(self.batch_wait)
            .messages()
            .await?;
        let mut out = Vec::new();
        loop {
            tokio::select! {
                biased;
                next = batch.next() => match next {
                    Some(Ok(message)) => out.push(message),
                    Some(Err(error)) => {
                        if out.is_empty() {
                            return Err(error);
                        }
                        tracing::warn!(%error, "pull request ended early");
                        break;
                    }
                    None => break,
                },
                () = stopped(shutdown) => {
                    // Take what is already buffered, without waiting for more.
                    while let Ok(Some(Ok(message))) =
                        tokio::time::timeout(Duration::from_millis(50), batch.next()).await
                    {
                        out.push(message);
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn process(&self, messages: Vec<Message>, shutdown: &mut watch::Receiver<bool>) {
        let started = Instant::now();
        let mut items: Vec<(Message, StreamMessage)> = Vec::with_capacity(messages.len());
        for message in messages {
            match decode(&message.payload) {
                Ok(decoded) => items.push((message, decoded)),
                Err(reason) => self.dead_letter(&message, &reason).await,
            }
        }
        if items.is_empty() {
            return;
        }
        match self.write_whole(&items, shutdown).await {
            Whole::Written => {}
            // Bounded work even during shutdown: it only waits while a backend is down.
            Whole::Failing => self.isolate(items, shutdown).await,
            Whole::Stopped => {
                // Shutting down during an outage: hand the batch back for immediate redelivery.
                for (message, _) in &items {
                    self.hand_back(message).await;
                }
                self.flush().await;
            }
        }
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Writes the batch; holds it through a backend outage.
    async fn write_whole(
        &self,
        items: &[(Message, StreamMessage)],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Whole {
        let mut retried = false;
        let redelivered = items.iter().any(|(message, _)| delivered(message) > 1);
        // After a failed attempt, part of the batch may be stored: look up from then on.
        let mut look_up = redelivered;
        loop {
            match self
                .backends
                .write(items.iter().map(|(_, m)| m), look_up)
                .await
            {
                Ok(written) => {
                    self.record(&written);
                    for (message, _) in items {
                        self.ack(message).await;
                    }
                    self.flush().await;
                    self.metrics.batches.inc();
                    self.metrics.message_outcome("acked", items.len() as u64);
                    return Whole::Written;
                }
                Err(error) => {
                    look_up = true;
                    self.metrics.batch_failures.inc();
                    tracing::warn!(%error, messages = items.len(), "failed to write batch");
                    if self.backends.ping().await.is_ok() {
                        // Once more as a whole first: a conflict with a concurrent batch is
                        // not a bad message.
                        if !retried {
                            retried = true;
                            continue;
                        }
                        return Whole::Failing;
                    }
                    let held: Vec<&Message> = items.iter().map(|(m, _)| m).collect();
                    if !self.wait_for_backends(&held, shutdown).await {
                        return Whole::Stopped;
                    }
                }
            }
        }
    }

    /// Isolates the messages that fail on their own: the batch is retried in halves, down to
    /// single messages (a poison message among 5000 costs about 25 small writes, not 5000
    /// single-row ClickHouse inserts). A message failing alone is NAKed with a growing delay, or
    /// dead-lettered from its third delivery (or its last allowed one).
    async fn isolate(
        &self,
        items: Vec<(Message, StreamMessage)>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let all: Vec<&Message> = items.iter().map(|(m, _)| m).collect();
        let mid = items.len() / 2;
        // Ranges still to write; the top of the stack is written first (in stream order).
        let mut todo: Vec<(usize, usize)> = if items.len() > 1 {
            vec![(mid, items.len()), (0, mid)]
        } else {
            vec![(0, items.len())]
        };
        while let Some((lo, hi)) = todo.pop() {
            let part = &items[lo..hi];
            // Isolating follows a failed write of the whole batch: part of it may be stored.
            let error = match self.backends.write(part.iter().map(|(_, m)| m), true).await {
                Ok(written) => {
                    self.record(&written);
                    for (message, _) in part {
                        self.ack(message).await;
                    }
                    self.metrics.message_outcome("acked", part.len() as u64);
                    continue;
                }
                Err(error) => error,
            };
            self.metrics.batch_failures.inc();
            let healthy = self.backends.ping().await.is_ok();
            if !healthy {
                // An outage, not a bad message: hold everything until the backends are back.
                if self.wait_for_backends(&all, shutdown).await {
                    todo.push((lo, hi));
                    continue;
                }
                self.give_back(&items, (lo, hi), &todo).await;
                return;
            }
            if hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi));
                todo.push((lo, mid));
                continue;
            }
            let message = &part[0].0;
            let delivered = delivered(message);
            if delivered >= DEAD_LETTER_AFTER.min(self.max_deliver) {
                let reason = format!("failed to write message: {error}");
                self.dead_letter(message, &reason).await;
            } else {
                tracing::warn!(%error, delivered, "message failed alone; retrying later");
                self.nak(message, Some(nak_delay(delivered))).await;
            }
        }
        self.flush().await;
    }

    /// On shutdown while holding messages: NAK the current range and every range still to do,
    /// for immediate redelivery.
    async fn give_back(
        &self,
        items: &[(Message, StreamMessage)],
        current: (usize, usize),
        todo: &[(usize, usize)],
    ) {
        for &(l, h) in std::iter::once(&current).chain(todo) {
            for (message, _) in &items[l..h] {
                self.hand_back(message).await;
            }
        }
        self.flush().await;
    }

    /// Returns an unwritten message to the stream for redelivery — or, on the last delivery the
    /// stream allows (where a NAK would drop it), to the dead letter subject.
    async fn hand_back(&self, message: &Message) {
        if delivered(message) >= self.max_deliver {
            self.dead_letter(
                message,
                "backends unavailable at shutdown on the last allowed delivery",
            )
            .await;
        } else {
            self.nak(message, None).await;
        }
    }

    /// Waits with backoff until both backends answer, extending the ack deadline of `held`.
    /// `false` if shutdown came first.
    async fn wait_for_backends(
        &self,
        held: &[&Message],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut pause = Duration::from_secs(1);
        let mut last_progress = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stopped(shutdown) => return false,
            }
            match self.backends.ping().await {
                Ok(()) => {
                    tracing::info!("backends answer again; retrying the held batch");
                    return true;
                }
                Err(reason) => {
                    tracing::warn!(%reason, held = held.len(), "backend unavailable; holding the batch");
                }
            }
            if last_progress.elapsed() >= self.ack_wait / 3 {
                for message in held {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(%error, "failed to extend the ack deadline");
                    }
                }
                self.flush().await;
                last_progress = Instant::now();
            }
            pause = (pause * 2)
                .min(Duration::from_secs(15))
                .min(self.ack_wait / 3);
        }
    }

    fn record(&self, written: &BatchWritten) {
        let m = &self.metrics;
        m.rows("clickhouse_events", written.events);
        m.rows("visitors", written.postgres.visitors);
        m.rows("touches", written.postgres.touches);
        m.rows("visitor_days", written.postgres.visitor_days);
        m.rows("users", written.postgres.users);
        m.rows("identities", written.postgres.identities);
        m.rows(
            "unverified_identifies",
            written.postgres.unverified_identifies,
        );
        m.skipped("visitors", written.skipped.visitors);
        m.skipped("touches", written.skipped.touches);
        m.skipped("visitor_days", written.skipped.visitor_days);
    }

    async fn ack(&self, message: &Message) {
        if let Err(error) = message.ack().await {
            // The write is committed; a lost ack only means an idempotent redelivery.
            tracing::warn!(%error, "failed to acknowledge message");
        }
    }

    async fn nak(&self, message: &Message, delay: Option<Duration>) {
        self.metrics.message_outcome("nacked", 1);
        if let Err(error) = message.ack_with(AckKind::Nak(delay)).await {
            tracing::warn!(%error, "failed to NAK message; it is redelivered after the ack wait");
        }
    }

    async fn flush(&self) {
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "failed to flush acknowledgements to NATS");
        }
    }

    /// Publishes the message to the dead letter subject (idempotently, by stream sequence), then
    /// acks it. If the publish fails the message is NAKed and tried again later.
    async fn dead_letter(&self, message: &Message, reason: &str) {
        let (sequence, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 1));
        let mut headers = HeaderMap::new();
        headers.insert("Zori-Dead-Letter-Reason", header_value(reason).as_str());
        headers.insert("Zori-Original-Subject", message.subject.as_str());
        headers.insert("Zori-Stream-Sequence", sequence.to_string().as_str());
        headers.insert("Zori-Delivered", delivered.to_string().as_str());
        if let Some(original) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        {
            headers.insert("Zori-Original-Msg-Id", original.as_str());
        }
        let publish = Publish::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(format!("dead-{sequence}"));
        let result = match self
            .js
            .send_publish(self.subjects.dead_letter.clone(), publish)
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                tracing::error!(
                    sequence,
                    delivered,
                    %reason,
                    subject = %self.subjects.dead_letter,
                    "moved message to the dead letter subject"
                );
                self.metrics.dead_letters.inc();
                self.metrics.message_outcome("dead_lettered", 1);
                self.ack(message).await;
                self.flush().await;
            }
            Err(error) => {
                tracing::error!(sequence, %error, "failed to publish to the dead letter subject");
                self.nak(message, Some(nak_delay(delivered))).await;
            }
        }
    }
}

/// Keeps the lag gauges and the stream's fill gauges current.
async fn refresh_lag(
    mut consumer: PullConsumer,
    js: jetstream::Context,
    stream: String,
    metrics: ApiMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match js.get_stream(&stream).await {
            Ok(stream) => {
                let info = stream.cached_info();
                metrics
                    .stream_bytes
                    .set(i64::try_from(info.state.bytes).unwrap_or(i64::MAX));
                metrics.stream_max_bytes.set(info.config.max_bytes);
            }
            Err(error) => tracing::debug!(%error, %stream, "failed to read stream info"),
        }
        match consumer.info().await {
            Ok(info) => {
                metrics
                    .consumer_lag
                    .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                metrics
                    .consumer_ack_pending
                    .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
            }
            Err(error) => tracing::debug!(%error, "failed to read consumer info"),
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_REFRESH) => {}
            () = stopped(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_garbage_and_empty_ids() {
        assert!(decode(b"not json").unwrap_err().starts_with("undecodable"));
        assert!(decode(br#"{"kind":"other"}"#).is_err());
        let event = crate::batch::tests::event("", "v", "s", time::OffsetDateTime::UNIX_EPOCH);
        let payload = serde_json::to_vec(&StreamMessage::Event(event)).unwrap();
        assert_eq!(decode(&payload).unwrap_err(), "invalid event: empty id");
        let event = crate::batch::tests::event("e", " ", "s", time::OffsetDateTime::UNIX_EPOCH);
        let payload = serde_json::to_vec(&StreamMessage::Event(event)).unwrap();
        assert_eq!(
            decode(&payload).unwrap_err(),
            "invalid event: empty visitor_id"
        );
        let event = crate::batch::tests::event("e", "v", "s", time::OffsetDateTime::UNIX_EPOCH);
        let payload = serde_json::to_vec(&StreamMessage::Event(event.clone())).unwrap();
        assert_eq!(decode(&payload).unwrap(), StreamMessage::Event(event));
    }

    #[test]
    fn nak_delays_grow_and_cap() {
        let delays: Vec<u64> = (0..10).map(|d| nak_delay(d).as_secs()).collect();
        assert_eq!(delays, [2, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn header_values_are_one_bounded_line() {
        let v = header_value("line one\r\nline two\0");
        assert_eq!(v, "line one  line two");
        assert!(header_value(&"x".repeat(2000)).len() <= MAX_REASON_LEN);
    }
}
