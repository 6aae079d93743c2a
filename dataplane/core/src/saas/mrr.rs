//! Monthly recurring revenue and its movements, per month and currency.
//!
//! Input: the MRR of each subscription after each change (`customer.subscription.created /
//! updated / deleted`: a price, quantity or status change). A customer's MRR is the sum over
//! their subscriptions in one currency. Movements compare each customer's MRR at the start and
//! at the end of the month (changes inside a month net out):
//!
//! | start | end | movement |
//! |---|---|---|
//! | 0 | > 0, never had MRR at an earlier month end | new = end |
//! | 0 | > 0, had MRR at an earlier month end | reactivation = end |
//! | > 0 | > start | expansion = end − start |
//! | > 0 | 0 < end < start | contraction = start − end |
//! | > 0 | 0 | churn = start |
//!
//! so that `opening + new + expansion + reactivation − contraction − churn = closing`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use time::{Date, OffsetDateTime};

use super::{add_months_to_month, month_of};

/// Stripe subscription statuses that count toward MRR: the customer is being billed. Trials,
/// incomplete, unpaid, paused and canceled subscriptions count 0.
pub fn counts_toward_mrr(status: &str) -> bool {
    matches!(status, "active" | "past_due")
}

/// A price's billing interval, as Stripe's `recurring.interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }
}

/// The monthly equivalent of `amount` billed every `count` `interval`s, rounded half away from
/// zero to the minor unit: a year is 12 months, a week 12/52 of a month, a day 12/365.
pub fn monthly(amount: i64, interval: Interval, count: u32) -> i64 {
    let count = i128::from(count.max(1));
    let (numerator, denominator) = match interval {
        Interval::Month => (1, count),
        Interval::Year => (1, 12 * count),
        Interval::Week => (52, 12 * count),
        Interval::Day => (365, 12 * count),
    };
    let n = i128::from(amount) * numerator;
    let q = (n.abs() * 2 + denominator) / (2 * denominator);
    i64::try_from(q * n.signum()).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// One subscription's MRR from `at` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MrrChange {
    pub customer: String,
    pub subscription: String,
    /// Lower-case ISO 4217.
    pub currency: String,
    pub at: OffsetDateTime,
    /// Monthly recurring amount in minor units from `at` on (0: canceled, trialing, unpaid).
    pub mrr: i64,
}

/// One month of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthMovements {
    /// First day of the month. Serialized `YYYY-MM`.
    #[serde(serialize_with = "super::serialize_month")]
    pub month: Date,
    pub currency: String,
    pub opening: i64,
    pub new: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub reactivation: i64,
    pub closing: i64,
    /// Customers with MRR at the end of the month.
    pub subscribers: u64,
    pub new_customers: u64,
    pub churned_customers: u64,
}

#[derive(Default)]
struct Customer {
    subscriptions: HashMap<String, i64>,
    had_mrr: bool,
}

impl Customer {
    fn mrr(&self) -> i64 {
        self.subscriptions.values().copied().sum()
    }
}

/// Movements for every month from `from` through `to` (any day in them), per currency that
/// had a subscription change by the end of the month. Changes before `from` build the state
/// (and decide new versus reactivation); changes after `to` are ignored. Changes at equal
/// times apply in input order.
pub fn movements(changes: &[MrrChange], from: Date, to: Date) -> Vec<MonthMovements> {
    let from = month_of(from.midnight().assume_utc());
    let to = month_of(to.midnight().assume_utc());
    let mut ordered: Vec<&MrrChange> = changes.iter().collect();
    ordered.sort_by_key(|c| c.at);
    let Some(first_month) = ordered.first().map(|c| month_of(c.at)) else {
        return Vec::new();
    };

    // (currency, customer) → state.
    let mut customers: BTreeMap<(String, String), Customer> = BTreeMap::new();
    let mut currencies: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let mut next = ordered.into_iter().peekable();
    let mut month = first_month.min(from);
    while month <= to {
        let end = add_months_to_month(month, 1);
        let opening: BTreeMap<(String, String), i64> = customers
            .iter()
            .map(|(k, c)| (k.clone(), c.mrr()))
            .collect();
        while let Some(change) = next.next_if(|c| c.at < end.midnight().assume_utc()) {
            currencies.insert(change.currency.clone());
            let key = (change.currency.clone(), change.customer.clone());
            customers
                .entry(key)
                .or_default()
                .subscriptions
                .insert(change.subscription.clone(), change.mrr);
        }
        let mut rows: BTreeMap<&str, MonthMovements> = currencies
            .iter()
            .map(|c| {
                let row = MonthMovements {
                    month,
                    currency: c.clone(),
                    opening: 0,
                    new: 0,
                    expansion: 0,
                    contraction: 0,
                    churn: 0,
                    reactivation: 0,
                    closing: 0,
                    subscribers: 0,
                    new_customers: 0,
                    churned_customers: 0,
                };
                (c.as_str(), row)
            })
            .collect();
        for (key, customer) in customers.iter_mut() {
            let start = opening.get(key).copied().unwrap_or(0);
            let close = customer.mrr();
            let Some(row) = rows.get_mut(key.0.as_str()) else {
                continue;
            };
            row.opening += start;
            row.closing += close;
            if close > 0 {
                row.subscribers += 1;
            }
            match (start, close) {
                (0, c) if c > 0 && customer.had_mrr => row.reactivation += c,
                (0, c) if c > 0 => {
                    row.new += c;
                    row.new_customers += 1;
                }
                (s, 0) if s > 0 => {
                    row.churn += s;
                    row.churned_customers += 1;
                }
                (s, c) if s > 0 && c > s => row.expansion += c - s,
                (s, c) if s > 0 && c < s => row.contraction += s - c,
                _ => {}
            }
            customer.had_mrr |= close > 0;
        }
        if month >= from {
            out.extend(rows.into_values());
        }
        month = end;
    }
    out
}

/// [`movements`] per segment (the acquisition channel, source or campaign of each change's
/// customer, as `segment_of` says): MRR by channel. A customer should map to one segment.
pub fn movements_by<F>(
    changes: &[MrrChange],
    from: Date,
    to: Date,
    segment_of: F,
) -> BTreeMap<String, Vec<MonthMovements>>
where
    F: Fn(&MrrChange) -> String,
{
    let mut parts: BTreeMap<String, Vec<MrrChange>> = BTreeMap::new();
    for c in changes {
        parts.entry(segment_of(c)).or_default().push(c.clone());
    }
    parts
        .into_iter()
        .map(|(segment, list)| (segment, movements(&list, from, to)))
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    fn change(
        customer: &str,
        sub: &str,
        currency: &str,
        at: OffsetDateTime,
        mrr: i64,
    ) -> MrrChange {
        MrrChange {
            customer: customer.to_owned(),
            subscription: sub.to_owned(),
            currency: currency.to_owned(),
            at,
            mrr,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        month: Date,
        currency: &str,
        opening: i64,
        [new, expansion, contraction, churn, reactivation]: [i64; 5],
        closing: i64,
        subscribers: u64,
        new_customers: u64,
        churned_customers: u64,
    ) -> MonthMovements {
        MonthMovements {
            month,
            currency: currency.to_owned(),
            opening,
            new,
            expansion,
            contraction,
            churn,
            reactivation,
            closing,
            subscribers,
            new_customers,
            churned_customers,
        }
    }

    #[test]
    fn scripted_subscription_life_in_two_currencies() {
        let changes = vec![
            // Alice (usd): $50/month on 10 Jan, upgraded to $80 on 15 Feb, downgraded to $60
            // on 5 Mar, canceled 20 Apr, back at $60 on 1 Jun.
            change(
                "alice",
                "sub_a1",
                "usd",
                datetime!(2025-01-10 09:00 UTC),
                5000,
            ),
            change(
                "alice",
                "sub_a1",
                "usd",
                datetime!(2025-02-15 09:00 UTC),
                8000,
            ),
            change(
                "alice",
                "sub_a1",
                "usd",
                datetime!(2025-03-05 09:00 UTC),
                6000,
            ),
            change("alice", "sub_a1", "usd", datetime!(2025-04-20 09:00 UTC), 0),
            change(
                "alice",
                "sub_a2",
                "usd",
                datetime!(2025-06-01 00:00 UTC),
                6000,
            ),
            // Bruno (eur): €1200/year on 20 Jan (€100/month), adds a €20/month seat pack on
            // 10 Mar; a third subscription on 25 Mar is still trialing (0).
            change(
                "bruno",
                "sub_b1",
                "eur",
                datetime!(2025-01-20 12:00 UTC),
                monthly(120_000, Interval::Year, 1),
            ),
            change(
                "bruno",
                "sub_b2",
                "eur",
                datetime!(2025-03-10 12:00 UTC),
                2000,
            ),
            change("bruno", "sub_b3", "eur", datetime!(2025-03-25 12:00 UTC), 0),
            // Chen (usd): subscribes 1 Feb and cancels 20 Feb: nets out within the month.
            change(
                "chen",
                "sub_c1",
                "usd",
                datetime!(2025-02-01 00:00 UTC),
                3000,
            ),
            change("chen", "sub_c1", "usd", datetime!(2025-02-20 00:00 UTC), 0),
            // Dana (usd): $10/month from 2 Apr.
            change(
                "dana",
                "sub_d1",
                "usd",
                datetime!(2025-04-02 00:00 UTC),
                1000,
            ),
        ];
        let got = movements(&changes, date!(2025 - 01 - 01), date!(2025 - 06 - 30));
        // [new, expansion, contraction, churn, reactivation]
        let expected = vec![
            row(
                date!(2025 - 01 - 01),
                "eur",
                0,
                [10_000, 0, 0, 0, 0],
                10_000,
                1,
                1,
                0,
            ),
            row(
                date!(2025 - 01 - 01),
                "usd",
                0,
                [5000, 0, 0, 0, 0],
                5000,
                1,
                1,
                0,
            ),
            row(
                date!(2025 - 02 - 01),
                "eur",
                10_000,
                [0, 0, 0, 0, 0],
                10_000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 02 - 01),
                "usd",
                5000,
                [0, 3000, 0, 0, 0],
                8000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 03 - 01),
                "eur",
                10_000,
                [0, 2000, 0, 0, 0],
                12_000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 03 - 01),
                "usd",
                8000,
                [0, 0, 2000, 0, 0],
                6000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 04 - 01),
                "eur",
                12_000,
                [0, 0, 0, 0, 0],
                12_000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 04 - 01),
                "usd",
                6000,
                [1000, 0, 0, 6000, 0],
                1000,
                1,
                1,
                1,
            ),
            row(
                date!(2025 - 05 - 01),
                "eur",
                12_000,
                [0, 0, 0, 0, 0],
                12_000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 05 - 01),
                "usd",
                1000,
                [0, 0, 0, 0, 0],
                1000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 06 - 01),
                "eur",
                12_000,
                [0, 0, 0, 0, 0],
                12_000,
                1,
                0,
                0,
            ),
            row(
                date!(2025 - 06 - 01),
                "usd",
                1000,
                [0, 0, 0, 0, 6000],
                7000,
                2,
                0,
                0,
            ),
        ];
        assert_eq!(got, expected);
        for m in &got {
            assert_eq!(
                m.opening + m.new + m.expansion + m.reactivation - m.contraction - m.churn,
                m.closing,
                "{m:?}"
            );
        }
        // A range starting later still knows Alice's history: June is a reactivation.
        let june = movements(&changes, date!(2025 - 06 - 15), date!(2025 - 06 - 15));
        assert_eq!(june, expected[10..].to_vec());
    }

    #[test]
    fn movements_by_acquisition_channel() {
        let changes = vec![
            change("ann", "s1", "usd", datetime!(2025-01-10 00:00 UTC), 5000),
            change("ben", "s2", "usd", datetime!(2025-01-12 00:00 UTC), 2000),
            change("ben", "s2", "usd", datetime!(2025-02-12 00:00 UTC), 0),
        ];
        let channel = |c: &MrrChange| {
            if c.customer == "ann" {
                "paid_search"
            } else {
                "email"
            }
            .to_owned()
        };
        let by = movements_by(
            &changes,
            date!(2025 - 01 - 01),
            date!(2025 - 02 - 28),
            channel,
        );
        assert_eq!(by.keys().collect::<Vec<_>>(), ["email", "paid_search"]);
        let email = &by["email"];
        assert_eq!(
            (email[0].new, email[1].churn, email[1].closing),
            (2000, 2000, 0)
        );
        let paid = &by["paid_search"];
        assert_eq!(
            (paid[0].new, paid[1].opening, paid[1].closing),
            (5000, 5000, 5000)
        );
    }

    #[test]
    fn monthly_equivalents() {
        let cases: &[(i64, Interval, u32, i64)] = &[
            (5000, Interval::Month, 1, 5000),
            (15_000, Interval::Month, 3, 5000),
            (120_000, Interval::Year, 1, 10_000),
            // 9999 / 12 = 833.25 → 833.
            (9999, Interval::Year, 1, 833),
            // 1000 × 52 / 12 = 4333.33 → 4333.
            (1000, Interval::Week, 1, 4333),
            // 100 × 365 / 12 = 3041.67 → 3042.
            (100, Interval::Day, 1, 3042),
            (6, Interval::Year, 1, 1),
            (5, Interval::Year, 1, 0),
            (-120_000, Interval::Year, 1, -10_000),
            (5000, Interval::Month, 0, 5000),
        ];
        for (amount, interval, count, expected) in cases {
            assert_eq!(
                monthly(*amount, *interval, *count),
                *expected,
                "{amount} {interval:?} {count}"
            );
        }
        assert_eq!(Interval::parse("year"), Some(Interval::Year));
        assert_eq!(Interval::parse("fortnight"), None);
        assert!(counts_toward_mrr("active") && counts_toward_mrr("past_due"));
        assert!(!counts_toward_mrr("trialing") && !counts_toward_mrr("canceled"));
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(movements(&[], date!(2025 - 01 - 01), date!(2025 - 12 - 31)).is_empty());
    }
}
