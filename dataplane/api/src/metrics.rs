//! Prometheus metrics of the consumer and the reports (names prefixed `zori_api_`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `clickhouse_events`, `visitors`, `touches`, `visitor_days`, `users`, `identities`.
    pub table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `acked`, `nacked`, `dead_lettered`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct ApiMetrics {
    /// Batches committed to both stores.
    pub batches: Counter,
    /// Batch writes that failed (the batch is then retried or split).
    pub batch_failures: Counter,
    /// Rows written, per table (upserts count rows actually changed).
    pub rows_written: Family<TableLabels, Counter>,
    /// PostgreSQL upsert rows left out because the database already held them or better.
    pub rows_skipped: Family<TableLabels, Counter>,
    /// Stream messages by what became of them.
    pub messages: Family<OutcomeLabels, Counter>,
    /// Messages published to the dead letter subject.
    pub dead_letters: Counter,
    /// Time from fetch to acknowledgement of a batch.
    pub batch_duration: Histogram,
    /// Messages in the stream not yet delivered to the consumer (`num_pending`).
    pub consumer_lag: Gauge,
    /// Messages delivered but not yet acknowledged (`num_ack_pending`).
    pub consumer_ack_pending: Gauge,
    /// Bytes the tenant stream holds (with work-queue retention: what waits for the consumer).
    pub stream_bytes: Gauge,
    /// The stream's byte limit; at `stream_bytes` = `stream_max_bytes` ingest answers 503.
    pub stream_max_bytes: Gauge,
    /// Report requests by route and status.
    pub report_requests: Family<RouteLabels, Counter>,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            batches: Counter::default(),
            batch_failures: Counter::default(),
            rows_written: Family::default(),
            rows_skipped: Family::default(),
            messages: Family::default(),
            dead_letters: Counter::default(),
            batch_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            consumer_lag: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            stream_bytes: Gauge::default(),
            stream_max_bytes: Gauge::default(),
            report_requests: Family::default(),
        };
        registry.register(
            "zori_api_batches",
            "Batches committed to ClickHouse and PostgreSQL and acknowledged",
            metrics.batches.clone(),
        );
        registry.register(
            "zori_api_batch_failures",
            "Batch writes that failed and were retried, split or redelivered",
            metrics.batch_failures.clone(),
        );
        registry.register(
            "zori_api_rows_written",
            "Rows written per table",
            metrics.rows_written.clone(),
        );
        registry.register(
            "zori_api_rows_skipped",
            "PostgreSQL upsert rows left out per table: this process had committed the same or better",
            metrics.rows_skipped.clone(),
        );
        registry.register(
            "zori_api_messages",
            "Stream messages by outcome",
            metrics.messages.clone(),
        );
        registry.register(
            "zori_api_dead_letters",
            "Messages moved to the dead letter subject",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "zori_api_batch_duration_seconds",
            "Time to write and acknowledge one batch",
            metrics.batch_duration.clone(),
        );
        registry.register(
            "zori_api_consumer_lag_messages",
            "Messages in the stream not yet delivered to the consumer",
            metrics.consumer_lag.clone(),
        );
        registry.register(
            "zori_api_consumer_ack_pending_messages",
            "Messages delivered to the consumer and not yet acknowledged",
            metrics.consumer_ack_pending.clone(),
        );
        registry.register(
            "zori_api_stream_bytes",
            "Bytes held by the tenant stream (with workqueue retention: not yet written and acknowledged)",
            metrics.stream_bytes.clone(),
        );
        registry.register(
            "zori_api_stream_max_bytes",
            "Byte limit of the tenant stream; when reached, ingest answers 503",
            metrics.stream_max_bytes.clone(),
        );
        registry.register(
            "zori_api_report_requests",
            "Reports API requests by route and status",
            metrics.report_requests.clone(),
        );
        metrics
    }

    pub fn message_outcome(&self, outcome: &'static str, n: u64) {
        self.messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    pub fn rows(&self, table: &'static str, n: u64) {
        if n > 0 {
            self.rows_written
                .get_or_create(&TableLabels { table })
                .inc_by(n);
        }
    }

    pub fn skipped(&self, table: &'static str, n: u64) {
        if n > 0 {
            self.rows_skipped
                .get_or_create(&TableLabels { table })
                .inc_by(n);
        }
    }
}
