//! The subscription history: what each `customer.subscription.*` event said a subscription is
//! billed from its time on (`subscription_changes`, one row per event), read by the MRR report.

use sqlx::PgConnection;
use zori_core::stripe::{PaymentFacts, SubscriptionState};

use super::store::{db, StoreError};

/// Orders events of one subscription within the same second (Stripe's `created` has seconds):
/// a creation first, a deletion last.
fn event_rank(event_type: &str) -> i16 {
    match event_type {
        "customer.subscription.created" => 0,
        "customer.subscription.deleted" => 2,
        _ => 1,
    }
}

/// Stores the state `facts` carries (a redelivered event adds nothing).
pub(super) async fn record_subscription_change(
    conn: &mut PgConnection,
    facts: &PaymentFacts,
    state: &SubscriptionState,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscription_changes
             (event_id, subscription_id, customer_id, livemode, occurred_at, event_rank, status,
              currency, mrr, unpriced_items, items_complete)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&facts.event_id)
    .bind(&state.subscription_id)
    .bind(&state.customer_id)
    .bind(facts.livemode)
    .bind(facts.occurred_at)
    .bind(event_rank(&facts.event_type))
    .bind(&state.status)
    .bind(&state.currency)
    .bind(state.mrr)
    .bind(i32::try_from(state.unpriced_items).unwrap_or(i32::MAX))
    .bind(state.items_complete)
    .execute(conn)
    .await
    .map_err(db("storing the subscription change"))?;
    Ok(())
}
