//! Parsing a `POST /batch` body without letting it grow into a large heap: the `events` and
//! `identifies` arrays are read one element at a time and the count is checked as they go, so
//! a body of thousands of tiny elements is refused after `max + 1` of them instead of after all
//! of them have been built (a 64 KiB body of `{}` elements used to become ~27 MB of structs).

use std::{cell::Cell, fmt, marker::PhantomData};

use axum::http::StatusCode;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use zori_core::event::{RawBatch, RawEvent, RawIdentify};

use crate::{http::Rejection, metrics::Reason};

/// Parses `body` as a [`RawBatch`] holding at most `max` events and identifies together.
pub(crate) fn parse_batch(body: &[u8], max: usize) -> Result<RawBatch, Rejection> {
    let seen = Cell::new(0usize);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = BatchSeed { max, seen: &seen }
        .deserialize(&mut deserializer)
        .and_then(|batch| deserializer.end().map(|()| batch));
    match parsed {
        Ok(batch) => Ok(batch),
        Err(_) if seen.get() > max => Err(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::BatchTooLarge,
            format!(
                "batch has more than {max} events and identifies; at most {max} are allowed per \
                 request"
            ),
        )
        .events(seen.get())),
        Err(error) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            Reason::MalformedJson,
            format!("malformed json body: {error}"),
        )),
    }
}

/// The whole body: an object with `events` and `identifies`, both optional; other keys are
/// skipped without being built.
struct BatchSeed<'a> {
    max: usize,
    seen: &'a Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = RawBatch;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<RawBatch, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = RawBatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with `events` and `identifies` arrays")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBatch, A::Error> {
        let mut batch = RawBatch::default();
        let (mut events, mut identifies) = (false, false);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Events if events => return Err(A::Error::duplicate_field("events")),
                Key::Identifies if identifies => {
                    return Err(A::Error::duplicate_field("identifies"))
                }
                Key::Events => {
                    events = true;
                    batch.events =
                        map.next_value_seed(Elements::<RawEvent>::new(self.max, self.seen))?;
                }
                Key::Identifies => {
                    identifies = true;
                    batch.identifies =
                        map.next_value_seed(Elements::<RawIdentify>::new(self.max, self.seen))?;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(batch)
    }
}

enum Key {
    Events,
    Identifies,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "events" => Key::Events,
                    "identifies" => Key::Identifies,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// One array of elements, counted against the batch's shared budget as each is read.
struct Elements<'a, T> {
    max: usize,
    seen: &'a Cell<usize>,
    element: PhantomData<T>,
}

impl<'a, T> Elements<'a, T> {
    fn new(max: usize, seen: &'a Cell<usize>) -> Self {
        Self {
            max,
            seen,
            element: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Elements<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Elements<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Never trust a size hint for an allocation; the budget is the bound.
        let remaining = self.max.saturating_sub(self.seen.get());
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(remaining).min(32));
        while let Some(element) = seq.next_element::<T>()? {
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() > self.max {
                return Err(A::Error::custom(format_args!(
                    "more than {} events and identifies",
                    self.max
                )));
            }
            out.push(element);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str, max: usize) -> RawBatch {
        parse_batch(body.as_bytes(), max).unwrap_or_else(|r| panic!("{body}: {}", r.message))
    }

    fn err(body: &str, max: usize) -> (StatusCode, Reason, String) {
        let r = parse_batch(body.as_bytes(), max).expect_err("rejected");
        (r.status, r.reason, r.message.into_owned())
    }

    #[test]
    fn reads_what_the_derived_parser_reads() {
        let body = r#"{"events": [{"n": "page_view", "v": "vis_1"}, {"event_name": "click"}],
                       "identifies": [{"v": "vis_1", "app_id": "u1", "signature": "ab"}],
                       "sent_at": {"nested": [1, 2, {"x": null}]}}"#;
        let batch = ok(body, 3);
        let derived: RawBatch = serde_json::from_str(body).expect("derived parse");
        assert_eq!(
            serde_json::to_value(&batch).expect("json"),
            serde_json::to_value(&derived).expect("json")
        );
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.identifies[0].signature.as_deref(), Some("ab"));
        assert!(ok("{}", 1).events.is_empty());
        assert_eq!(ok(r#"{"identifies": [{}]}"#, 1).identifies.len(), 1);
    }

    #[test]
    fn refuses_at_the_limit_counting_both_arrays() {
        assert_eq!(
            ok(r#"{"events": [{}, {}], "identifies": [{}]}"#, 3)
                .events
                .len(),
            2
        );
        let (status, reason, message) = err(r#"{"events": [{}, {}], "identifies": [{}, {}]}"#, 3);
        assert_eq!(
            (status, reason),
            (StatusCode::PAYLOAD_TOO_LARGE, Reason::BatchTooLarge)
        );
        assert_eq!(
            message,
            "batch has more than 3 events and identifies; at most 3 are allowed per request"
        );
        // Refused before the rest of the body is even looked at: what follows is not JSON.
        let flood = format!("{{\"events\": [{}", "{},".repeat(10_000));
        assert_eq!(err(&flood, 100).1, Reason::BatchTooLarge);
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in [
            "",
            "[]",
            r#"{"events": {}}"#,
            r#"{"events": null}"#,
            r#"{"events": [1]}"#,
            r#"{"events": [], "events": []}"#,
            r#"{"events": []} trailing"#,
            r#"{"events": [{}]"#,
        ] {
            let (status, reason, message) = err(body, 100);
            assert_eq!(
                (status, reason),
                (StatusCode::BAD_REQUEST, Reason::MalformedJson),
                "{body}"
            );
            assert!(message.starts_with("malformed json body: "), "{message}");
        }
    }
}
