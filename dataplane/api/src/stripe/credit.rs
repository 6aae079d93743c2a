//! A payment's credit, decided when it arrives and kept: which visitor's first touch gets its
//! revenue, and why (`visitor`, `subscription`, `customer`, `email`). Runs inside the store's
//! transaction, under its advisory lock.
//!
//! The payer's user is found by the payment's visitor, else by the payer's email; the credited
//! visitor is that user's earliest visitor first seen within the lookback window before the
//! payment (else the user's latest one before the window), or without a user the payment's own
//! visitor. An unidentified paying visitor whose email matches a user joins that user. Nothing
//! is stored while no visitor is known (the reports resolve such payments when they run).

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::store::{db, StoreError};

/// How strong a credit reason is. Later events about the same payment may replace a weaker
/// stored credit (an inherited customer visitor by the payment's own visitor id); nothing else
/// ever changes a stored credit. A credit by email is as final as one by the payment's own
/// visitor: that visitor was made part of the user by it.
fn rank(reason: Option<&str>) -> u8 {
    match reason {
        Some("visitor" | "email") => 3,
        Some("subscription") => 2,
        Some(_) => 1,
        None => 0,
    }
}

/// The reason the payment's current visitor would give (`visitor_source` → reason).
fn visitor_reason(visitor_source: Option<&str>) -> &'static str {
    match visitor_source {
        Some("subscription") => "subscription",
        Some("customer") => "customer",
        _ => "visitor",
    }
}

#[derive(sqlx::FromRow)]
struct Payment {
    paid_at: OffsetDateTime,
    visitor_id: Option<String>,
    visitor_source: Option<String>,
    email_hash: Option<String>,
    credit_reason: Option<String>,
}

/// Computes and stores the payment's credit when it has none or a weaker one.
pub(super) async fn credit(
    conn: &mut PgConnection,
    payment_id: i64,
    lookback: Duration,
) -> Result<(), StoreError> {
    let payment: Option<Payment> = sqlx::query_as(
        "SELECT paid_at, visitor_id, visitor_source, email_hash, credit_reason FROM payments \
         WHERE payment_id = $1 AND amount > 0",
    )
    .bind(payment_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("reading the payment to credit"))?;
    let Some(p) = payment else {
        return Ok(());
    };
    let reachable = p
        .visitor_id
        .as_ref()
        .map(|_| visitor_reason(p.visitor_source.as_deref()));
    if p.credit_reason.is_some() && rank(reachable) <= rank(p.credit_reason.as_deref()) {
        return Ok(());
    }
    let own = known_visitor(conn, p.visitor_id.as_deref()).await?;
    let (visitor, reason) = match payer(conn, &p).await? {
        Some((user, by_email)) => {
            if by_email {
                if let Some(own) = &own {
                    join_user(conn, own, user, p.paid_at).await?;
                }
            }
            let earliest = earliest_visitor(conn, user, p.paid_at, lookback).await?;
            let reason = if by_email {
                "email"
            } else {
                visitor_reason(p.visitor_source.as_deref())
            };
            (earliest.or(own), reason)
        }
        None => (own, visitor_reason(p.visitor_source.as_deref())),
    };
    let Some(visitor) = visitor else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE payments SET credit_visitor_id = $2, credit_reason = $3, credited_at = now() \
         WHERE payment_id = $1",
    )
    .bind(payment_id)
    .bind(visitor)
    .bind(reason)
    .execute(&mut *conn)
    .await
    .map_err(db("storing the payment's credit"))?;
    Ok(())
}

/// The visitor id when the consumer has seen that visitor.
async fn known_visitor(
    conn: &mut PgConnection,
    visitor_id: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let Some(visitor_id) = visitor_id else {
        return Ok(None);
    };
    sqlx::query_scalar("SELECT visitor_id FROM visitors WHERE visitor_id = $1")
        .bind(visitor_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("looking the payment's visitor up"))
}

/// The payer's user: by the payment's visitor, else by email (`true`).
async fn payer(conn: &mut PgConnection, p: &Payment) -> Result<Option<(i64, bool)>, StoreError> {
    if let Some(visitor_id) = &p.visitor_id {
        let user: Option<i64> =
            sqlx::query_scalar("SELECT user_id FROM identities WHERE visitor_id = $1")
                .bind(visitor_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db("looking the payment's visitor's user up"))?;
        if let Some(user) = user {
            return Ok(Some((user, false)));
        }
    }
    let Some(hash) = &p.email_hash else {
        return Ok(None);
    };
    let user: Option<i64> = sqlx::query_scalar("SELECT user_id FROM users WHERE email_hash = $1")
        .bind(hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("looking the payer's email up"))?;
    Ok(user.map(|user| (user, true)))
}

/// The user's earliest visitor first seen within `lookback` before `paid_at`, else the latest
/// one first seen before that window.
async fn earliest_visitor(
    conn: &mut PgConnection,
    user: i64,
    paid_at: OffsetDateTime,
    lookback: Duration,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT v.visitor_id FROM identities i JOIN visitors v USING (visitor_id) \
         WHERE i.user_id = $1 AND v.first_seen_at <= $3 \
         ORDER BY (v.first_seen_at < $2), \
                  CASE WHEN v.first_seen_at >= $2 THEN v.first_seen_at END, \
                  v.first_seen_at DESC, v.ft_event_id \
         LIMIT 1",
    )
    .bind(user)
    .bind(paid_at - lookback)
    .bind(paid_at)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("finding the user's earliest touch"))
}

/// The paying device belongs to the user its payer's email names (an identify() on another
/// device, or a later one here, may still move it: it never overwrites an identity).
async fn join_user(
    conn: &mut PgConnection,
    visitor_id: &str,
    user: i64,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO identities (visitor_id, user_id, identified_at) \
         VALUES ($1, $2, $3) ON CONFLICT (visitor_id) DO NOTHING",
    )
    .bind(visitor_id)
    .bind(user)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(db("linking the paying visitor to its user"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stronger_reason_replaces_a_stored_credit() {
        let replaces = |reachable: Option<&str>, stored: &str| rank(reachable) > rank(Some(stored));
        assert!(replaces(Some("visitor"), "customer"));
        assert!(replaces(Some("subscription"), "customer"));
        assert!(replaces(Some("visitor"), "subscription"));
        assert!(!replaces(Some("visitor"), "email"));
        assert!(!replaces(Some("customer"), "customer"));
        assert!(!replaces(None, "customer"));
        assert_eq!(visitor_reason(Some("metadata")), "visitor");
        assert_eq!(visitor_reason(Some("customer")), "customer");
        assert_eq!(visitor_reason(None), "visitor");
    }
}
