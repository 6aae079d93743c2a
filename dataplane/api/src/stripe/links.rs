//! The visitor a Stripe subscription or customer belongs to, and its inheritance by the
//! payments of that subscription or customer that have no visitor id of their own, whichever
//! arrives first. Runs inside the store's transaction, under its advisory lock.

use sqlx::PgConnection;
use time::OffsetDateTime;
use zori_core::stripe::PaymentFacts;

use super::store::{db, non_empty, StoreError};

/// Links the payment's subscription and customer to its own visitor (from metadata), then
/// lets every payment of that subscription or customer without a visitor of its own inherit.
pub(super) async fn carry_visitor(
    conn: &mut PgConnection,
    payment_id: i64,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let (visitor_id, visitor_source, subscription_id, customer_id): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT visitor_id, visitor_source, subscription_id, customer_id FROM payments \
         WHERE payment_id = $1",
    )
    .bind(payment_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("reading the payment's visitor"))?;
    let own = visitor_id.filter(|_| visitor_source.as_deref() == Some("metadata"));
    link(
        conn,
        own.as_deref(),
        subscription_id.as_deref(),
        customer_id.as_deref(),
        at,
    )
    .await
}

/// Records the links a no-money event carries; false when it carries none.
pub(super) async fn record_links(
    conn: &mut PgConnection,
    facts: &PaymentFacts,
) -> Result<bool, StoreError> {
    let visitor = non_empty(facts.visitor_id.as_deref());
    let subscription = non_empty(facts.ids.subscription.as_deref());
    let customer = non_empty(facts.ids.customer.as_deref());
    if visitor.is_none() || (subscription.is_none() && customer.is_none()) {
        return Ok(false);
    }
    link(
        conn,
        visitor.as_deref(),
        subscription.as_deref(),
        customer.as_deref(),
        facts.occurred_at,
    )
    .await?;
    Ok(true)
}

/// Stores subscription → visitor and customer → visitor (the earliest `at` wins) when `visitor`
/// is given, then hands the linked visitor to the payments of that subscription / customer
/// that have no visitor of their own.
async fn link(
    conn: &mut PgConnection,
    visitor: Option<&str>,
    subscription: Option<&str>,
    customer: Option<&str>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    if let Some(visitor) = visitor {
        if let Some(subscription) = subscription {
            sqlx::query(
                "INSERT INTO subscription_visitors (subscription_id, visitor_id, linked_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (subscription_id) DO UPDATE \
                 SET visitor_id = excluded.visitor_id, linked_at = excluded.linked_at \
                 WHERE excluded.linked_at < subscription_visitors.linked_at",
            )
            .bind(subscription)
            .bind(visitor)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db("linking the subscription to its visitor"))?;
        }
        if let Some(customer) = customer {
            sqlx::query(
                "INSERT INTO customer_visitors (customer_id, visitor_id, linked_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (customer_id) DO UPDATE \
                 SET visitor_id = excluded.visitor_id, linked_at = excluded.linked_at \
                 WHERE excluded.linked_at < customer_visitors.linked_at",
            )
            .bind(customer)
            .bind(visitor)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db("linking the customer to its visitor"))?;
        }
    }
    if let Some(subscription) = subscription {
        sqlx::query(
            "UPDATE payments p SET visitor_id = l.visitor_id, visitor_source = 'subscription', \
                 updated_at = now() \
             FROM subscription_visitors l \
             WHERE l.subscription_id = $1 AND p.subscription_id = l.subscription_id \
               AND p.visitor_source IS DISTINCT FROM 'metadata' \
               AND (p.visitor_id IS DISTINCT FROM l.visitor_id \
                    OR p.visitor_source IS DISTINCT FROM 'subscription')",
        )
        .bind(subscription)
        .execute(&mut *conn)
        .await
        .map_err(db("handing the subscription's visitor to its payments"))?;
    }
    if let Some(customer) = customer {
        sqlx::query(
            "UPDATE payments p SET visitor_id = l.visitor_id, visitor_source = 'customer', \
                 updated_at = now() \
             FROM customer_visitors l \
             WHERE l.customer_id = $1 AND p.customer_id = l.customer_id \
               AND (p.visitor_source IS NULL \
                    OR (p.visitor_source = 'customer' AND p.visitor_id IS DISTINCT FROM l.visitor_id))",
        )
        .bind(customer)
        .execute(&mut *conn)
        .await
        .map_err(db("handing the customer's visitor to its payments"))?;
    }
    Ok(())
}
