//! How full the tenant stream is: the stream is a work queue whose limits are the buffer for a
//! consumer outage, and ingest answers 503 once it is full. Every reconcile (and so every
//! resync) reads the stream's state, sets the `StreamBuffer` condition and the
//! `zori_operator_stream_buffer_fill_ratio` gauge, so that a stopped or slow consumer is seen
//! before the site's events are refused.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::status::{reasons, types, ConditionStatus, Observation};

/// Above this share of `max_bytes` or `max_messages`, `StreamBuffer` turns `False`
/// (`BufferFilling`).
pub const WARN_AT: f64 = 0.8;
/// From this share on, the project is looked at again after [`crate::reconcile::BUFFER_CHECK`]
/// rather than at the resync, so the condition follows a filling (or draining) buffer.
pub const WATCH_CLOSELY_AT: f64 = 0.4;

/// What the stream holds and may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFill {
    pub bytes: u64,
    pub messages: u64,
    /// `-1` (or `0`): no limit.
    pub max_bytes: i64,
    pub max_messages: i64,
}

impl StreamFill {
    /// The fuller of bytes and messages against their limits, from 0 (empty, or no limit) to 1.
    pub fn ratio(&self) -> f64 {
        let share = |held: u64, max: i64| {
            if max > 0 {
                (held as f64 / max as f64).min(1.0)
            } else {
                0.0
            }
        };
        share(self.bytes, self.max_bytes).max(share(self.messages, self.max_messages))
    }
}

/// The condition for a stream that holds `fill`. Its message names the fill in whole tens of
/// percent, so a reconcile writes the status only when the fill crosses such a step.
pub fn observation(stream: &str, fill: &StreamFill) -> Observation {
    let ratio = fill.ratio();
    let tens = ((ratio * 10.0).floor() as u32).min(10) * 10;
    let limits = match (fill.max_bytes > 0, fill.max_messages > 0) {
        (true, true) => format!(
            "max_bytes {} and max_messages {}",
            fill.max_bytes, fill.max_messages
        ),
        (true, false) => format!("max_bytes {}", fill.max_bytes),
        (false, true) => format!("max_messages {}", fill.max_messages),
        (false, false) => {
            return Observation::ok(
                types::STREAM_BUFFER,
                reasons::BUFFER_AVAILABLE,
                format!("stream {stream} has neither max_bytes nor max_messages"),
            )
        }
    };
    if ratio >= WARN_AT {
        let full = if ratio >= 1.0 {
            "full: ingest answers 503 (Retry-After) until zori-api drains it".to_owned()
        } else {
            format!("at least {tens} % full")
        };
        Observation::failed(
            types::STREAM_BUFFER,
            reasons::BUFFER_FILLING,
            format!(
                "stream {stream} is {full} of {limits} (warning from {:.0} %): zori-api is \
                 stopped or slower than ingest; once full, ingest answers 503",
                WARN_AT * 100.0
            ),
        )
    } else {
        let held = if tens == 0 {
            "under 10 %".to_owned()
        } else {
            format!("at least {tens} %")
        };
        Observation::ok(
            types::STREAM_BUFFER,
            reasons::BUFFER_AVAILABLE,
            format!("stream {stream} holds {held} of {limits}"),
        )
    }
}

/// The condition when the stream's state cannot be read.
pub fn unknown(stream: &str, why: &str) -> Observation {
    Observation {
        type_: types::STREAM_BUFFER,
        status: ConditionStatus::Unknown,
        reason: reasons::STREAM_UNREADABLE,
        message: format!("failed to read the state of stream {stream}: {why}"),
    }
}

type Labels = Vec<(String, String)>;

/// `zori_operator_stream_buffer_fill_ratio{namespace, project, stream}`: shared by the
/// reconciles and the metrics registry.
#[derive(Clone, Debug, Default)]
pub struct FillGauge(Family<Labels, Gauge<f64, AtomicU64>>);

impl FillGauge {
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("zori_operator").register(
            "stream_buffer_fill_ratio",
            "Share of the tenant stream's max_bytes or max_messages in use (the fuller of the \
             two), read at each reconcile; ingest refuses events at 1",
            self.0.clone(),
        );
    }

    fn labels(namespace: &str, project: &str, stream: &str) -> Labels {
        vec![
            ("namespace".to_owned(), namespace.to_owned()),
            ("project".to_owned(), project.to_owned()),
            ("stream".to_owned(), stream.to_owned()),
        ]
    }

    pub fn set(&self, namespace: &str, project: &str, stream: &str, ratio: f64) {
        self.0
            .get_or_create(&Self::labels(namespace, project, stream))
            .set(ratio);
    }

    /// The last value set, if any.
    pub fn get(&self, namespace: &str, project: &str, stream: &str) -> Option<f64> {
        // `get_or_create` would add a series; look without creating one.
        self.0
            .get(&Self::labels(namespace, project, stream))
            .map(|gauge| gauge.get())
    }

    /// Drops the series of a deleted project.
    pub fn remove(&self, namespace: &str, project: &str, stream: &str) {
        self.0.remove(&Self::labels(namespace, project, stream));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(bytes: u64, max_bytes: i64, messages: u64, max_messages: i64) -> StreamFill {
        StreamFill {
            bytes,
            messages,
            max_bytes,
            max_messages,
        }
    }

    #[test]
    fn the_fuller_limit_counts() {
        assert_eq!(fill(0, 1000, 0, -1).ratio(), 0.0);
        assert_eq!(fill(250, 1000, 9, -1).ratio(), 0.25);
        assert_eq!(fill(250, 1000, 90, 100).ratio(), 0.9);
        assert_eq!(fill(5000, 1000, 0, -1).ratio(), 1.0);
        assert_eq!(fill(5000, -1, 10, 0).ratio(), 0.0);
    }

    #[test]
    fn warns_from_80_percent_with_a_message_that_changes_by_tens() {
        let ok = observation("ZORI_A", &fill(50, 1000, 1, -1));
        assert!(ok.is_true());
        assert_eq!(ok.reason, reasons::BUFFER_AVAILABLE);
        assert_eq!(
            ok.message,
            "stream ZORI_A holds under 10 % of max_bytes 1000"
        );
        // 72 % and 79 % read the same: no status write between them.
        assert_eq!(
            observation("ZORI_A", &fill(720, 1000, 1, -1)),
            observation("ZORI_A", &fill(799, 1000, 1, -1))
        );
        let filling = observation("ZORI_A", &fill(850, 1000, 1, -1));
        assert_eq!(filling.status, ConditionStatus::False);
        assert_eq!(filling.reason, reasons::BUFFER_FILLING);
        assert!(
            filling
                .message
                .starts_with("stream ZORI_A is at least 80 % full of max_bytes 1000"),
            "{}",
            filling.message
        );
        let full = observation("ZORI_A", &fill(1000, 1000, 1, 10));
        assert!(
            full.message.contains("is full: ingest answers 503"),
            "{}",
            full.message
        );
        let unlimited = observation("ZORI_A", &fill(10, -1, 1, -1));
        assert!(unlimited.is_true());
    }

    #[test]
    fn the_gauge_has_one_series_per_project() {
        let gauge = FillGauge::default();
        let mut registry = Registry::default();
        gauge.register(&mut registry);
        gauge.set("shops", "acme", "ZORI_A", 0.5);
        assert_eq!(gauge.get("shops", "acme", "ZORI_A"), Some(0.5));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains(
                "zori_operator_stream_buffer_fill_ratio{namespace=\"shops\",project=\"acme\",stream=\"ZORI_A\"} 0.5"
            ),
            "{text}"
        );
        gauge.remove("shops", "acme", "ZORI_A");
        assert_eq!(gauge.get("shops", "acme", "ZORI_A"), None);
    }
}
