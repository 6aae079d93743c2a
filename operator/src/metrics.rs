//! Prometheus metrics of the operator: reconciles, failures by reason, duration, leadership.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use zori_service::ops::Readiness;

type Labels = Vec<(String, String)>;

/// The operator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    reconciles: Counter,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under the `zori_operator_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            leader: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("zori_operator");
        sub.register("reconciles", "Reconciles run", metrics.reconciles.clone());
        sub.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            metrics.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.duration.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica holds the leader Lease",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Records one reconcile; `failure` is the reason label of a failed one.
    pub fn observe(&self, took: Duration, failure: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                .inc();
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }
}

/// `/readyz`: ready once started (a standby replica waiting for the Lease is ready too).
#[derive(Debug, Default, Clone)]
pub struct Started(Arc<AtomicBool>);

impl Started {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Readiness for Started {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let started = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if started {
                Ok(())
            } else {
                Err("the operator is starting".to_owned())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn encodes_the_operator_metrics() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe(Duration::from_millis(20), None);
        metrics.observe(Duration::from_millis(40), Some("ApiError"));
        metrics.set_leader(true);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("zori_operator_reconciles_total 2"), "{text}");
        assert!(
            text.contains("zori_operator_reconcile_failures_total{reason=\"ApiError\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("zori_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("zori_operator_leader 1"), "{text}");
    }
}
