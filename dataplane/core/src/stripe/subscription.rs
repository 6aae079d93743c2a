//! A subscription's recurring revenue as one `customer.subscription.*` event shows it: the
//! input of MRR and its movements ([`crate::saas::mrr`]) and of trial-to-paid conversion.
//!
//! MRR is the list price: for each item, the price's `unit_amount` × `quantity`, brought to a
//! month ([`monthly`]), summed over the items, while the status is billed (`active`,
//! `past_due`); 0 otherwise (trialing, incomplete, unpaid, paused, canceled). Coupons are not
//! subtracted (a webhook carries discount ids, not their terms). Items whose price has no
//! `unit_amount` (tiered or metered usage) cannot be priced from the subscription alone: they
//! count 0 and are reported in [`SubscriptionState::unpriced_items`], so a report can say its
//! MRR is a lower bound rather than quietly undercount. Items are read from `price`, else from
//! the legacy `plan` of older API versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    currency,
    saas::mrr::{counts_toward_mrr, monthly, Interval},
};

/// What one subscription event says the subscription is billed from the event's time on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub subscription_id: String,
    /// The Stripe customer (`cus_…`); the subscription id when the event has none.
    pub customer_id: String,
    /// Lower-case ISO 4217.
    pub currency: String,
    pub status: String,
    /// Monthly recurring amount in minor units (0 while the status is not billed).
    pub mrr: i64,
    /// Items counted 0 because their price has no unit amount (tiered, metered).
    pub unpriced_items: u32,
    /// False when the event's item list was cut short (`has_more`): MRR is then a lower bound.
    pub items_complete: bool,
}

/// Why a subscription object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription object is missing {0}")]
    Missing(&'static str),
    #[error("subscription {subscription} has an invalid currency {value:?}")]
    InvalidCurrency { subscription: String, value: String },
}

/// Reads a `subscription` object (`data.object` of a `customer.subscription.*` event).
pub fn subscription_state(object: &Value) -> Result<SubscriptionState, SubscriptionError> {
    let subscription_id = object
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or(SubscriptionError::Missing("id"))?
        .to_owned();
    let status = object
        .get("status")
        .and_then(Value::as_str)
        .ok_or(SubscriptionError::Missing("status"))?
        .to_owned();
    let raw_currency = object
        .get("currency")
        .and_then(Value::as_str)
        .ok_or(SubscriptionError::Missing("currency"))?;
    let currency = currency::normalize_code(raw_currency).ok_or_else(|| {
        SubscriptionError::InvalidCurrency {
            subscription: subscription_id.clone(),
            value: raw_currency.to_owned(),
        }
    })?;
    let customer_id = match object.get("customer") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Object(c)) => c
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| subscription_id.clone(), str::to_owned),
        _ => subscription_id.clone(),
    };
    let items = object.get("items");
    let list = items
        .and_then(|i| i.get("data"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let items_complete = !items
        .and_then(|i| i.get("has_more"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut listed = 0i64;
    let mut unpriced_items = 0u32;
    for item in list {
        match item_mrr(item) {
            Some(amount) => listed = listed.saturating_add(amount),
            None => unpriced_items = unpriced_items.saturating_add(1),
        }
    }
    Ok(SubscriptionState {
        subscription_id,
        customer_id,
        currency,
        mrr: if counts_toward_mrr(&status) {
            listed
        } else {
            0
        },
        status,
        unpriced_items,
        items_complete,
    })
}

/// One item's monthly amount; `None` when its price cannot say it (no unit amount, metered,
/// no recurring interval).
fn item_mrr(item: &Value) -> Option<i64> {
    let quantity = match item.get("quantity") {
        None | Some(Value::Null) => 1,
        Some(q) => q.as_i64()?,
    };
    let (unit_amount, recurring) = match item.get("price").filter(|p| p.is_object()) {
        Some(price) => (price.get("unit_amount")?.as_i64()?, price.get("recurring")?),
        // Older API versions: the item's `plan` holds amount, interval and usage type itself.
        None => {
            let plan = item.get("plan")?;
            (plan.get("amount")?.as_i64()?, plan)
        }
    };
    if recurring.get("usage_type").and_then(Value::as_str) == Some("metered") {
        return None;
    }
    let interval = Interval::parse(recurring.get("interval")?.as_str()?)?;
    let count = recurring
        .get("interval_count")
        .and_then(Value::as_u64)
        .map_or(1, |c| u32::try_from(c).unwrap_or(u32::MAX));
    Some(monthly(
        unit_amount.saturating_mul(quantity),
        interval,
        count,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stripe::fixtures::ApiVersion;

    /// Stripe's example subscription of `version` with one item at `unit_amount` × `quantity`
    /// every `count` `interval`s.
    fn example(
        version: ApiVersion,
        status: &str,
        unit_amount: Value,
        quantity: i64,
        interval: &str,
        count: u32,
    ) -> Value {
        version
            .object("subscription")
            .unwrap()
            .with("status", status)
            .with("currency", "EUR")
            .with("items.data.0.price.unit_amount", unit_amount)
            .with("items.data.0.quantity", quantity)
            .with("items.data.0.price.recurring.interval", interval)
            .with("items.data.0.price.recurring.interval_count", count)
            .into_value()
    }

    #[test]
    fn reads_stripes_example_subscription_in_both_versions() {
        for version in ApiVersion::ALL {
            let object = version.object("subscription").unwrap().into_value();
            let state = subscription_state(&object).unwrap();
            // The example: active, usd, one item of price 2000 monthly, quantity 1.
            assert_eq!(
                state,
                SubscriptionState {
                    subscription_id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".to_owned(),
                    customer_id: "cus_QXg1o8vcGmoR32".to_owned(),
                    currency: "usd".to_owned(),
                    status: "active".to_owned(),
                    mrr: 2000,
                    unpriced_items: 0,
                    items_complete: true,
                },
                "{version:?}"
            );
        }
    }

    #[test]
    fn monthly_amount_from_price_quantity_and_interval() {
        // (status, unit amount, quantity, interval, count, expected MRR)
        let cases: &[(&str, Value, i64, &str, u32, i64)] = &[
            ("active", json!(1500), 3, "month", 1, 4500),
            ("past_due", json!(1500), 3, "month", 1, 4500),
            ("active", json!(120_000), 1, "year", 1, 10_000),
            ("active", json!(30_000), 2, "month", 3, 20_000),
            ("active", json!(1000), 1, "week", 1, 4333),
            ("trialing", json!(1500), 3, "month", 1, 0),
            ("canceled", json!(1500), 3, "month", 1, 0),
            ("incomplete", json!(1500), 1, "month", 1, 0),
            ("unpaid", json!(1500), 1, "month", 1, 0),
            ("paused", json!(1500), 1, "month", 1, 0),
        ];
        for version in ApiVersion::ALL {
            for (status, unit, quantity, interval, count, expected) in cases {
                let object = example(version, status, unit.clone(), *quantity, interval, *count);
                let state = subscription_state(&object).unwrap();
                assert_eq!(
                    (state.mrr, state.currency.as_str(), state.unpriced_items),
                    (*expected, "eur", 0),
                    "{version:?} {status} {unit} × {quantity} per {count} {interval}"
                );
            }
        }
    }

    #[test]
    fn tiered_and_metered_items_are_reported_not_guessed() {
        for version in ApiVersion::ALL {
            let tiered = example(version, "active", Value::Null, 1, "month", 1);
            let state = subscription_state(&tiered).unwrap();
            assert_eq!((state.mrr, state.unpriced_items), (0, 1), "{version:?}");

            let metered = version
                .object("subscription")
                .unwrap()
                .with("items.data.0.price.recurring.usage_type", "metered")
                .into_value();
            let state = subscription_state(&metered).unwrap();
            assert_eq!((state.mrr, state.unpriced_items), (0, 1), "{version:?}");

            let cut = version
                .object("subscription")
                .unwrap()
                .with("items.has_more", true)
                .into_value();
            assert!(!subscription_state(&cut).unwrap().items_complete);
        }
    }

    #[test]
    fn items_sum_and_legacy_plans_count() {
        let mut object = ApiVersion::Basil
            .object("subscription")
            .unwrap()
            .into_value();
        let item = object["items"]["data"][0].clone();
        let mut yearly = item.clone();
        yearly["price"]["unit_amount"] = json!(24_000);
        yearly["price"]["recurring"]["interval"] = json!("year");
        // An item of an old API version: a plan and no price.
        let mut legacy = item;
        legacy["price"] = Value::Null;
        legacy["plan"]["amount"] = json!(500);
        legacy["plan"]["interval"] = json!("month");
        legacy["plan"]["interval_count"] = json!(1);
        legacy["quantity"] = json!(2);
        object["items"]["data"] = json!([object["items"]["data"][0], yearly, legacy]);
        let state = subscription_state(&object).unwrap();
        assert_eq!(state.mrr, 2000 + 2000 + 1000);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let object = ApiVersion::Basil
            .object("subscription")
            .unwrap()
            .into_value();
        for field in ["id", "status", "currency"] {
            let mut broken = object.clone();
            broken[field] = Value::Null;
            assert_eq!(
                subscription_state(&broken),
                Err(SubscriptionError::Missing(field))
            );
        }
        let mut bad = object;
        bad["currency"] = json!("dollars");
        assert!(matches!(
            subscription_state(&bad),
            Err(SubscriptionError::InvalidCurrency { .. })
        ));
        // Without a customer the subscription stands for its customer.
        let mut lone = ApiVersion::Acacia
            .object("subscription")
            .unwrap()
            .into_value();
        lone["customer"] = Value::Null;
        assert_eq!(
            subscription_state(&lone).unwrap().customer_id,
            "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
        );
    }
}
