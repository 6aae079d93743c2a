//! What PostgreSQL is already known to hold, so a batch skips upserts that cannot change a row.
//!
//! Every value the consumer writes to `visitors`, `touches` and `visitor_days` only ever moves
//! one way: `first_seen_at` down, `last_seen_at` up, a first touch or session touch only to a
//! better one (an arrival before any other event, then earlier), and a visitor day once
//! there stays there. No code path deletes those rows or moves a value back. So what this
//! process committed is a bound on what the database holds, whatever other replicas write: if
//! a row of a batch is no better than what was committed, the database's `WHERE` clause would
//! reject it, and skipping it changes nothing. Rows are skipped only when that is certain on the
//! values PostgreSQL compares (microsecond timestamps); a tie broken by event id, whose order
//! depends on the database collation, is always written.
//!
//! The memory is bounded: two generations of at most [`Known::capacity`] entries each; when the
//! current one fills, it becomes the previous one and the oldest is dropped. Forgetting is
//! always safe (the row is simply written).

use std::{collections::HashMap, sync::Mutex};

use time::{macros::datetime, Date, OffsetDateTime};

use crate::batch::{Plan, TouchRow, VisitorRow};

/// Entries per generation and table by default (about 200 bytes each with their keys).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Microseconds since PostgreSQL's epoch, as `timestamptz` stores an instant written by sqlx.
fn pg_micros(at: OffsetDateTime) -> i64 {
    let micros = (at - datetime!(2000-01-01 0:00 UTC)).whole_microseconds();
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// How good a touch is, as the upserts order touches: lower is better. The event id breaks
/// ties in the database; here a tie is never decided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TouchKey {
    not_arrival: bool,
    at: i64,
    event_id: String,
}

impl TouchKey {
    fn new(arrival: bool, at: OffsetDateTime, event_id: &str) -> Self {
        Self {
            not_arrival: !arrival,
            at: pg_micros(at),
            event_id: event_id.to_owned(),
        }
    }

    /// Whether `self` can replace `known` in the database. `false` only when certain: a worse
    /// (arrival, time), or the very same event.
    fn may_improve(&self, known: &TouchKey) -> bool {
        match (self.not_arrival, self.at).cmp(&(known.not_arrival, known.at)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => self.event_id != known.event_id,
        }
    }

    /// The better of two keys where certain; on a tie the one already known stays (either is
    /// a valid bound: the database holds one of them or better).
    fn merge(&mut self, other: TouchKey) {
        if (other.not_arrival, other.at) < (self.not_arrival, self.at) {
            *self = other;
        }
    }
}

#[derive(Debug, Clone)]
struct VisitorKnown {
    first_seen: i64,
    last_seen: i64,
    first_touch: TouchKey,
}

impl VisitorKnown {
    fn of(row: &VisitorRow) -> Self {
        Self {
            first_seen: pg_micros(row.first_seen_at),
            last_seen: pg_micros(row.last_seen_at),
            first_touch: TouchKey::new(
                row.ft_arrival,
                row.first_touch.occurred_at,
                &row.ft_event_id,
            ),
        }
    }

    /// Whether writing `row` may change the visitor (the upsert's `WHERE`).
    fn may_change(&self, row: &VisitorKnown) -> bool {
        row.first_seen < self.first_seen
            || row.last_seen > self.last_seen
            || row.first_touch.may_improve(&self.first_touch)
    }

    fn merge(&mut self, row: VisitorKnown) {
        self.first_seen = self.first_seen.min(row.first_seen);
        self.last_seen = self.last_seen.max(row.last_seen);
        self.first_touch.merge(row.first_touch);
    }
}

/// A map that forgets its oldest half when full.
#[derive(Debug)]
struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq, V> Generations<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Takes the entry out (from either generation) to update it.
    fn take(&mut self, key: &K) -> Option<V> {
        self.current
            .remove(key)
            .or_else(|| self.previous.remove(key))
    }

    fn put(&mut self, key: K, value: V) {
        if self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[derive(Debug)]
struct Tables {
    visitors: Generations<String, VisitorKnown>,
    touches: Generations<(String, String), TouchKey>,
    days: Generations<(Date, String), ()>,
}

/// What this process committed to PostgreSQL (bounded).
#[derive(Debug)]
pub struct Known {
    tables: Mutex<Tables>,
    capacity: usize,
}

impl Default for Known {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

/// Rows of a plan left out because the database already holds them or better.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub visitors: u64,
    pub touches: u64,
    pub visitor_days: u64,
}

impl Known {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tables: Mutex::new(Tables {
                visitors: Generations::new(capacity),
                touches: Generations::new(capacity),
                days: Generations::new(capacity),
            }),
            capacity,
        }
    }

    /// Entries per generation and table.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held, all tables together.
    pub fn len(&self) -> usize {
        let t = self.lock();
        t.visitors.len() + t.touches.len() + t.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves at worst a stale bound, which is still a bound.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes from `plan` the PostgreSQL rows that cannot change anything.
    pub fn prune(&self, plan: &mut Plan<'_>) -> Skipped {
        let t = self.lock();
        let before = (
            plan.visitors.len(),
            plan.touches.len(),
            plan.visitor_days.len(),
        );
        plan.visitors
            .retain(|row| match t.visitors.get(&row.visitor_id) {
                Some(known) => known.may_change(&VisitorKnown::of(row)),
                None => true,
            });
        plan.touches.retain(|row| {
            let key = (row.touch.visitor_id.clone(), row.touch.session_id.clone());
            match t.touches.get(&key) {
                Some(known) => touch_key(row).may_improve(known),
                None => true,
            }
        });
        plan.visitor_days
            .retain(|(day, visitor)| t.days.get(&(*day, visitor.clone())).is_none());
        Skipped {
            visitors: (before.0 - plan.visitors.len()) as u64,
            touches: (before.1 - plan.touches.len()) as u64,
            visitor_days: (before.2 - plan.visitor_days.len()) as u64,
        }
    }

    /// Records what a committed transaction wrote.
    pub fn committed(&self, plan: &Plan<'_>) {
        let mut t = self.lock();
        for row in &plan.visitors {
            let seen = VisitorKnown::of(row);
            let merged = match t.visitors.take(&row.visitor_id) {
                Some(mut known) => {
                    known.merge(seen);
                    known
                }
                None => seen,
            };
            t.visitors.put(row.visitor_id.clone(), merged);
        }
        for row in &plan.touches {
            let key = (row.touch.visitor_id.clone(), row.touch.session_id.clone());
            let seen = touch_key(row);
            let merged = match t.touches.take(&key) {
                Some(mut known) => {
                    known.merge(seen);
                    known
                }
                None => seen,
            };
            t.touches.put(key, merged);
        }
        for (day, visitor) in &plan.visitor_days {
            t.days.put((*day, visitor.clone()), ());
        }
    }
}

fn touch_key(row: &TouchRow) -> TouchKey {
    TouchKey::new(row.arrival, row.touch.occurred_at, &row.event_id)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use zori_core::event::{StreamMessage, TrackedEvent};

    use super::*;
    use crate::batch::{plan, tests::event};

    fn at(hour: u8) -> OffsetDateTime {
        datetime!(2025-03-01 0:00 UTC) + time::Duration::hours(hour.into())
    }

    fn messages(events: &[TrackedEvent]) -> Vec<StreamMessage> {
        events.iter().cloned().map(StreamMessage::Event).collect()
    }

    /// (visitors, touches, visitor days) a batch of `events` still writes.
    fn left(known: &Known, events: &[TrackedEvent]) -> (usize, usize, usize) {
        let messages = messages(events);
        let mut p = plan(&messages);
        known.prune(&mut p);
        (p.visitors.len(), p.touches.len(), p.visitor_days.len())
    }

    fn commit(known: &Known, events: &[TrackedEvent]) {
        let messages = messages(events);
        let mut p = plan(&messages);
        known.prune(&mut p);
        known.committed(&p);
    }

    #[test]
    fn only_rows_that_cannot_change_anything_are_left_out() {
        let known = Known::default();
        let first = event("b", "v1", "s1", at(10));
        assert_eq!(left(&known, std::slice::from_ref(&first)), (1, 1, 1));
        commit(&known, std::slice::from_ref(&first));
        // The same event again (a redelivery): nothing to write.
        assert_eq!(left(&known, std::slice::from_ref(&first)), (0, 0, 0));
        // A later event of the same session and day: only last_seen_at moves.
        assert_eq!(left(&known, &[event("c", "v1", "s1", at(11))]), (1, 0, 0));
        // An earlier event: a new first touch and session touch, the day is known.
        assert_eq!(left(&known, &[event("a", "v1", "s1", at(9))]), (1, 1, 0));
        // Another day and session.
        assert_eq!(left(&known, &[event("d", "v1", "s2", at(30))]), (1, 1, 1));
        // A tie on the time with another id: the database's collation decides, so it is
        // written.
        assert_eq!(left(&known, &[event("a2", "v1", "s1", at(10))]), (1, 1, 0));
        // Between first and last seen, not an arrival: cannot change the visitor.
        commit(&known, &[event("z", "v1", "s1", at(12))]);
        let mut click = event("k", "v1", "s1", at(11));
        click.name = "click".to_owned();
        assert_eq!(left(&known, &[click]), (0, 0, 0));
    }

    #[test]
    fn an_arrival_beats_an_earlier_other_event() {
        let known = Known::default();
        let mut end = event("end", "v1", "s1", at(8));
        end.name = "session_end".to_owned();
        commit(&known, &[end]);
        // Later in time, but an arrival: a better first touch and session touch.
        assert_eq!(left(&known, &[event("pv", "v1", "s1", at(9))]), (1, 1, 0));
        commit(&known, &[event("pv", "v1", "s1", at(9))]);
        let mut end2 = event("end2", "v1", "s1", at(8));
        end2.name = "session_end".to_owned();
        assert_eq!(left(&known, &[end2]), (0, 0, 0));
    }

    #[test]
    fn what_is_forgotten_is_written_again() {
        let known = Known::with_capacity(2);
        for v in ["v1", "v2", "v3", "v4", "v5"] {
            commit(&known, &[event(&format!("e-{v}"), v, "s", at(10))]);
        }
        // Two generations of two: the oldest visitor is forgotten, the newest remembered.
        assert_eq!(left(&known, &[event("e-v1", "v1", "s", at(10))]), (1, 1, 1));
        assert_eq!(left(&known, &[event("e-v5", "v5", "s", at(10))]), (0, 0, 0));
        assert!(known.len() <= 3 * 2 * 2);
    }

    #[test]
    fn microseconds_decide_like_postgres() {
        // 400 ns apart: the same microsecond in PostgreSQL, where the event id breaks the tie
        // ("a" may win over "b"), so it must be written, although it is later here.
        let known = Known::default();
        let base = at(10);
        commit(&known, &[event("b", "v1", "s1", base)]);
        let close = base + time::Duration::nanoseconds(400);
        assert_eq!(left(&known, &[event("a", "v1", "s1", close)]), (1, 1, 0));
    }
}
