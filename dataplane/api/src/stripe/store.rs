//! The payment ledger: one Postgres transaction per verified Stripe event.
//!
//! The event id is inserted first (a replay is a no-op), under a per-tenant advisory lock that
//! serialises every payment merge. A payment is found through any Stripe id it is known by
//! (`payment_aliases`); two events about the same money update one row, never add a second.

use std::cmp::max;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use zori_core::{
    email,
    stripe::{PaymentChange, PaymentFacts},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("database error while {doing}: {source}")]
    Database {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { doing, source }
}

/// The envelope every Stripe event has, read before (and independently of) the payment facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct EventHeader {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub livemode: bool,
}

/// What `zori_core::stripe::extract` made of a verified event.
#[derive(Debug)]
pub(crate) enum Reading {
    /// A type that carries no payment change.
    Ignored,
    /// A handled type whose payload could not be read.
    Unreadable,
    Facts(Box<PaymentFacts>),
}

/// What recording one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Duplicate,
    Ignored,
    Unreadable,
    Payment {
        payment_id: i64,
        effect: Effect,
        /// Other payment rows found to describe the same money and folded into this one.
        folded: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Money in, first event about this payment.
    Created,
    /// Money in, merged into a payment already known by one of its ids.
    Merged,
    /// Refund recorded; `created` when the payment was not known yet.
    Refunded { created: bool },
}

impl Effect {
    fn outcome(self) -> &'static str {
        match self {
            Effect::Created => "payment_created",
            Effect::Merged => "payment_merged",
            Effect::Refunded { .. } => "refund_recorded",
        }
    }
}

/// Records one verified event in a single transaction: nothing of it is visible unless all of it
/// is committed (including the `stripe_events` row, so a failed event is retried in full).
pub(crate) async fn record(
    pool: &PgPool,
    tenant_id: &str,
    email_salt: &str,
    header: &EventHeader,
    reading: &Reading,
) -> Result<Recorded, StoreError> {
    let mut tx = pool.begin().await.map_err(db("starting a transaction"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("zori:{tenant_id}:payments"))
        .execute(&mut *tx)
        .await
        .map_err(db("taking the payments lock"))?;

    let initial_outcome = match reading {
        Reading::Ignored => "ignored",
        Reading::Unreadable => "unreadable",
        Reading::Facts(_) => "processing",
    };
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (event_id, event_type, livemode, outcome) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&header.id)
    .bind(&header.event_type)
    .bind(header.livemode)
    .bind(initial_outcome)
    .execute(&mut *tx)
    .await
    .map_err(db("storing the event id"))?
    .rows_affected();
    if inserted == 0 {
        tx.rollback()
            .await
            .map_err(db("ending the transaction of a duplicate event"))?;
        return Ok(Recorded::Duplicate);
    }

    let recorded = match reading {
        Reading::Ignored => Recorded::Ignored,
        Reading::Unreadable => Recorded::Unreadable,
        Reading::Facts(facts) => {
            let observation = Observation::from_facts(facts, email_salt);
            let applied = apply(&mut tx, &observation).await?;
            let effect = match (&facts.change, applied.created) {
                (PaymentChange::Paid { .. }, true) => Effect::Created,
                (PaymentChange::Paid { .. }, false) => Effect::Merged,
                (PaymentChange::Refunded { .. }, created) => Effect::Refunded { created },
            };
            sqlx::query(
                "UPDATE stripe_events SET outcome = $2, payment_id = $3 WHERE event_id = $1",
            )
            .bind(&header.id)
            .bind(effect.outcome())
            .bind(applied.payment_id)
            .execute(&mut *tx)
            .await
            .map_err(db("storing the event outcome"))?;
            Recorded::Payment {
                payment_id: applied.payment_id,
                effect,
                folded: applied.folded,
            }
        }
    };
    tx.commit()
        .await
        .map_err(db("committing the transaction"))?;
    Ok(recorded)
}

struct Applied {
    payment_id: i64,
    created: bool,
    folded: usize,
}

/// Creates or merges the payment `observation` describes. Runs under the advisory lock.
async fn apply(conn: &mut PgConnection, observation: &Observation) -> Result<Applied, StoreError> {
    let rows: Vec<PaymentRow> = sqlx::query_as(
        "SELECT payment_id, paid_at, amount, currency, amount_refunded, refunded_at, visitor_id, \
                email_hash, customer_id, subscription_id, description, livemode, amount_source \
         FROM payments \
         WHERE payment_id IN (SELECT payment_id FROM payment_aliases WHERE alias = ANY($1)) \
         ORDER BY payment_id \
         FOR UPDATE",
    )
    .bind(&observation.aliases)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("looking the payment up by its stripe ids"))?;

    let mut rows = rows.into_iter();
    let applied = match rows.next() {
        None => {
            let payment_id: i64 = sqlx::query_scalar(
                "INSERT INTO payments (paid_at, amount, currency, amount_refunded, refunded_at, \
                 visitor_id, email_hash, customer_id, subscription_id, description, livemode, \
                 amount_source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             RETURNING payment_id",
            )
            .bind(observation.paid_at)
            .bind(observation.amount)
            .bind(&observation.currency)
            .bind(observation.amount_refunded)
            .bind(observation.refunded_at)
            .bind(&observation.visitor_id)
            .bind(&observation.email_hash)
            .bind(&observation.customer_id)
            .bind(&observation.subscription_id)
            .bind(&observation.description)
            .bind(observation.livemode)
            .bind(observation.source.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(db("inserting the payment"))?;
            Applied {
                payment_id,
                created: true,
                folded: 0,
            }
        }
        Some(mut survivor) => {
            let losers: Vec<PaymentRow> = rows.collect();
            let mut changed = false;
            for loser in &losers {
                changed |= merge(&mut survivor, &Observation::from_row(loser));
            }
            changed |= merge(&mut survivor, observation);
            if changed {
                sqlx::query(
                    "UPDATE payments SET paid_at = $2, amount = $3, currency = $4, \
                     amount_refunded = $5, refunded_at = $6, visitor_id = $7, email_hash = $8, \
                     customer_id = $9, subscription_id = $10, description = $11, \
                     amount_source = $12, updated_at = now() \
                 WHERE payment_id = $1",
                )
                .bind(survivor.payment_id)
                .bind(survivor.paid_at)
                .bind(survivor.amount)
                .bind(&survivor.currency)
                .bind(survivor.amount_refunded)
                .bind(survivor.refunded_at)
                .bind(&survivor.visitor_id)
                .bind(&survivor.email_hash)
                .bind(&survivor.customer_id)
                .bind(&survivor.subscription_id)
                .bind(&survivor.description)
                .bind(&survivor.amount_source)
                .execute(&mut *conn)
                .await
                .map_err(db("updating the payment"))?;
            }
            if !losers.is_empty() {
                let loser_ids: Vec<i64> = losers.iter().map(|row| row.payment_id).collect();
                tracing::info!(
                    payment_id = survivor.payment_id,
                    folded = ?loser_ids,
                    "stripe ids link payments stored apart; folding them into one"
                );
                for statement in [
                    "UPDATE payment_aliases SET payment_id = $1 WHERE payment_id = ANY($2)",
                    "UPDATE stripe_events SET payment_id = $1 WHERE payment_id = ANY($2)",
                    "DELETE FROM payments WHERE payment_id = ANY($2) AND payment_id <> $1",
                ] {
                    sqlx::query(statement)
                        .bind(survivor.payment_id)
                        .bind(&loser_ids)
                        .execute(&mut *conn)
                        .await
                        .map_err(db("folding duplicate payments"))?;
                }
            }
            Applied {
                payment_id: survivor.payment_id,
                created: false,
                folded: losers.len(),
            }
        }
    };

    if !observation.aliases.is_empty() {
        sqlx::query(
            "INSERT INTO payment_aliases (alias, payment_id) \
             SELECT alias, $2 FROM unnest($1::text[]) AS alias \
             ON CONFLICT (alias) DO NOTHING",
        )
        .bind(&observation.aliases)
        .bind(applied.payment_id)
        .execute(&mut *conn)
        .await
        .map_err(db("storing the payment's stripe ids"))?;
    }
    Ok(applied)
}

/// Which kind of Stripe object set a payment's amount, currency and `paid_at`. They all describe
/// the same money; the charge is the money actually moved, so it wins, and a refund seen before
/// its payment only holds the place until any payment event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AmountSource {
    Refund,
    Other,
    CheckoutSession,
    Invoice,
    PaymentIntent,
    Charge,
}

impl AmountSource {
    fn of_paid_event(event_type: &str) -> AmountSource {
        if event_type.starts_with("charge.") {
            AmountSource::Charge
        } else if event_type.starts_with("payment_intent.") {
            AmountSource::PaymentIntent
        } else if event_type.starts_with("invoice.") || event_type.starts_with("invoice_payment.") {
            AmountSource::Invoice
        } else if event_type.starts_with("checkout.session.") {
            AmountSource::CheckoutSession
        } else {
            AmountSource::Other
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AmountSource::Refund => "refund",
            AmountSource::Other => "other",
            AmountSource::CheckoutSession => "checkout_session",
            AmountSource::Invoice => "invoice",
            AmountSource::PaymentIntent => "payment_intent",
            AmountSource::Charge => "charge",
        }
    }

    fn parse(stored: &str) -> AmountSource {
        match stored {
            "refund" => AmountSource::Refund,
            "checkout_session" => AmountSource::CheckoutSession,
            "invoice" => AmountSource::Invoice,
            "payment_intent" => AmountSource::PaymentIntent,
            "charge" => AmountSource::Charge,
            _ => AmountSource::Other,
        }
    }
}

/// A `payments` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct PaymentRow {
    payment_id: i64,
    paid_at: OffsetDateTime,
    amount: i64,
    currency: String,
    amount_refunded: i64,
    refunded_at: Option<OffsetDateTime>,
    visitor_id: Option<String>,
    email_hash: Option<String>,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    description: Option<String>,
    livemode: bool,
    amount_source: String,
}

/// What one event (or one duplicate row being folded) says about a payment, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    aliases: Vec<String>,
    paid_at: OffsetDateTime,
    amount: i64,
    currency: String,
    source: AmountSource,
    amount_refunded: i64,
    refunded_at: Option<OffsetDateTime>,
    visitor_id: Option<String>,
    email_hash: Option<String>,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    description: Option<String>,
    livemode: bool,
}

impl Observation {
    fn from_facts(facts: &PaymentFacts, email_salt: &str) -> Observation {
        let mut aliases: Vec<String> = facts
            .ids
            .aliases()
            .into_iter()
            .map(str::trim)
            .filter(|alias| !alias.is_empty())
            .map(str::to_owned)
            .collect();
        aliases.sort();
        aliases.dedup();
        let (paid_at, amount, currency, source, amount_refunded, refunded_at) = match &facts.change
        {
            PaymentChange::Paid {
                amount,
                currency,
                paid_at,
            } => (
                *paid_at,
                *amount,
                currency,
                AmountSource::of_paid_event(&facts.event_type),
                0,
                None,
            ),
            // The refund's charge amount is not in the contract: until a payment event arrives,
            // the row holds the refunded amount (source `refund`, replaced by any payment event).
            // A refund event carries the whole charge: it states the payment as well as the
            // charge.succeeded event does.
            PaymentChange::Refunded {
                amount,
                paid_at,
                amount_refunded,
                currency,
                refunded_at,
            } => (
                *paid_at,
                *amount,
                currency,
                AmountSource::Charge,
                *amount_refunded,
                Some(*refunded_at),
            ),
        };
        Observation {
            aliases,
            paid_at,
            amount,
            currency: currency.trim().to_ascii_lowercase(),
            source,
            amount_refunded,
            refunded_at,
            visitor_id: non_empty(facts.visitor_id.as_deref()),
            email_hash: facts
                .email
                .as_deref()
                .and_then(email::normalize)
                .map(|normalized| email::hash(&normalized, email_salt)),
            customer_id: non_empty(facts.ids.customer.as_deref()),
            subscription_id: non_empty(facts.ids.subscription.as_deref()),
            description: non_empty(facts.description.as_deref()),
            livemode: facts.livemode,
        }
    }

    fn from_row(row: &PaymentRow) -> Observation {
        Observation {
            aliases: Vec::new(),
            paid_at: row.paid_at,
            amount: row.amount,
            currency: row.currency.clone(),
            source: AmountSource::parse(&row.amount_source),
            amount_refunded: row.amount_refunded,
            refunded_at: row.refunded_at,
            visitor_id: row.visitor_id.clone(),
            email_hash: row.email_hash.clone(),
            customer_id: row.customer_id.clone(),
            subscription_id: row.subscription_id.clone(),
            description: row.description.clone(),
            livemode: row.livemode,
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// Merges what `observation` says into `row`; true when anything changed. Never adds amounts:
/// amount, currency and `paid_at` come together from the most authoritative source seen, the
/// refunded amount is the largest cumulative amount seen, and identity fields are only filled
/// when missing (the first value seen stays).
fn merge(row: &mut PaymentRow, observation: &Observation) -> bool {
    let before = row.clone();
    if observation.source > AmountSource::parse(&row.amount_source) {
        if observation.currency != row.currency {
            tracing::warn!(
                payment_id = row.payment_id,
                stored = %row.currency,
                incoming = %observation.currency,
                "stripe objects of one payment disagree on its currency; keeping the more authoritative"
            );
        }
        row.paid_at = observation.paid_at;
        row.amount = observation.amount;
        row.currency.clone_from(&observation.currency);
        row.amount_source = observation.source.as_str().to_owned();
    }
    row.amount_refunded = max(row.amount_refunded, observation.amount_refunded);
    row.refunded_at = max(row.refunded_at, observation.refunded_at);
    fill(&mut row.visitor_id, &observation.visitor_id);
    fill(&mut row.email_hash, &observation.email_hash);
    fill(&mut row.customer_id, &observation.customer_id);
    fill(&mut row.subscription_id, &observation.subscription_id);
    fill(&mut row.description, &observation.description);
    *row != before
}

fn fill(slot: &mut Option<String>, value: &Option<String>) {
    if slot.is_none() {
        slot.clone_from(value);
    }
}

#[cfg(test)]
mod tests {
    use zori_core::stripe::PaymentIds;

    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600 + secs).unwrap()
    }

    fn facts(event_type: &str, change: PaymentChange) -> PaymentFacts {
        PaymentFacts {
            event_id: "evt_1".to_owned(),
            event_type: event_type.to_owned(),
            livemode: true,
            ids: PaymentIds {
                charge: Some("ch_1".to_owned()),
                payment_intent: Some(" pi_1 ".to_owned()),
                invoice: Some(String::new()),
                customer: Some("cus_1".to_owned()),
                ..PaymentIds::default()
            },
            change,
            visitor_id: Some("vis_1".to_owned()),
            email: Some(" Jane@Example.com".to_owned()),
            description: Some("  ".to_owned()),
        }
    }

    fn paid(amount: i64, secs: i64) -> PaymentChange {
        PaymentChange::Paid {
            amount,
            currency: "USD".to_owned(),
            paid_at: at(secs),
        }
    }

    fn row_from(observation: &Observation) -> PaymentRow {
        PaymentRow {
            payment_id: 1,
            paid_at: observation.paid_at,
            amount: observation.amount,
            currency: observation.currency.clone(),
            amount_refunded: observation.amount_refunded,
            refunded_at: observation.refunded_at,
            visitor_id: observation.visitor_id.clone(),
            email_hash: observation.email_hash.clone(),
            customer_id: observation.customer_id.clone(),
            subscription_id: observation.subscription_id.clone(),
            description: observation.description.clone(),
            livemode: observation.livemode,
            amount_source: observation.source.as_str().to_owned(),
        }
    }

    #[test]
    fn observation_cleans_ids_and_hashes_email() {
        let observation = Observation::from_facts(&facts("charge.succeeded", paid(100, 0)), "s");
        assert_eq!(observation.aliases, ["ch_1", "pi_1"]);
        assert_eq!(observation.currency, "usd");
        assert_eq!(observation.source, AmountSource::Charge);
        assert_eq!(observation.description, None);
        assert_eq!(
            observation.email_hash,
            Some(email::hash("jane@example.com", "s"))
        );
    }

    #[test]
    fn sources_rank_charge_highest_and_refund_lowest() {
        let order = [
            "refund",
            "other",
            "checkout_session",
            "invoice",
            "payment_intent",
            "charge",
        ]
        .map(AmountSource::parse);
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        for source in order {
            assert_eq!(AmountSource::parse(source.as_str()), source);
        }
        assert_eq!(
            AmountSource::of_paid_event("invoice.payment_succeeded"),
            AmountSource::Invoice
        );
        assert_eq!(
            AmountSource::of_paid_event("checkout.session.async_payment_succeeded"),
            AmountSource::CheckoutSession
        );
        assert_eq!(
            AmountSource::of_paid_event("something.new"),
            AmountSource::Other
        );
    }

    #[test]
    fn merge_never_adds_amounts_and_prefers_the_charge() {
        let session =
            Observation::from_facts(&facts("checkout.session.completed", paid(900, 0)), "s");
        let mut row = row_from(&session);
        let charge = Observation::from_facts(&facts("charge.succeeded", paid(1000, 5)), "s");
        assert!(merge(&mut row, &charge));
        assert_eq!(
            (row.amount, row.paid_at, row.amount_source.as_str()),
            (1000, at(5), "charge")
        );
        // Weaker or equal sources change nothing, however often they arrive.
        let invoice = Observation::from_facts(&facts("invoice.paid", paid(1200, 9)), "s");
        assert!(!merge(&mut row, &invoice));
        assert!(!merge(&mut row, &charge));
        assert_eq!(row.amount, 1000);
    }

    #[test]
    fn merge_keeps_the_largest_cumulative_refund_and_fills_missing_fields() {
        let refund = |cumulative: i64, secs: i64| {
            Observation::from_facts(
                &facts(
                    "charge.refunded",
                    PaymentChange::Refunded {
                        amount: 1000,
                        paid_at: at(0),
                        amount_refunded: cumulative,
                        currency: "usd".to_owned(),
                        refunded_at: at(secs),
                    },
                ),
                "s",
            )
        };
        let mut bare = Observation::from_facts(&facts("charge.succeeded", paid(1000, 0)), "s");
        bare.visitor_id = None;
        bare.customer_id = None;
        let mut row = row_from(&bare);
        assert!(merge(&mut row, &refund(700, 20)));
        assert!(!merge(&mut row, &refund(300, 10)));
        assert_eq!((row.amount, row.amount_refunded), (1000, 700));
        assert_eq!(row.refunded_at, Some(at(20)));
        assert_eq!(row.visitor_id.as_deref(), Some("vis_1"));
        assert_eq!(row.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(row.amount_source, "charge");
    }

    #[test]
    fn a_refund_seen_first_records_the_whole_charge() {
        let refunded = Observation::from_facts(
            &facts(
                "charge.refunded",
                PaymentChange::Refunded {
                    amount: 1000,
                    paid_at: at(0),
                    amount_refunded: 400,
                    currency: "eur".to_owned(),
                    refunded_at: at(50),
                },
            ),
            "s",
        );
        let mut row = row_from(&refunded);
        assert_eq!(
            (
                row.amount,
                row.amount_refunded,
                row.paid_at,
                row.amount_source.as_str()
            ),
            (1000, 400, at(0), "charge")
        );
        // The invoice describes the same money; it changes nothing.
        let invoice = Observation::from_facts(&facts("invoice.paid", paid(1000, 0)), "s");
        assert!(!merge(&mut row, &invoice));
        assert_eq!((row.amount, row.amount_refunded), (1000, 400));
    }
}
