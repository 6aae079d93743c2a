//! Keeps what the reports read equal to what the stores hold (issue 13).
//!
//! Two derived stores can drift from their sources in rare races; this module closes both.
//!
//! - **Event counts** (`event_counts_daily_v2`, see [`crate::rollup`]) are fed by a materialized
//!   view on every insert into `events`, and the consumer inserts only events `events` does not
//!   hold yet (it looks them up only for a batch with a redelivered message: the look-up reads
//!   more the larger the table, and a first delivery is new unless resent after the stream's
//!   duplicate window). Such a resend, two batches in flight holding the same event, or an
//!   insert that failed after its rows reached `events` but before the view's, would count an
//!   event twice or not at all. Every insert holds a shared advisory lock
//!   ([`RollupLock::inserting`]) and then marks the days its events fall on: for the next round
//!   when its outcome is suspect ([`suspect`]), else for a round within `--rollup-audit-every`
//!   (10 minutes); each day is also audited once after it ends; the audit
//!   ([`RollupLock::audit`]) takes the lock exclusively, so no insert is half done while it
//!   reads, compares each marked day's counts with `uniqExact(event_id)` over that day's events,
//!   and writes the difference (the counts are `sum` states, so a correction may be negative)
//!   together with the visitors of the corrected keys. Counts are exact again within one audit
//!   interval of any race; the audit of a day that agrees writes nothing.
//! - **Stored payment credit** (migration 0017): triggers recompute a payment's credit when it,
//!   or a visitor, identity or user it depends on, changes. A payment inserted (or linked to a
//!   visitor) by one transaction while another changes that visitor can still miss the change:
//!   under read committed neither sees the other's rows before they commit. Every interval the
//!   payments written since the previous round are recomputed ([`recredit_since`]), reaching
//!   [`RECREDIT_OVERLAP`] further back so that a payment whose transaction, or the racing one,
//!   committed after that round read is recomputed once both have (a day back at start, for a
//!   process that was down). A recompute that changes nothing writes nothing (migration 0019):
//!   the first version recomputed every payment of the last hour each minute, rewriting a burst
//!   of 100,000 payments sixty times.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use time::{Date, OffsetDateTime};
use tokio::sync::watch;

use crate::{
    ch::{datetime_secs, EventStore},
    rollup::day_text,
};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to take the rollup lock in PostgreSQL ({what}): {source}")]
    Lock {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to audit the event counts of {day} in ClickHouse: {source}")]
    Audit {
        day: Date,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse did not finish the audit of {0} within {1:?}")]
    AuditTimeout(Date, Duration),
    #[error("failed to recompute the credit of recent payments in PostgreSQL: {0}")]
    Recredit(#[source] sqlx::Error),
}

/// Longest the audit waits for the inserts in flight before giving up until the next round.
const LOCK_TIMEOUT: &str = "30s";

/// Longest one day's audit may take.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How [`RollupLock::take`] holds the lock: inserts share it, the audit holds it alone.
#[derive(Clone, Copy)]
enum Mode {
    Shared,
    Exclusive,
}

/// The advisory lock guarding one ClickHouse database's event-count rollup, and the days the
/// next audits check.
#[derive(Clone)]
pub struct RollupLock {
    pool: PgPool,
    key: i64,
    marks: Arc<Mutex<Marks>>,
    every: Duration,
}

#[derive(Default)]
struct Marks {
    /// Days the next round audits: a suspect insert touched them (or a start, or a day's end).
    due: BTreeSet<Date>,
    /// Days that received events since their last audit; audited at most once per `every`.
    written: BTreeSet<Date>,
    /// When each recently audited day was audited.
    audited: HashMap<Date, Instant>,
}

/// The lock key of a ClickHouse database: FNV-1a of its name, so every replica of a tenant
/// (all of which share its PostgreSQL database) takes the same lock and no two tenants do.
fn lock_key(database: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "zori-rollup:".bytes().chain(database.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl RollupLock {
    /// `every`: how often at most a day that only received clean inserts is audited.
    pub fn new(pool: PgPool, database: &str, every: Duration) -> Self {
        Self {
            pool,
            key: lock_key(database),
            marks: Arc::default(),
            every,
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks days for the next audit.
    pub fn mark(&self, days: impl IntoIterator<Item = Date>) {
        self.marks().due.extend(days);
    }

    /// Records days that received events: each is audited within `every`.
    pub fn wrote(&self, days: impl IntoIterator<Item = Date>) {
        self.marks().written.extend(days);
    }

    /// Days waiting for an audit.
    pub fn marked(&self) -> BTreeSet<Date> {
        let marks = self.marks();
        marks.due.union(&marks.written).copied().collect()
    }

    /// The days to audit now, taken out of the marks.
    fn take_due(&self) -> BTreeSet<Date> {
        let every = self.every;
        let mut marks = self.marks();
        let marks = &mut *marks;
        marks.audited.retain(|_, at| at.elapsed() < every);
        let ready: Vec<Date> = marks
            .written
            .iter()
            .filter(|day| !marks.audited.contains_key(day))
            .copied()
            .collect();
        for day in &ready {
            marks.written.remove(day);
        }
        let mut due = std::mem::take(&mut marks.due);
        due.extend(ready);
        due
    }

    fn audited(&self, day: Date) {
        self.marks().audited.insert(day, Instant::now());
    }

    /// Takes the lock in a transaction of its own; ending the transaction releases it. The
    /// exclusive side gives up after [`LOCK_TIMEOUT`] rather than wait behind a stuck insert.
    async fn take(
        &self,
        mode: Mode,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ReconcileError> {
        let lock = |what| move |source| ReconcileError::Lock { what, source };
        let mut tx = self.pool.begin().await.map_err(lock("begin"))?;
        let (what, sql) = match mode {
            Mode::Shared => ("shared lock", "SELECT pg_advisory_xact_lock_shared($1)"),
            Mode::Exclusive => {
                sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                    .execute(&mut *tx)
                    .await
                    .map_err(lock("lock timeout"))?;
                ("exclusive lock", "SELECT pg_advisory_xact_lock($1)")
            }
        };
        sqlx::query(sql)
            .bind(self.key)
            .execute(&mut *tx)
            .await
            .map_err(lock(what))?;
        Ok(tx)
    }

    /// Runs `insert` (of events on `days`) holding the lock shared, then marks the days when
    /// `suspect` says its outcome may have left a count off (see [`suspect`]).
    pub async fn inserting<T>(
        &self,
        days: impl IntoIterator<Item = Date>,
        insert: impl std::future::Future<Output = T>,
        suspect: impl FnOnce(&T) -> bool,
    ) -> Result<T, ReconcileError> {
        let tx = self.take(Mode::Shared).await?;
        let result = insert.await;
        if suspect(&result) {
            self.mark(days);
        } else {
            self.wrote(days);
        }
        // Ending the transaction releases the lock; a failed commit ends the session, which
        // releases it as well.
        if let Err(error) = tx.commit().await {
            tracing::warn!(%error, "failed to release the rollup lock cleanly");
        }
        Ok(result)
    }

    /// Audits the marked days under the exclusive lock; returns the days audited. A day whose
    /// audit fails stays marked (with the ones not reached).
    pub async fn audit(&self, events: &EventStore) -> Result<usize, ReconcileError> {
        let tx = self.take(Mode::Exclusive).await?;
        // Taken under the lock: every insert that ended before it has marked its days.
        let days = self.take_due();
        let mut left = days.iter();
        while let Some(day) = left.next() {
            if let Err(error) = audit_day(events, *day).await {
                self.mark(std::iter::once(*day).chain(left.copied()));
                return Err(error);
            }
            self.audited(*day);
        }
        if let Err(error) = tx.commit().await {
            tracing::warn!(%error, "failed to release the rollup lock cleanly");
        }
        Ok(days.len())
    }
}

/// Whether an insert's outcome calls for an audit of its days at the next round: it failed
/// (part of its rows may be in `events` without their counts), some of its events were stored
/// already, or its batch holds a redelivered message (an earlier attempt may have ended half
/// done). Other days that received events are audited within `every`: that covers a resend after
/// the stream's duplicate window (a first delivery, inserted without a look-up) and two copies of
/// one event inserted at the same moment.
pub fn suspect(outcome: &Result<usize, impl std::fmt::Debug>, redelivered: bool) -> bool {
    redelivered || !matches!(outcome, Ok(0))
}

/// Writes the difference between `day`'s counts in `event_counts_daily_v2` and its events (each
/// event id once), for the keys that differ, with those keys' visitors.
pub const AUDIT_DAY: &str = "
INSERT INTO event_counts_daily_v2 (day, name, page_path, country, device, events, visitors)
SELECT day, name, page_path, country, device,
       sumState(delta) AS events, uniqCombinedStateIf(12)(visitor_id, from_events = 1) AS visitors
FROM (
    SELECT toDate(occurred_at) AS day, name, page_path, country, device, visitor_id,
           1 AS from_events, toInt64(0) AS delta
    FROM events
    WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
    UNION ALL
    SELECT toDate(?) AS day, name, page_path, country, device, '' AS visitor_id,
           0 AS from_events, toInt64(exact) - toInt64(counted) AS delta
    FROM (
        SELECT name, page_path, country, device, uniqExact(event_id) AS exact
        FROM events
        WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
        GROUP BY name, page_path, country, device
    ) ALL FULL OUTER JOIN (
        SELECT name, page_path, country, device, sumMerge(events) AS counted
        FROM event_counts_daily_v2
        WHERE day = toDate(?)
        GROUP BY name, page_path, country, device
    ) USING (name, page_path, country, device)
)
GROUP BY day, name, page_path, country, device
HAVING sum(delta) != 0";

async fn audit_day(events: &EventStore, day: Date) -> Result<(), ReconcileError> {
    let start = datetime_secs(day.midnight().assume_utc());
    let end = datetime_secs(day.next_day().unwrap_or(day).midnight().assume_utc());
    let text = day_text(day);
    let query = events
        .client()
        .query(AUDIT_DAY)
        .bind(start)
        .bind(end)
        .bind(text.as_str())
        .bind(start)
        .bind(end)
        .bind(text.as_str());
    match tokio::time::timeout(AUDIT_TIMEOUT, query.execute()).await {
        Ok(result) => result.map_err(|source| ReconcileError::Audit { day, source }),
        Err(_) => Err(ReconcileError::AuditTimeout(day, AUDIT_TIMEOUT)),
    }
}

/// Recomputes the stored credit of the payments written at `since` or later (see the module
/// documentation); returns how many.
pub async fn recredit_since(pool: &PgPool, since: OffsetDateTime) -> Result<u64, ReconcileError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT payment_id FROM payments WHERE updated_at >= $1 ORDER BY payment_id",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(ReconcileError::Recredit)?;
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query("SELECT zori_recredit($1)")
        .bind(&ids)
        .execute(pool)
        .await
        .map_err(ReconcileError::Recredit)?;
    Ok(ids.len() as u64)
}

/// How far before the previous round's start each round reaches back: far longer than a
/// webhook's or a batch's PostgreSQL transaction lasts (well under a second each, measured at
/// 10M events), so a payment written just before a round but committed after it, or whose
/// visitor a transaction committing after it changed, is recomputed by the next.
pub const RECREDIT_OVERLAP: Duration = Duration::from_secs(600);
/// The first round's reach: covers a process that was down for up to a day.
pub const FIRST_RECREDIT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Audits the marked days and recomputes recent payments every `interval`, until shutdown; a
/// failed round is logged and retried at the next.
pub async fn run(
    lock: Option<RollupLock>,
    events: EventStore,
    pool: PgPool,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut since = OffsetDateTime::now_utc() - FIRST_RECREDIT_WINDOW;
    // A predecessor killed mid-insert took its lock with it, but ClickHouse may still finish that
    // insert for up to twice the request timeout; an audit reading meanwhile could see its
    // events without their counts and correct them away. So the first audit waits that long (at
    // most one audit period); the redelivered batch marks its days again in any case.
    let started = Instant::now();
    let grace =
        (crate::ch::REQUEST_TIMEOUT * 2).min(lock.as_ref().map_or(Duration::ZERO, |l| l.every));
    // A start audits today and yesterday (the process before may have stopped half way); then
    // every day, once it is over, is audited once.
    let mut today = OffsetDateTime::now_utc().date();
    if let Some(lock) = &lock {
        lock.mark([today.previous_day().unwrap_or(today), today]);
    }
    loop {
        let now = OffsetDateTime::now_utc().date();
        if now != today {
            if let Some(lock) = &lock {
                lock.mark([today]);
            }
            today = now;
        }
        if let Some(lock) = lock.as_ref().filter(|_| started.elapsed() >= grace) {
            match lock.audit(&events).await {
                Ok(0) => {}
                Ok(days) => tracing::debug!(days, "audited the event counts"),
                Err(error) => tracing::warn!(%error, "event-count audit failed; retrying"),
            }
        }
        let round = OffsetDateTime::now_utc();
        match recredit_since(&pool, since).await {
            Ok(n) => {
                tracing::debug!(payments = n, "recomputed the credit of recent payments");
                since = round - RECREDIT_OVERLAP;
            }
            Err(error) => tracing::warn!(%error, "payment credit refresh failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The UTC days `times` fall on.
pub fn days_of(times: impl IntoIterator<Item = OffsetDateTime>) -> BTreeSet<Date> {
    times
        .into_iter()
        .map(|t| t.to_offset(time::UtcOffset::UTC).date())
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    #[test]
    fn lock_keys_differ_per_database_and_stay_put() {
        assert_eq!(lock_key("zori_shop"), lock_key("zori_shop"));
        assert_ne!(lock_key("zori_shop"), lock_key("zori_blog"));
    }

    #[test]
    fn only_a_suspect_insert_calls_for_an_audit() {
        let clean: Result<usize, String> = Ok(0);
        assert!(!suspect(&clean, false));
        assert!(suspect(&clean, true), "a redelivered batch");
        assert!(
            suspect(&Ok::<usize, String>(3), false),
            "events stored already"
        );
        assert!(
            suspect(&Err::<usize, String>("down".into()), false),
            "a failed insert"
        );
    }

    #[test]
    fn days_are_utc_days() {
        let days = days_of([
            datetime!(2026-12-01 23:30 -02:00),
            datetime!(2026-12-02 00:10 UTC),
            datetime!(2026-11-30 12:00 UTC),
        ]);
        assert_eq!(
            days.into_iter().collect::<Vec<_>>(),
            vec![date!(2026 - 11 - 30), date!(2026 - 12 - 02)]
        );
    }
}
