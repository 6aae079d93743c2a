//! Decoding stream messages fast.
//!
//! [`StreamMessage`] is an internally tagged enum (`{"kind":"event",…}`). serde decodes such
//! an enum by first buffering the whole object into an intermediate tree, because the tag may
//! come last; for the consumer that doubled the cost of every message. Ingest writes the tag
//! first (serde serialises it first), so [`stream_message`] reads the first key and, when it is
//! `kind`, decodes the rest of the object straight into the variant. Any other shape (the tag
//! elsewhere or twice, an unknown kind, invalid JSON) takes serde's general path, whose answer
//! (value or error) is the reference: both paths accept and reject the same documents.

use std::{borrow::Cow, fmt};

use serde::{
    de::{value::MapAccessDeserializer, Deserializer, MapAccess, Visitor},
    Deserialize,
};
use zori_core::event::{IdentifyRecord, StreamMessage, TrackedEvent};

/// Decodes one stream message.
pub fn stream_message(payload: &[u8]) -> Result<StreamMessage, serde_json::Error> {
    // The variants ignore unknown fields, so a second `kind` would pass unseen where the
    // general path rejects the duplicate: any other `"kind"` (even inside a value) goes there.
    const TAG: &[u8] = br#""kind""#;
    let first = payload.windows(TAG.len()).position(|w| w == TAG);
    let another = first.is_some_and(|at| {
        payload[at + TAG.len()..]
            .windows(TAG.len())
            .any(|w| w == TAG)
    });
    if another {
        return serde_json::from_slice(payload);
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    match de.deserialize_map(TagFirst) {
        Ok(Some(message)) if de.end().is_ok() => Ok(message),
        // Not the tag-first shape, or trailing data: the general path decides.
        _ => serde_json::from_slice(payload),
    }
}

/// Visits an object whose first key is `kind`; `None` when the object has another shape.
struct TagFirst;

impl<'de> Visitor<'de> for TagFirst {
    type Value = Option<StreamMessage>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a stream message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(key) = map.next_key::<Cow<'de, str>>()? else {
            return Ok(None);
        };
        if key != "kind" {
            return Ok(None);
        }
        let kind = map.next_value::<Cow<'de, str>>()?;
        let rest = MapAccessDeserializer::new(map);
        Ok(Some(match kind.as_ref() {
            "event" => StreamMessage::Event(TrackedEvent::deserialize(rest)?),
            "identify" => StreamMessage::Identify(IdentifyRecord::deserialize(rest)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::batch::tests::event;

    fn general(payload: &[u8]) -> Result<StreamMessage, String> {
        serde_json::from_slice::<StreamMessage>(payload).map_err(|e| e.to_string())
    }

    #[test]
    fn both_paths_agree_on_every_shape() {
        let mut e = event("e1", "v1", "s1", datetime!(2025-03-01 10:00:00.123 UTC));
        e.properties.insert("plan".into(), json!({"a": [1, 2]}));
        let tagged = serde_json::to_vec(&StreamMessage::Event(e.clone())).unwrap();
        assert!(tagged.starts_with(br#"{"kind":"event""#));
        let mut tag_last = serde_json::to_value(&e).unwrap();
        tag_last["kind"] = json!("event");
        let tag_last = serde_json::to_vec(&tag_last).unwrap();
        let identify = json!({
            "kind": "identify", "id": "i1", "visitor_id": "v1", "session_id": "s1",
            "occurred_at": "2025-03-01T10:00:00Z", "received_at": "2025-03-01T10:00:01Z",
            "app_id": "u1", "email_hash": null, "fullname": null, "traits": {"x": 1}
        });
        let identify = serde_json::to_vec(&identify).unwrap();
        let cases: Vec<Vec<u8>> = vec![
            tagged.clone(),
            tag_last,
            identify,
            br#"{"kind":"other","id":"x"}"#.to_vec(),
            br#"{"kind":"event"}"#.to_vec(),
            br#"{"kind":"event","id":5}"#.to_vec(),
            br#"{}"#.to_vec(),
            br#"[]"#.to_vec(),
            b"not json".to_vec(),
            [&tagged[..], b" {}"].concat(),
            [&tagged[..], b"  \n"].concat(),
            [&tagged[..tagged.len() - 1], br#","kind":"identify"}"#].concat(),
        ];
        for payload in cases {
            let fast = stream_message(&payload).map_err(|e| e.to_string());
            assert_eq!(
                fast,
                general(&payload),
                "{}",
                String::from_utf8_lossy(&payload)
            );
        }
        assert_eq!(stream_message(&tagged).unwrap(), StreamMessage::Event(e));
    }
}
