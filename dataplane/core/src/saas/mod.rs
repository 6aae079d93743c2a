//! SaaS metrics from subscription history, without I/O: monthly recurring revenue and its
//! movements ([`mrr`]), cumulative revenue per customer by acquisition cohort ([`cohort`]) and
//! trial-to-paid conversion ([`trials`]).
//! Money stays in minor units and per currency, as everywhere else.

pub mod cohort;
pub mod mrr;
pub mod trials;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Serializes the first day of a month as `YYYY-MM`.
pub fn serialize_month<S: serde::Serializer>(month: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{:04}-{:02}", month.year(), month.month() as u8))
}

/// The first day of the month of `at` (UTC).
pub fn month_of(at: OffsetDateTime) -> Date {
    let at = at.to_offset(UtcOffset::UTC);
    first_of(at.year(), at.month())
}

fn first_of(year: i32, month: Month) -> Date {
    // Day 1 exists in every month of every year `time` represents.
    Date::from_calendar_date(year, month, 1).unwrap_or(Date::MIN)
}

/// The first day of the month `n` months after the month of `month`.
pub fn add_months_to_month(month: Date, n: u32) -> Date {
    shift_month(month, i64::from(n))
}

/// The first day of the month `n` months before the month of `month`.
pub fn months_before(month: Date, n: u32) -> Date {
    shift_month(month, -i64::from(n))
}

fn shift_month(month: Date, n: i64) -> Date {
    let index = month.year() as i64 * 12 + (month.month() as i64 - 1) + n;
    let year =
        i32::try_from(index.div_euclid(12)).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX });
    // rem_euclid(12) + 1 is always a month number.
    let m = Month::try_from((index.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
    first_of(year, m)
}

/// `at` plus `n` calendar months, the day clamped to the target month's length (31 Jan + 1
/// month = 28/29 Feb), in UTC.
pub fn add_months(at: OffsetDateTime, n: u32) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    let target = add_months_to_month(month_of(at), n);
    let day = at.day().min(target.month().length(target.year()));
    let date = Date::from_calendar_date(target.year(), target.month(), day).unwrap_or(target);
    PrimitiveDateTime::new(date, at.time()).assume_utc()
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    #[test]
    fn calendar_months() {
        assert_eq!(
            month_of(datetime!(2025-03-31 23:59 UTC)),
            date!(2025 - 03 - 01)
        );
        assert_eq!(
            month_of(datetime!(2025-04-01 01:00 +02:00)),
            date!(2025 - 03 - 01)
        );
        assert_eq!(
            add_months_to_month(date!(2025 - 11 - 01), 3),
            date!(2026 - 02 - 01)
        );
        assert_eq!(
            add_months_to_month(date!(2025 - 01 - 01), 0),
            date!(2025 - 01 - 01)
        );
        assert_eq!(
            months_before(date!(2026 - 03 - 01), 11),
            date!(2025 - 04 - 01)
        );
        assert_eq!(
            months_before(date!(2026 - 12 - 01), 0),
            date!(2026 - 12 - 01)
        );
        assert_eq!(
            months_before(date!(2026 - 01 - 01), 1),
            date!(2025 - 12 - 01)
        );
        assert_eq!(
            add_months(datetime!(2025-01-31 10:00 UTC), 1),
            datetime!(2025-02-28 10:00 UTC)
        );
        assert_eq!(
            add_months(datetime!(2024-01-31 10:00 UTC), 1),
            datetime!(2024-02-29 10:00 UTC)
        );
        assert_eq!(
            add_months(datetime!(2025-05-15 00:00 UTC), 12),
            datetime!(2026-05-15 00:00 UTC)
        );
        let mut out = serde_json::Serializer::new(Vec::new());
        serialize_month(&date!(2025 - 03 - 01), &mut out).unwrap();
        assert_eq!(out.into_inner(), b"\"2025-03\"");
    }
}
