//! What one batch of stream messages means for the stores, computed without I/O: the events to
//! insert, and per visitor, session and day the single row each upsert needs (a set-based
//! `INSERT … ON CONFLICT` may not touch the same key twice, and fewer rows travel).
//!
//! Order never matters: the earliest arrival event (`page_view`, `session_start`; by
//! `occurred_at`, then event id) of a visitor is its first touch, the earliest of a session is
//! that session's touch (other events only stand in until an arrival event is seen), the latest
//! event sets the visitor's latest device and country. The database upserts apply the same rule, so batches may arrive in
//! any order, be redelivered or overlap.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use time::{Date, OffsetDateTime};
use zori_core::{
    event::{IdentifyRecord, StreamMessage, TrackedEvent},
    touch::{is_arrival, Touch},
};

/// A visitor's row as this batch sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitorRow {
    pub visitor_id: String,
    pub first_seen_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// Id of the event the first touch comes from (tie-break between equal timestamps).
    pub ft_event_id: String,
    /// Whether that event is an arrival ([`is_arrival`]); any arrival beats any other event.
    pub ft_arrival: bool,
    pub first_touch: Touch,
    pub country: Option<String>,
    pub device: String,
    pub browser: String,
    pub os: String,
}

/// The touch of one session: its earliest event.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchRow {
    pub event_id: String,
    /// Whether the event is an arrival ([`is_arrival`]).
    pub arrival: bool,
    pub touch: Touch,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Distinct events (by id), in arrival order.
    pub events: Vec<&'a TrackedEvent>,
    /// Sorted by visitor id (a stable lock order between concurrent writers).
    pub visitors: Vec<VisitorRow>,
    /// Sorted by (visitor id, session id).
    pub touches: Vec<TouchRow>,
    /// Distinct (UTC day, visitor id), sorted.
    pub visitor_days: Vec<(Date, String)>,
    /// Distinct identify records (by id), ordered by (`occurred_at`, id).
    pub identifies: Vec<&'a IdentifyRecord>,
}

fn earlier(a: (&OffsetDateTime, &str), b: (&OffsetDateTime, &str)) -> bool {
    a < b
}

/// The better touch of two events: an arrival before any other event, then the earliest.
fn better_touch(a: &TrackedEvent, b: &TrackedEvent) -> bool {
    (!is_arrival(&a.name), &a.occurred_at, a.id.as_str())
        < (!is_arrival(&b.name), &b.occurred_at, b.id.as_str())
}

pub fn plan<'a>(messages: impl IntoIterator<Item = &'a StreamMessage>) -> Plan<'a> {
    let mut seen_events = BTreeSet::new();
    let mut seen_identifies = BTreeSet::new();
    let mut events = Vec::new();
    let mut identifies = Vec::new();
    for message in messages {
        match message {
            StreamMessage::Event(e) => {
                if seen_events.insert(e.id.as_str()) {
                    events.push(e);
                }
            }
            StreamMessage::Identify(i) => {
                if seen_identifies.insert(i.id.as_str()) {
                    identifies.push(i);
                }
            }
        }
    }
    identifies.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));

    // Per visitor: the earliest event, the best touch and the latest event.
    let mut per_visitor: BTreeMap<&str, (&TrackedEvent, &TrackedEvent, &TrackedEvent)> =
        BTreeMap::new();
    // Per session: the best touch.
    let mut per_session: BTreeMap<(&str, &str), &TrackedEvent> = BTreeMap::new();
    let mut days: BTreeSet<(Date, &str)> = BTreeSet::new();
    for &event in &events {
        let key = (&event.occurred_at, event.id.as_str());
        match per_visitor.entry(event.visitor_id.as_str()) {
            Entry::Vacant(slot) => {
                slot.insert((event, event, event));
            }
            Entry::Occupied(mut slot) => {
                let (first, touch, last) = slot.get_mut();
                if earlier(key, (&first.occurred_at, first.id.as_str())) {
                    *first = event;
                }
                if better_touch(event, touch) {
                    *touch = event;
                }
                if earlier((&last.occurred_at, last.id.as_str()), key) {
                    *last = event;
                }
            }
        }
        match per_session.entry((event.visitor_id.as_str(), event.session_id.as_str())) {
            Entry::Vacant(slot) => {
                slot.insert(event);
            }
            Entry::Occupied(mut slot) => {
                let current = slot.get_mut();
                if better_touch(event, current) {
                    *current = event;
                }
            }
        }
        days.insert((utc_day(event.occurred_at), event.visitor_id.as_str()));
    }

    let visitors = per_visitor
        .into_iter()
        .map(|(visitor_id, (first, touch, last))| VisitorRow {
            visitor_id: visitor_id.to_owned(),
            first_seen_at: first.occurred_at,
            last_seen_at: last.occurred_at,
            ft_event_id: touch.id.clone(),
            ft_arrival: is_arrival(&touch.name),
            first_touch: Touch::from_event(touch),
            country: last.country.clone(),
            device: last.client.device.as_str().to_owned(),
            browser: last.client.browser.clone(),
            os: last.client.os.clone(),
        })
        .collect();
    let touches = per_session
        .into_values()
        .map(|event| TouchRow {
            event_id: event.id.clone(),
            arrival: is_arrival(&event.name),
            touch: Touch::from_event(event),
        })
        .collect();
    let visitor_days = days
        .into_iter()
        .map(|(day, visitor)| (day, visitor.to_owned()))
        .collect();
    Plan {
        events,
        visitors,
        touches,
        visitor_days,
        identifies,
    }
}

/// The UTC calendar day of an instant.
pub fn utc_day(at: OffsetDateTime) -> Date {
    at.to_offset(time::UtcOffset::UTC).date()
}

/// PostgreSQL text cannot hold NUL; browsers can send it. Dropped rather than failing the row.
pub fn pg_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s.to_owned()
    }
}

/// [`pg_text`] for optional text.
pub fn pg_opt(s: Option<&str>) -> Option<String> {
    s.map(pg_text)
}

/// A JSON value PostgreSQL `jsonb` accepts (no `\u0000` in keys or strings), as text.
pub fn pg_json(value: &Value) -> String {
    fn clean(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(pg_text(s)),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (pg_text(k), clean(v)))
                    .collect::<Map<String, Value>>(),
            ),
            other => other.clone(),
        }
    }
    clean(value).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use time::macros::datetime;
    use zori_core::{
        channel::Channel,
        event::{ClientInfo, DeviceType, Page, Referrer, Utm},
    };

    use super::*;

    pub(crate) fn event(
        id: &str,
        visitor: &str,
        session: &str,
        at: OffsetDateTime,
    ) -> TrackedEvent {
        TrackedEvent {
            id: id.to_owned(),
            name: "page_view".to_owned(),
            visitor_id: visitor.to_owned(),
            session_id: session.to_owned(),
            occurred_at: at,
            received_at: at,
            page: Page {
                url: "https://shop.example/".to_owned(),
                host: "shop.example".to_owned(),
                path: "/".to_owned(),
                query: String::new(),
                title: None,
            },
            referrer: None,
            utm: Utm::default(),
            click_ids: BTreeMap::new(),
            channel: Channel::Direct,
            client: ClientInfo {
                browser: "Chrome".to_owned(),
                os: "Mac OSX".to_owned(),
                device: DeviceType::Desktop,
                is_bot: false,
            },
            country: Some("DE".to_owned()),
            properties: Map::new(),
            click: None,
        }
    }

    #[test]
    fn earliest_event_is_the_first_touch_in_any_order() {
        let mut late = event("b", "v1", "s2", datetime!(2025-03-02 10:00 UTC));
        late.referrer = Some(Referrer {
            url: "https://www.google.com/".to_owned(),
            host: "google.com".to_owned(),
            path: "/".to_owned(),
        });
        late.channel = Channel::OrganicSearch;
        late.country = Some("FR".to_owned());
        let mut early = event("a", "v1", "s1", datetime!(2025-03-01 10:00 UTC));
        early.utm.source = Some("twitter".to_owned());
        early.channel = Channel::PaidSocial;
        let middle = event("c", "v1", "s1", datetime!(2025-03-01 11:00 UTC));

        let orders = [
            vec![late.clone(), early.clone(), middle.clone()],
            vec![middle.clone(), late.clone(), early.clone()],
            vec![early.clone(), middle.clone(), late.clone()],
        ];
        for order in orders {
            let messages: Vec<StreamMessage> =
                order.into_iter().map(StreamMessage::Event).collect();
            let plan = plan(&messages);
            assert_eq!(plan.events.len(), 3);
            assert_eq!(plan.visitors.len(), 1);
            let v = &plan.visitors[0];
            assert_eq!(v.first_touch.source, "twitter");
            assert_eq!(v.ft_event_id, "a");
            assert_eq!(v.first_seen_at, datetime!(2025-03-01 10:00 UTC));
            assert_eq!(v.last_seen_at, datetime!(2025-03-02 10:00 UTC));
            assert_eq!(v.country.as_deref(), Some("FR"));
            assert_eq!(plan.touches.len(), 2);
            assert_eq!(plan.touches[0].touch.session_id, "s1");
            assert_eq!(plan.touches[0].event_id, "a");
            assert_eq!(plan.touches[1].touch.source, "google.com");
            assert_eq!(
                plan.visitor_days,
                vec![
                    (datetime!(2025-03-01 0:00 UTC).date(), "v1".to_owned()),
                    (datetime!(2025-03-02 0:00 UTC).date(), "v1".to_owned()),
                ]
            );
        }
    }

    #[test]
    fn a_session_end_never_becomes_the_touch() {
        // The tracker sends the old session's end on the next visit: the new page's URL and
        // referrer, the old session's (earlier) time.
        let mut end = event("end", "v1", "s1", datetime!(2025-03-01 09:00 UTC));
        end.name = "session_end".to_owned();
        end.utm.source = Some("wrong".to_owned());
        let mut click = event("click", "v1", "s2", datetime!(2025-03-01 09:30 UTC));
        click.name = "click".to_owned();
        let mut arrival = event("pv", "v1", "s2", datetime!(2025-03-01 10:00 UTC));
        arrival.utm.source = Some("newsletter".to_owned());
        for order in [
            vec![end.clone(), click.clone(), arrival.clone()],
            vec![arrival.clone(), click.clone(), end.clone()],
        ] {
            let messages: Vec<StreamMessage> =
                order.into_iter().map(StreamMessage::Event).collect();
            let plan = plan(&messages);
            let v = &plan.visitors[0];
            assert_eq!((v.ft_event_id.as_str(), v.ft_arrival), ("pv", true));
            assert_eq!(v.first_touch.source, "newsletter");
            assert_eq!(v.first_seen_at, datetime!(2025-03-01 09:00 UTC));
            let s2 = plan.touches.iter().find(|t| t.touch.session_id == "s2");
            assert_eq!(s2.map(|t| t.event_id.as_str()), Some("pv"));
            // Alone, a non-arrival event stands in, marked so any arrival replaces it.
            let s1 = plan.touches.iter().find(|t| t.touch.session_id == "s1");
            assert_eq!(s1.map(|t| t.arrival), Some(false));
        }
    }

    #[test]
    fn duplicates_collapse_and_ties_break_by_id() {
        let at = datetime!(2025-03-01 10:00 UTC);
        let a = event("a", "v1", "s1", at);
        let mut b = event("b", "v1", "s1", at);
        b.page.path = "/b".to_owned();
        let messages = vec![
            StreamMessage::Event(b.clone()),
            StreamMessage::Event(a.clone()),
            StreamMessage::Event(a.clone()),
            StreamMessage::Event(b),
        ];
        let plan = plan(&messages);
        assert_eq!(plan.events.len(), 2);
        assert_eq!(plan.visitors[0].ft_event_id, "a");
        assert_eq!(plan.touches.len(), 1);
        assert_eq!(plan.touches[0].touch.landing_page, "/");
        assert_eq!(plan.visitor_days.len(), 1);
    }

    #[test]
    fn days_are_utc() {
        let at = datetime!(2025-03-01 23:30 -05:00);
        let plan_messages = vec![StreamMessage::Event(event("a", "v", "s", at))];
        let plan = plan(&plan_messages);
        assert_eq!(
            plan.visitor_days[0].0,
            datetime!(2025-03-02 0:00 UTC).date()
        );
    }

    #[test]
    fn nul_is_removed_for_postgres() {
        assert_eq!(pg_text("a\0b"), "ab");
        assert_eq!(pg_opt(Some("\0")), Some(String::new()));
        let value = serde_json::json!({"k\u{0}": ["x\u{0}y", 1, {"z": "\u{0}"}]});
        assert_eq!(pg_json(&value), r#"{"k":["xy",1,{"z":""}]}"#);
    }
}
