//! Invoice payments (`inpay_…`, API 2025-03-31.basil and later): the allocation of (part of) an
//! invoice to the money movement that paid it. One invoice may be paid by several payment
//! intents and one payment intent may pay several invoices, so a payment row is one money
//! movement and an invoice is shared by the payments of its allocations: they all get the
//! invoice's subscription, customer, email and visitor. Runs inside the store's transaction,
//! under its advisory lock.

use sqlx::PgConnection;

use super::store::{db, StoreError};

/// One `invoice_payment.paid`: `amount` of `invoice_id` paid by the payment it is stored on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Allocation {
    pub(super) invoice_payment_id: String,
    pub(super) invoice_id: String,
    pub(super) amount: i64,
    pub(super) currency: String,
}

/// Stores the allocation on `payment_id` (a duplicate changes nothing), lets the payment be
/// found by its invoice when no other payment claimed the invoice yet, and makes a payment
/// known only from allocations worth their sum (one payment intent paying several invoices).
pub(super) async fn record_allocation(
    conn: &mut PgConnection,
    payment_id: i64,
    allocation: &Allocation,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO invoice_allocations (invoice_payment_id, invoice_id, payment_id, amount, \
             currency) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (invoice_payment_id) DO UPDATE SET payment_id = $3",
    )
    .bind(&allocation.invoice_payment_id)
    .bind(&allocation.invoice_id)
    .bind(payment_id)
    .bind(allocation.amount)
    .bind(&allocation.currency)
    .execute(&mut *conn)
    .await
    .map_err(db("storing the invoice payment"))?;
    sqlx::query(
        "INSERT INTO payment_aliases (alias, payment_id) VALUES ($1, $2) \
         ON CONFLICT (alias) DO NOTHING",
    )
    .bind(&allocation.invoice_id)
    .bind(payment_id)
    .execute(&mut *conn)
    .await
    .map_err(db("storing the invoice as a payment id"))?;
    Ok(())
}

/// A payment whose amount was set by invoice payments is worth the sum of its allocations in
/// its currency (a payment intent or charge event, when seen, states the amount itself).
pub(super) async fn derive_allocated_amount(
    conn: &mut PgConnection,
    payment_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments p SET amount = s.total, updated_at = now() \
         FROM (SELECT sum(a.amount)::int8 AS total FROM invoice_allocations a \
               JOIN payments q ON q.payment_id = a.payment_id AND q.currency = a.currency \
               WHERE a.payment_id = $1) s \
         WHERE p.payment_id = $1 AND p.amount_source = 'invoice_payment' \
           AND s.total IS NOT NULL AND p.amount <> s.total",
    )
    .bind(payment_id)
    .execute(&mut *conn)
    .await
    .map_err(db("summing the payment's invoice payments"))?;
    Ok(())
}

/// Shares what the invoices of `payment_id` say about the payer (subscription, customer, email,
/// description, visitor) with every payment of those invoices that lacks it: the payments of
/// one invoice paid in parts are one customer's. `invoice` is the invoice the current event
/// named, if any. Returns the other payments that changed (their visitor and credit are due).
pub(super) async fn share_invoice_payer(
    conn: &mut PgConnection,
    payment_id: i64,
    invoice: Option<&str>,
) -> Result<Vec<i64>, StoreError> {
    let changed: Vec<i64> = sqlx::query_scalar(
        "WITH invoices AS (
             SELECT invoice_id FROM invoice_allocations WHERE payment_id = $1
             UNION SELECT $2::text WHERE $2::text IS NOT NULL
         ), grp AS (
             SELECT payment_id FROM invoice_allocations
              WHERE invoice_id IN (SELECT invoice_id FROM invoices)
             UNION SELECT payment_id FROM payment_aliases
              WHERE alias IN (SELECT invoice_id FROM invoices)
         ), payer AS (
             SELECT
               (array_agg(subscription_id ORDER BY payment_id)
                  FILTER (WHERE subscription_id IS NOT NULL))[1] AS subscription_id,
               (array_agg(customer_id ORDER BY payment_id)
                  FILTER (WHERE customer_id IS NOT NULL))[1] AS customer_id,
               (array_agg(email_hash ORDER BY payment_id)
                  FILTER (WHERE email_hash IS NOT NULL))[1] AS email_hash,
               (array_agg(description ORDER BY payment_id)
                  FILTER (WHERE description IS NOT NULL))[1] AS description,
               (array_agg(visitor_id ORDER BY payment_id)
                  FILTER (WHERE visitor_source = 'metadata'))[1] AS visitor_id
             FROM payments WHERE payment_id IN (SELECT payment_id FROM grp)
         )
         UPDATE payments p SET
             subscription_id = COALESCE(p.subscription_id, payer.subscription_id),
             customer_id = COALESCE(p.customer_id, payer.customer_id),
             email_hash = COALESCE(p.email_hash, payer.email_hash),
             description = COALESCE(p.description, payer.description),
             visitor_id = CASE WHEN p.visitor_source = 'metadata' OR payer.visitor_id IS NULL
                               THEN p.visitor_id ELSE payer.visitor_id END,
             visitor_source = CASE WHEN p.visitor_source = 'metadata' OR payer.visitor_id IS NULL
                                   THEN p.visitor_source ELSE 'metadata' END,
             updated_at = now()
         FROM payer
         WHERE p.payment_id IN (SELECT payment_id FROM grp)
           AND ((p.subscription_id IS NULL AND payer.subscription_id IS NOT NULL)
             OR (p.customer_id IS NULL AND payer.customer_id IS NOT NULL)
             OR (p.email_hash IS NULL AND payer.email_hash IS NOT NULL)
             OR (p.description IS NULL AND payer.description IS NOT NULL)
             OR (p.visitor_source IS DISTINCT FROM 'metadata' AND payer.visitor_id IS NOT NULL))
         RETURNING p.payment_id",
    )
    .bind(payment_id)
    .bind(invoice)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("sharing the invoice's payer with its payments"))?;
    Ok(changed.into_iter().filter(|&id| id != payment_id).collect())
}
