//! Prometheus metrics of ingest. Every series the hot path touches is created up front and kept
//! as a handle (an atomic), so recording a request takes no lock.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::http::StatusCode;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, MetricType},
    registry::Registry,
};

/// The routes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Ingest,
    Identify,
    Batch,
    Tracker,
    Preflight,
    Health,
    Other,
}

impl Route {
    const ALL: [Route; 7] = [
        Route::Ingest,
        Route::Identify,
        Route::Batch,
        Route::Tracker,
        Route::Preflight,
        Route::Health,
        Route::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Route::Ingest => "ingest",
            Route::Identify => "identify",
            Route::Batch => "batch",
            Route::Tracker => "tracker",
            Route::Preflight => "preflight",
            Route::Health => "health",
            Route::Other => "other",
        }
    }
}

/// Why an event (or a request, when its events are unknown) was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    MissingKey,
    InvalidKey,
    OriginNotAllowed,
    BodyTooLarge,
    UnreadableBody,
    BatchTooLarge,
    MalformedJson,
    HostNotAllowed,
    Invalid,
    RateLimited,
    Unavailable,
    InvalidToken,
    Unverified,
    Overloaded,
}

impl Reason {
    const ALL: [Reason; 14] = [
        Reason::MissingKey,
        Reason::InvalidKey,
        Reason::OriginNotAllowed,
        Reason::BodyTooLarge,
        Reason::UnreadableBody,
        Reason::BatchTooLarge,
        Reason::MalformedJson,
        Reason::HostNotAllowed,
        Reason::Invalid,
        Reason::RateLimited,
        Reason::Unavailable,
        Reason::InvalidToken,
        Reason::Unverified,
        Reason::Overloaded,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reason::MissingKey => "missing_key",
            Reason::InvalidKey => "invalid_key",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::BodyTooLarge => "body_too_large",
            Reason::UnreadableBody => "unreadable_body",
            Reason::BatchTooLarge => "batch_too_large",
            Reason::MalformedJson => "malformed_json",
            Reason::HostNotAllowed => "host_not_allowed",
            Reason::Invalid => "invalid",
            Reason::RateLimited => "rate_limited",
            Reason::Unavailable => "unavailable",
            Reason::InvalidToken => "invalid_token",
            Reason::Unverified => "unverified_identity",
            Reason::Overloaded => "overloaded",
        }
    }
}

/// The statuses ingest answers with; anything else is counted through the family's lock.
const STATUSES: [u16; 13] = [
    200, 204, 304, 400, 401, 403, 404, 405, 413, 415, 429, 500, 503,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Handles to every metric ingest records.
#[derive(Clone)]
pub(crate) struct Metrics {
    requests_family: Family<RequestLabels, Counter>,
    /// `[route][status index]`, pre-created.
    requests: Arc<[[Counter; STATUSES.len()]; Route::ALL.len()]>,
    accepted_events: Counter,
    accepted_identifies: Counter,
    rejected: Arc<[Counter; Reason::ALL.len()]>,
    pub(crate) publishes: Counter,
    pub(crate) publish_duplicates: Counter,
    pub(crate) publish_failures: Counter,
    pub(crate) publish_latency: AtomicHistogram,
    pub(crate) rate_limited: Counter,
    pub(crate) rate_limiter_errors: Counter,
    pub(crate) bot_events: Counter,
    pub(crate) unverified_identifies: Counter,
    pub(crate) body_bytes: Counter,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let requests_family = Family::<RequestLabels, Counter>::default();
        let requests = Arc::new(Route::ALL.map(|route| {
            STATUSES.map(|status| {
                requests_family
                    .get_or_create(&RequestLabels {
                        route: route.as_str(),
                        status,
                    })
                    .clone()
            })
        }));
        let accepted = Family::<KindLabels, Counter>::default();
        let accepted_events = accepted
            .get_or_create(&KindLabels { kind: "event" })
            .clone();
        let accepted_identifies = accepted
            .get_or_create(&KindLabels { kind: "identify" })
            .clone();
        let rejected_family = Family::<ReasonLabels, Counter>::default();
        let rejected = Arc::new(Reason::ALL.map(|reason| {
            rejected_family
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .clone()
        }));

        let metrics = Self {
            requests_family: requests_family.clone(),
            requests,
            accepted_events,
            accepted_identifies,
            rejected,
            publishes: Counter::default(),
            publish_duplicates: Counter::default(),
            publish_failures: Counter::default(),
            publish_latency: AtomicHistogram::new(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            rate_limited: Counter::default(),
            rate_limiter_errors: Counter::default(),
            bot_events: Counter::default(),
            unverified_identifies: Counter::default(),
            body_bytes: Counter::default(),
        };

        let r = registry.sub_registry_with_prefix("zori_ingest");
        r.register(
            "requests",
            "HTTP requests answered, by route and status",
            requests_family,
        );
        r.register(
            "accepted",
            "Events and identifies acknowledged by JetStream (duplicates included)",
            accepted,
        );
        r.register(
            "rejected",
            "Events not accepted, by reason (one per request when its events are unknown)",
            rejected_family,
        );
        r.register(
            "publishes",
            "Messages published to JetStream and acknowledged",
            metrics.publishes.clone(),
        );
        r.register(
            "publish_duplicates",
            "Acknowledged publishes JetStream recognised as duplicates of an earlier id",
            metrics.publish_duplicates.clone(),
        );
        r.register(
            "publish_failures",
            "Publishes that failed or were not acknowledged in time",
            metrics.publish_failures.clone(),
        );
        r.register(
            "publish_latency_seconds",
            "Time from publish to JetStream acknowledgement",
            metrics.publish_latency.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused with 429",
            metrics.rate_limited.clone(),
        );
        r.register(
            "rate_limiter_errors",
            "Rate-limit checks that failed (Redis unavailable); the request was let through",
            metrics.rate_limiter_errors.clone(),
        );
        r.register(
            "bot_events",
            "Events from bots dropped because --bot-traffic is drop",
            metrics.bot_events.clone(),
        );
        r.register(
            "unverified_identifies",
            "Identifies accepted without a valid signature (--identity-verification ignore): kept \
             apart, linking nothing",
            metrics.unverified_identifies.clone(),
        );
        r.register(
            "body_bytes",
            "Request body bytes received on the ingest routes",
            metrics.body_bytes.clone(),
        );
        metrics
    }

    pub(crate) fn request(&self, route: Route, status: StatusCode) {
        let code = status.as_u16();
        match STATUSES.iter().position(|s| *s == code) {
            Some(i) => {
                self.requests[route as usize][i].inc();
            }
            None => {
                self.requests_family
                    .get_or_create(&RequestLabels {
                        route: route.as_str(),
                        status: code,
                    })
                    .inc();
            }
        }
    }

    pub(crate) fn rejected(&self, reason: Reason, count: u64) {
        self.rejected[reason as usize].inc_by(count);
    }

    pub(crate) fn accepted_events(&self, count: u64) {
        self.accepted_events.inc_by(count);
    }

    pub(crate) fn accepted_identifies(&self, count: u64) {
        self.accepted_identifies.inc_by(count);
    }
}

/// A histogram made of atomics: `observe` takes no lock (the library's histogram does).
#[derive(Clone)]
pub(crate) struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

struct HistogramInner {
    /// Upper bounds, ascending; an implicit `+Inf` bucket follows.
    bounds: Box<[f64]>,
    /// One counter per bound plus `+Inf` (not cumulative).
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum in nanoseconds.
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn new(bounds: &[f64]) -> Self {
        Self {
            inner: Arc::new(HistogramInner {
                bounds: bounds.into(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let inner = &self.inner;
        let bucket = inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(inner.bounds.len());
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicHistogram")
            .field("bounds", &self.inner.bounds)
            .field("count", &self.inner.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let inner = &self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // Count as the sum of the buckets, so the encoded series stay consistent with each
        // other even while observations race with the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn label_tables_follow_the_enums() {
        for (i, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, i, "{route:?}");
        }
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
    }

    #[test]
    fn encodes_every_metric() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.request(Route::Ingest, StatusCode::OK);
        metrics.request(Route::Ingest, StatusCode::IM_A_TEAPOT);
        metrics.rejected(Reason::RateLimited, 3);
        metrics.accepted_events(2);
        metrics.publish_latency.observe(Duration::from_millis(3));
        metrics.publish_latency.observe(Duration::from_secs(10));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        for line in [
            "zori_ingest_requests_total{route=\"ingest\",status=\"200\"} 1",
            "zori_ingest_requests_total{route=\"ingest\",status=\"418\"} 1",
            "zori_ingest_rejected_total{reason=\"rate_limited\"} 3",
            "zori_ingest_accepted_total{kind=\"event\"} 2",
            "zori_ingest_publish_latency_seconds_bucket{le=\"0.005\"} 1",
            "zori_ingest_publish_latency_seconds_bucket{le=\"+Inf\"} 2",
            "zori_ingest_publish_latency_seconds_count 2",
            "zori_ingest_bot_events_total 0",
            "zori_ingest_unverified_identifies_total 0",
            "zori_ingest_body_bytes_total 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
