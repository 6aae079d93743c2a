//! Trial-to-paid conversion: of the subscriptions whose trial started in a month, how many
//! went on to be billed (a status that counts toward MRR, [`super::mrr::counts_toward_mrr`]).

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, OffsetDateTime};

use super::{add_months_to_month, month_of, mrr::counts_toward_mrr};

/// A subscription's Stripe status from `at` on (`customer.subscription.*` events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub subscription: String,
    pub at: OffsetDateTime,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialMonth {
    /// First day of the month the trials started in. Serialized `YYYY-MM`.
    #[serde(serialize_with = "super::serialize_month")]
    pub month: Date,
    pub trials: u64,
    /// Of those, subscriptions billed after their trial started (up to now).
    pub converted: u64,
    /// `converted / trials`; `null` without trials.
    pub rate: Option<f64>,
}

/// One row per month from `from` through `to` (any day in them). A subscription's trial starts
/// at its first `trialing` status; a subscription that never trialed is not counted.
pub fn trial_conversion(changes: &[StatusChange], from: Date, to: Date) -> Vec<TrialMonth> {
    let mut by_subscription: BTreeMap<&str, Vec<&StatusChange>> = BTreeMap::new();
    for c in changes {
        by_subscription
            .entry(c.subscription.as_str())
            .or_default()
            .push(c);
    }
    let mut months: BTreeMap<Date, (u64, u64)> = BTreeMap::new();
    for list in by_subscription.values_mut() {
        list.sort_by_key(|c| c.at);
        let Some(start) = list.iter().find(|c| c.status == "trialing") else {
            continue;
        };
        let converted = list
            .iter()
            .any(|c| c.at >= start.at && counts_toward_mrr(&c.status));
        let month = months.entry(month_of(start.at)).or_default();
        month.0 += 1;
        month.1 += u64::from(converted);
    }
    let to = month_of(to.midnight().assume_utc());
    let mut out = Vec::new();
    let mut month = month_of(from.midnight().assume_utc());
    while month <= to {
        let (trials, converted) = months.get(&month).copied().unwrap_or_default();
        out.push(TrialMonth {
            month,
            trials,
            converted,
            rate: (trials > 0).then(|| converted as f64 / trials as f64),
        });
        month = add_months_to_month(month, 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    fn status(subscription: &str, at: OffsetDateTime, status: &str) -> StatusChange {
        StatusChange {
            subscription: subscription.to_owned(),
            at,
            status: status.to_owned(),
        }
    }

    #[test]
    fn trials_by_start_month() {
        let changes = vec![
            // January trials: s1 becomes active, s2 is canceled at the end of its trial.
            status("s1", datetime!(2025-01-05 10:00 UTC), "trialing"),
            status("s1", datetime!(2025-02-05 10:00 UTC), "active"),
            status("s2", datetime!(2025-01-20 10:00 UTC), "trialing"),
            status("s2", datetime!(2025-02-03 10:00 UTC), "canceled"),
            // February trials: s3 is billed (its first payment failed: past_due counts), s5 is
            // still trialing. Given out of order.
            status("s3", datetime!(2025-03-01 10:00 UTC), "past_due"),
            status("s3", datetime!(2025-02-01 10:00 UTC), "trialing"),
            status("s5", datetime!(2025-02-10 10:00 UTC), "trialing"),
            // No trial: not counted.
            status("s4", datetime!(2025-01-10 10:00 UTC), "active"),
        ];
        let got = trial_conversion(&changes, date!(2025 - 01 - 15), date!(2025 - 03 - 31));
        let month = |month, trials, converted, rate| TrialMonth {
            month,
            trials,
            converted,
            rate,
        };
        assert_eq!(
            got,
            vec![
                month(date!(2025 - 01 - 01), 2, 1, Some(0.5)),
                month(date!(2025 - 02 - 01), 2, 1, Some(0.5)),
                month(date!(2025 - 03 - 01), 0, 0, None),
            ]
        );
    }
}
