//! Refunds (`re_…`) and disputes (`dp_…`) of a payment as records of their own, and the
//! refunded / disputed totals derived from them onto the payment. Runs inside the store's
//! transaction, under its advisory lock.

use std::cmp::max;

use sqlx::PgConnection;
use time::OffsetDateTime;
use zori_core::stripe::{DisputeState, RefundStatus};

use super::store::{db, StoreError};

pub(super) struct RefundRecord<'a> {
    pub(super) refund_id: &'a str,
    pub(super) amount: i64,
    pub(super) currency: &'a str,
    pub(super) status: RefundStatus,
    pub(super) created_at: OffsetDateTime,
}

/// Creates or updates a refund; its status only moves forward ([`RefundStatus`] order).
pub(super) async fn upsert_refund(
    conn: &mut PgConnection,
    payment_id: i64,
    refund: &RefundRecord<'_>,
) -> Result<(), StoreError> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT status FROM refunds WHERE refund_id = $1 FOR UPDATE")
            .bind(refund.refund_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("reading the refund"))?;
    let status = match stored.as_deref().and_then(RefundStatus::parse) {
        Some(stored) => max(stored, refund.status),
        None => refund.status,
    };
    sqlx::query(
        "INSERT INTO refunds (refund_id, payment_id, amount, currency, status, counts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (refund_id) DO UPDATE SET payment_id = $2, amount = $3, currency = $4, \
             status = $5, counts = $6, updated_at = now()",
    )
    .bind(refund.refund_id)
    .bind(payment_id)
    .bind(refund.amount)
    .bind(refund.currency.trim().to_ascii_lowercase())
    .bind(status.as_str())
    .bind(status.takes_money_back())
    .bind(refund.created_at)
    .execute(&mut *conn)
    .await
    .map_err(db("storing the refund"))?;
    Ok(())
}

pub(super) struct DisputeRecord<'a> {
    pub(super) dispute_id: &'a str,
    pub(super) amount: i64,
    pub(super) currency: &'a str,
    pub(super) state: &'a DisputeState,
    pub(super) created_at: OffsetDateTime,
}

/// Creates or updates a dispute; a final status and the balance transactions seen never go back.
pub(super) async fn upsert_dispute(
    conn: &mut PgConnection,
    payment_id: i64,
    dispute: &DisputeRecord<'_>,
) -> Result<(), StoreError> {
    let stored: Option<(String, i64)> = sqlx::query_as(
        "SELECT status, balance_transactions FROM disputes WHERE dispute_id = $1 FOR UPDATE",
    )
    .bind(dispute.dispute_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("reading the dispute"))?;
    let state = match stored {
        Some((status, balance_transactions)) => DisputeState {
            status,
            balance_transactions,
        }
        .merge(dispute.state),
        None => dispute.state.clone(),
    };
    sqlx::query(
        "INSERT INTO disputes (dispute_id, payment_id, amount, currency, status, \
             balance_transactions, counts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (dispute_id) DO UPDATE SET payment_id = $2, amount = $3, currency = $4, \
             status = $5, balance_transactions = $6, counts = $7, updated_at = now()",
    )
    .bind(dispute.dispute_id)
    .bind(payment_id)
    .bind(dispute.amount)
    .bind(dispute.currency.trim().to_ascii_lowercase())
    .bind(&state.status)
    .bind(state.balance_transactions)
    .bind(state.takes_money_back())
    .bind(dispute.created_at)
    .execute(&mut *conn)
    .await
    .map_err(db("storing the dispute"))?;
    Ok(())
}

/// Refunded = the refunds that take money back when any refund record is known, else the
/// charge's own cumulative `amount_refunded`; disputed = disputes whose money is out.
pub(super) async fn derive_totals(
    conn: &mut PgConnection,
    payment_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments p SET
            amount_refunded = CASE
                WHEN EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.payment_id)
                THEN (SELECT COALESCE(sum(r.amount), 0) FROM refunds r
                       WHERE r.payment_id = p.payment_id AND r.counts)
                ELSE COALESCE(p.charge_amount_refunded, 0) END,
            amount_disputed = (SELECT COALESCE(sum(d.amount), 0) FROM disputes d
                                WHERE d.payment_id = p.payment_id AND d.counts),
            refunded_at = GREATEST(p.refunded_at,
                (SELECT max(r.created_at) FROM refunds r WHERE r.payment_id = p.payment_id))
         WHERE p.payment_id = $1",
    )
    .bind(payment_id)
    .execute(&mut *conn)
    .await
    .map_err(db("deriving the refunded and disputed totals"))?;
    Ok(())
}
