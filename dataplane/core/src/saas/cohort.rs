//! Lifetime value by acquisition cohort: customers grouped by the month of their first payment
//! and their acquisition channel; for each horizon (1, 3, 6, 12 months), the cohort's
//! cumulative net revenue and that revenue per customer.
//!
//! Per currency: a customer joins the cohort of their first payment in that currency. A
//! customer's revenue "after N months" is the net of their payments before the same time N
//! calendar months after their first payment. A horizon is *complete* once every customer of
//! the cohort has had N months (from the first day of the month N + 1 months after the cohort
//! month); an incomplete horizon still shows the revenue so far.

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, OffsetDateTime};

use super::{add_months, add_months_to_month, month_of};

/// Horizons reported by default, in months.
pub const HORIZONS: [u32; 4] = [1, 3, 6, 12];

/// One payment of a customer, net of refunds, with the channel the customer was acquired by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPayment {
    pub customer: String,
    /// The customer's acquisition channel (or source, campaign…); the value of their first
    /// payment is the one used.
    pub channel: String,
    pub currency: String,
    pub paid_at: OffsetDateTime,
    pub net: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Horizon {
    pub months: u32,
    /// Cumulative net revenue of the cohort's customers after `months` months.
    pub revenue: i64,
    /// `revenue / customers`, in (fractional) minor units.
    pub per_customer: f64,
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// First day of the acquisition month. Serialized `YYYY-MM`.
    #[serde(serialize_with = "super::serialize_month")]
    pub month: Date,
    pub channel: String,
    pub currency: String,
    pub customers: u64,
    pub horizons: Vec<Horizon>,
}

/// Cohorts of `payments` as of `as_of`, sorted by month, channel and currency.
pub fn cohorts(
    payments: &[CustomerPayment],
    horizons: &[u32],
    as_of: OffsetDateTime,
) -> Vec<Cohort> {
    // (currency, customer) → their payments, oldest first.
    let mut by_customer: BTreeMap<(&str, &str), Vec<&CustomerPayment>> = BTreeMap::new();
    for p in payments {
        by_customer
            .entry((p.currency.as_str(), p.customer.as_str()))
            .or_default()
            .push(p);
    }
    // (month, channel, currency) → (customers, revenue per horizon).
    let mut groups: BTreeMap<(Date, String, String), (u64, Vec<i64>)> = BTreeMap::new();
    for ((currency, _), mut list) in by_customer {
        list.sort_by_key(|p| p.paid_at);
        let first = list[0];
        let key = (
            month_of(first.paid_at),
            first.channel.clone(),
            currency.to_owned(),
        );
        let group = groups
            .entry(key)
            .or_insert_with(|| (0, vec![0; horizons.len()]));
        group.0 += 1;
        for (i, months) in horizons.iter().enumerate() {
            let until = add_months(first.paid_at, *months);
            let revenue: i64 = list
                .iter()
                .filter(|p| p.paid_at < until)
                .map(|p| p.net)
                .fold(0i64, i64::saturating_add);
            group.1[i] = group.1[i].saturating_add(revenue);
        }
    }
    groups
        .into_iter()
        .map(
            |((month, channel, currency), (customers, revenue))| Cohort {
                horizons: horizons
                    .iter()
                    .zip(revenue)
                    .map(|(months, revenue)| Horizon {
                        months: *months,
                        revenue,
                        per_customer: revenue as f64 / customers as f64,
                        complete: as_of
                            >= add_months_to_month(month, months + 1)
                                .midnight()
                                .assume_utc(),
                    })
                    .collect(),
                month,
                channel,
                currency,
                customers,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    fn pay(
        customer: &str,
        channel: &str,
        currency: &str,
        paid_at: OffsetDateTime,
        net: i64,
    ) -> CustomerPayment {
        CustomerPayment {
            customer: customer.to_owned(),
            channel: channel.to_owned(),
            currency: currency.to_owned(),
            paid_at,
            net,
        }
    }

    fn horizon(months: u32, revenue: i64, per_customer: f64, complete: bool) -> Horizon {
        Horizon {
            months,
            revenue,
            per_customer,
            complete,
        }
    }

    #[test]
    fn cumulative_revenue_per_customer_by_cohort() {
        let payments = vec![
            // January, paid search, usd: Ann pays $30 monthly from 15 Jan through 15 Jun
            // (6 payments); Bob pays $100 once on 31 Jan and is refunded $20.
            pay(
                "ann",
                "paid_search",
                "usd",
                datetime!(2025-01-15 10:00 UTC),
                3000,
            ),
            pay(
                "ann",
                "paid_search",
                "usd",
                datetime!(2025-02-15 10:00 UTC),
                3000,
            ),
            pay(
                "ann",
                "paid_search",
                "usd",
                datetime!(2025-03-15 10:00 UTC),
                3000,
            ),
            pay(
                "ann",
                "paid_search",
                "usd",
                datetime!(2025-04-15 10:00 UTC),
                3000,
            ),
            pay(
                "ann",
                "paid_search",
                "usd",
                datetime!(2025-05-15 10:00 UTC),
                3000,
            ),
            pay(
                "ann",
                "paid_search",
                "usd",
                datetime!(2025-06-15 10:00 UTC),
                3000,
            ),
            pay(
                "bob",
                "paid_search",
                "usd",
                datetime!(2025-01-31 23:00 UTC),
                8000,
            ),
            // Bob's later payment carries another channel: his cohort stays paid_search.
            pay("bob", "email", "usd", datetime!(2025-02-27 23:00 UTC), 1000),
            // January, organic search, eur: Cleo pays €50 on 3 Jan and €50 on 3 Apr.
            pay(
                "cleo",
                "organic_search",
                "eur",
                datetime!(2025-01-03 08:00 UTC),
                5000,
            ),
            pay(
                "cleo",
                "organic_search",
                "eur",
                datetime!(2025-04-03 08:00 UTC),
                5000,
            ),
            // Ann also pays once in eur in May: her eur cohort is May.
            pay(
                "ann",
                "paid_search",
                "eur",
                datetime!(2025-05-02 08:00 UTC),
                700,
            ),
        ];
        let got = cohorts(&payments, &HORIZONS, datetime!(2025-07-10 00:00 UTC));
        // Ann, 1 month (before 15 Feb 10:00): 3000. 3 months (before 15 Apr): 9000. 6 months
        // (before 15 Jul): 18000. Bob, 1 month (before 28 Feb 23:00, clamped from 31 Feb):
        // 8000 + 1000; after that still 9000. Cohort of 2.
        // Complete as of 10 Jul: 1 month from 1 Mar, 3 from 1 May, 6 from 1 Aug (no).
        // Cleo: 1 month 5000; 3 months before 3 Apr 08:00: 5000 (the payment at exactly 3
        // Apr 08:00 is not before); 6 months 10000.
        let expected = vec![
            Cohort {
                month: date!(2025 - 01 - 01),
                channel: "organic_search".to_owned(),
                currency: "eur".to_owned(),
                customers: 1,
                horizons: vec![
                    horizon(1, 5000, 5000.0, true),
                    horizon(3, 5000, 5000.0, true),
                    horizon(6, 10_000, 10_000.0, false),
                    horizon(12, 10_000, 10_000.0, false),
                ],
            },
            Cohort {
                month: date!(2025 - 01 - 01),
                channel: "paid_search".to_owned(),
                currency: "usd".to_owned(),
                customers: 2,
                horizons: vec![
                    horizon(1, 12_000, 6000.0, true),
                    horizon(3, 18_000, 9000.0, true),
                    horizon(6, 27_000, 13_500.0, false),
                    horizon(12, 27_000, 13_500.0, false),
                ],
            },
            Cohort {
                month: date!(2025 - 05 - 01),
                channel: "paid_search".to_owned(),
                currency: "eur".to_owned(),
                customers: 1,
                horizons: vec![
                    horizon(1, 700, 700.0, true),
                    horizon(3, 700, 700.0, false),
                    horizon(6, 700, 700.0, false),
                    horizon(12, 700, 700.0, false),
                ],
            },
        ];
        assert_eq!(got, expected);
    }
}
