//! The payment ledger: one Postgres transaction per verified Stripe event.
//!
//! The event id is inserted first (a replay is a no-op), under a per-tenant advisory lock that
//! serialises every payment merge. A payment is found through any Stripe id it is known by
//! (`payment_aliases`: cs_, pi_, ch_, in_, inpay_); two events about the same money update one
//! row, never add a second, in any arrival order. Refunds and disputes are records of their own
//! whose totals are derived onto the payment. A payment without a visitor inherits the visitor
//! of its subscription, else of its customer, whichever arrives first.

use std::cmp::max;

use sqlx::PgConnection;
use time::OffsetDateTime;
use zori_core::{
    email,
    stripe::{PaymentChange, PaymentFacts},
};

use super::{
    adjustments::{derive_totals, upsert_dispute, upsert_refund, DisputeRecord, RefundRecord},
    allocations::{derive_allocated_amount, record_allocation, share_invoice_payer, Allocation},
    credit::credit,
    links::{carry_visitor, record_links},
    subscriptions::record_subscription_change,
    StripeState,
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

pub(super) fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
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

/// Why a verified body is not an event at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAnEvent {
    #[error("expected a json object with string \"id\" and \"type\"")]
    NoHeader,
    #[error("event \"id\" and \"type\" must not be empty")]
    EmptyHeader,
}

/// Reads a verified (signed, or fetched from Stripe's API) event body: its envelope, then what
/// it says about a payment. Never logs the payload (it holds emails and metadata).
pub(crate) fn read_event(body: &[u8]) -> Result<(EventHeader, Reading), NotAnEvent> {
    let header: EventHeader = serde_json::from_slice(body).map_err(|error| {
        tracing::warn!("verified stripe body is not an event (no id or type): {error}");
        NotAnEvent::NoHeader
    })?;
    if header.id.is_empty() || header.event_type.is_empty() {
        return Err(NotAnEvent::EmptyHeader);
    }
    let reading = match zori_core::stripe::extract(body) {
        Ok(Some(facts)) => Reading::Facts(Box::new(facts)),
        Ok(None) => Reading::Ignored,
        Err(error) => {
            // Our bug or a new payload shape: the event is kept (with its payload, for a
            // replay) and acknowledged so Stripe does not disable the endpoint.
            tracing::warn!(
                event_id = %header.id,
                event_type = %header.event_type,
                "verified stripe event could not be read; stored as unreadable"
            );
            tracing::debug!(event_id = %header.id, "stripe event extraction error: {error}");
            Reading::Unreadable
        }
    };
    Ok((header, reading))
}

/// What recording one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Duplicate,
    Ignored,
    Unreadable,
    /// A subscription or customer was tied to a visitor, or a subscription's billing state
    /// recorded; no money moved.
    Linked,
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
    /// An authorization (nothing captured) or its release.
    Hold { created: bool },
    /// Refund recorded; `created` when the payment was not known yet.
    Refunded { created: bool },
    /// Dispute recorded; `created` when the payment was not known yet.
    Disputed { created: bool },
}

impl Effect {
    fn outcome(self) -> &'static str {
        match self {
            Effect::Created => "payment_created",
            Effect::Merged => "payment_merged",
            Effect::Hold { .. } => "hold_recorded",
            Effect::Refunded { .. } => "refund_recorded",
            Effect::Disputed { .. } => "dispute_recorded",
        }
    }

    fn of(change: &PaymentChange, created: bool) -> Effect {
        match change {
            PaymentChange::Paid { .. } if created => Effect::Created,
            PaymentChange::Paid { .. } | PaymentChange::Linked => Effect::Merged,
            PaymentChange::Held { .. } | PaymentChange::Voided { .. } => Effect::Hold { created },
            PaymentChange::Refunded { .. } | PaymentChange::Refund { .. } => {
                Effect::Refunded { created }
            }
            PaymentChange::Dispute { .. } => Effect::Disputed { created },
        }
    }
}

/// Stores a new event id; a known one is a duplicate.
const INSERT_EVENT: &str =
    "INSERT INTO stripe_events (event_id, event_type, livemode, outcome, payload) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING";

/// Stores a new event id, or takes up again an event stored as `ignored` or `unreadable`; any
/// other known event (processed) is a duplicate.
const INSERT_OR_REPLAY_EVENT: &str =
    "INSERT INTO stripe_events (event_id, event_type, livemode, outcome, payload) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO UPDATE \
     SET outcome = EXCLUDED.outcome, payload = EXCLUDED.payload \
     WHERE stripe_events.outcome IN ('ignored', 'unreadable')";

/// How an event reached [`record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A webhook: a known event id is a duplicate.
    Delivery,
    /// A stored event read again (replay), or Stripe's copy of it (backfill): it is processed
    /// again if it was stored as `ignored` or `unreadable`; any other known id is a duplicate.
    Replay,
}

/// One verified event and how it came.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivered<'a> {
    pub header: &'a EventHeader,
    pub reading: &'a Reading,
    /// The verified body, stored when the event is not processed.
    pub body: &'a [u8],
    pub mode: Mode,
}

/// Records one verified event in a single transaction: nothing of it is visible unless all of it
/// is committed (including the `stripe_events` row, so a failed event is retried in full).
pub(crate) async fn record(
    state: &StripeState,
    event: &Delivered<'_>,
) -> Result<Recorded, StoreError> {
    let StripeState {
        pool,
        tenant_id,
        email_salt,
        lookback,
        ..
    } = state;
    let lookback = *lookback;
    let Delivered {
        header,
        reading,
        body,
        mode,
    } = *event;
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
    // Kept only for what was not processed, so a later version can read it again.
    let payload = match reading {
        Reading::Ignored | Reading::Unreadable => Some(String::from_utf8_lossy(body)),
        Reading::Facts(_) => None,
    };
    let insert = match mode {
        Mode::Delivery => INSERT_EVENT,
        Mode::Replay => INSERT_OR_REPLAY_EVENT,
    };
    let inserted = sqlx::query(insert)
        .bind(&header.id)
        .bind(&header.event_type)
        .bind(header.livemode)
        .bind(initial_outcome)
        .bind(payload.as_deref())
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
        Reading::Facts(facts) if facts.change == PaymentChange::Linked => {
            let linked = record_links(&mut tx, facts).await?;
            if let Some(subscription) = &facts.subscription {
                record_subscription_change(&mut tx, facts, subscription).await?;
            }
            let outcome = match (linked, facts.subscription.is_some()) {
                (true, _) => "link_recorded",
                (false, true) => "subscription_recorded",
                (false, false) => "ignored",
            };
            set_outcome(&mut tx, &header.id, outcome, None).await?;
            if linked || facts.subscription.is_some() {
                Recorded::Linked
            } else {
                Recorded::Ignored
            }
        }
        Reading::Facts(facts) => {
            let observation = Observation::from_facts(facts, email_salt);
            let applied = apply(&mut tx, &observation).await?;
            if let Some(allocation) = &observation.allocation {
                record_allocation(&mut tx, applied.payment_id, allocation).await?;
            }
            derive_allocated_amount(&mut tx, applied.payment_id).await?;
            record_adjustment(&mut tx, applied.payment_id, &facts.change).await?;
            derive_totals(&mut tx, applied.payment_id).await?;
            let invoice = non_empty(facts.ids.invoice.as_deref());
            let siblings =
                share_invoice_payer(&mut tx, applied.payment_id, invoice.as_deref()).await?;
            for sibling in siblings {
                carry_visitor(&mut tx, sibling, facts.occurred_at).await?;
                credit(&mut tx, sibling, lookback).await?;
            }
            carry_visitor(&mut tx, applied.payment_id, facts.occurred_at).await?;
            credit(&mut tx, applied.payment_id, lookback).await?;
            let effect = Effect::of(&facts.change, applied.created);
            set_outcome(
                &mut tx,
                &header.id,
                effect.outcome(),
                Some(applied.payment_id),
            )
            .await?;
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

/// Stores the refund or dispute record an event describes, if it describes one.
async fn record_adjustment(
    conn: &mut PgConnection,
    payment_id: i64,
    change: &PaymentChange,
) -> Result<(), StoreError> {
    match change {
        PaymentChange::Refund {
            refund_id,
            amount,
            currency,
            status,
            created_at,
        } => {
            let refund = RefundRecord {
                refund_id,
                amount: *amount,
                currency,
                status: *status,
                created_at: *created_at,
            };
            upsert_refund(conn, payment_id, &refund).await?;
        }
        PaymentChange::Dispute {
            dispute_id,
            amount,
            currency,
            state,
            created_at,
        } => {
            let dispute = DisputeRecord {
                dispute_id,
                amount: *amount,
                currency,
                state,
                created_at: *created_at,
            };
            upsert_dispute(conn, payment_id, &dispute).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn set_outcome(
    conn: &mut PgConnection,
    event_id: &str,
    outcome: &str,
    payment_id: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE stripe_events SET outcome = $2, payment_id = $3 WHERE event_id = $1")
        .bind(event_id)
        .bind(outcome)
        .bind(payment_id)
        .execute(&mut *conn)
        .await
        .map_err(db("storing the event outcome"))?;
    Ok(())
}

struct Applied {
    payment_id: i64,
    created: bool,
    folded: usize,
}

const PAYMENT_COLUMNS: &str = "payment_id, paid_at, amount, currency, charge_amount_refunded, \
    charge_refunded_as_of, refunded_at, authorized_amount, voided_at, visitor_id, \
    visitor_source, email_hash, customer_id, subscription_id, description, livemode, amount_source";

/// Creates or merges the payment `observation` describes. Runs under the advisory lock.
///
/// An invoice payment also takes over its invoice's row while that row is only the invoice
/// (`invoice.paid` or a subscription's Checkout session seen first, no allocation of its own):
/// the invoice's money is the allocations' money. An invoice row that already holds an
/// allocation is another money movement and stays apart.
async fn apply(conn: &mut PgConnection, observation: &Observation) -> Result<Applied, StoreError> {
    let allocated_invoice = observation
        .allocation
        .as_ref()
        .map(|allocation| allocation.invoice_id.as_str());
    let rows: Vec<PaymentRow> = sqlx::query_as(&format!(
        // One set of ids looked up by index, then the payments by primary key: an `OR` of
        // the two conditions on `payments` made PostgreSQL scan the whole table (and JIT-compile
        // the scan) on every webhook, 0.24 s at 37,000 payments and growing with them.
        "SELECT {PAYMENT_COLUMNS} FROM payments p \
         WHERE p.payment_id IN ( \
            SELECT payment_id FROM payment_aliases WHERE alias = ANY($1) \
            UNION \
            SELECT q.payment_id FROM payment_aliases pa JOIN payments q USING (payment_id) \
            WHERE pa.alias = $2 \
              AND q.amount_source IN ('invoice', 'checkout_session') \
              AND NOT EXISTS (SELECT 1 FROM invoice_allocations a \
                              WHERE a.payment_id = q.payment_id)) \
         ORDER BY p.payment_id \
         FOR UPDATE"
    ))
    .bind(&observation.aliases)
    .bind(allocated_invoice)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("looking the payment up by its stripe ids"))?;

    let mut rows = rows.into_iter();
    let applied = match rows.next() {
        None => {
            let row = PaymentRow::from_observation(observation);
            let payment_id: i64 = sqlx::query_scalar(
                "INSERT INTO payments (paid_at, amount, currency, charge_amount_refunded, \
                 charge_refunded_as_of, refunded_at, authorized_amount, voided_at, visitor_id, \
                 visitor_source, email_hash, customer_id, subscription_id, description, livemode, \
                 amount_source, amount_refunded) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                     COALESCE($4, 0)) \
             RETURNING payment_id",
            )
            .bind(row.paid_at)
            .bind(row.amount)
            .bind(&row.currency)
            .bind(row.charge_amount_refunded)
            .bind(row.charge_refunded_as_of)
            .bind(row.refunded_at)
            .bind(row.authorized_amount)
            .bind(row.voided_at)
            .bind(&row.visitor_id)
            .bind(&row.visitor_source)
            .bind(&row.email_hash)
            .bind(&row.customer_id)
            .bind(&row.subscription_id)
            .bind(&row.description)
            .bind(row.livemode)
            .bind(&row.amount_source)
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
                     charge_amount_refunded = $5, charge_refunded_as_of = $6, refunded_at = $7, \
                     authorized_amount = $8, voided_at = $9, visitor_id = $10, \
                     visitor_source = $11, email_hash = $12, customer_id = $13, \
                     subscription_id = $14, description = $15, amount_source = $16, \
                     updated_at = now() \
                 WHERE payment_id = $1",
                )
                .bind(survivor.payment_id)
                .bind(survivor.paid_at)
                .bind(survivor.amount)
                .bind(&survivor.currency)
                .bind(survivor.charge_amount_refunded)
                .bind(survivor.charge_refunded_as_of)
                .bind(survivor.refunded_at)
                .bind(survivor.authorized_amount)
                .bind(survivor.voided_at)
                .bind(&survivor.visitor_id)
                .bind(&survivor.visitor_source)
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
                    "UPDATE refunds SET payment_id = $1 WHERE payment_id = ANY($2)",
                    "UPDATE disputes SET payment_id = $1 WHERE payment_id = ANY($2)",
                    "UPDATE invoice_allocations SET payment_id = $1 WHERE payment_id = ANY($2)",
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
/// the same money; the charge is the money actually moved, so it wins. An invoice payment (one
/// allocation) beats the invoice (which several payments may share); a payment known only from
/// invoice payments is worth the sum of its allocations. A hold (nothing captured)
/// ranks below every capture, and a refund, dispute or void seen before its payment only holds
/// the place (amount 0) until any payment event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AmountSource {
    Refund,
    Hold,
    Other,
    CheckoutSession,
    Invoice,
    InvoicePayment,
    PaymentIntent,
    Charge,
}

impl AmountSource {
    fn of_paid_event(event_type: &str) -> AmountSource {
        if event_type.starts_with("charge.") {
            AmountSource::Charge
        } else if event_type.starts_with("payment_intent.") {
            AmountSource::PaymentIntent
        } else if event_type.starts_with("invoice_payment.") {
            AmountSource::InvoicePayment
        } else if event_type.starts_with("invoice.") {
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
            AmountSource::Hold => "hold",
            AmountSource::Other => "other",
            AmountSource::CheckoutSession => "checkout_session",
            AmountSource::Invoice => "invoice",
            AmountSource::InvoicePayment => "invoice_payment",
            AmountSource::PaymentIntent => "payment_intent",
            AmountSource::Charge => "charge",
        }
    }

    fn parse(stored: &str) -> AmountSource {
        match stored {
            "refund" => AmountSource::Refund,
            "hold" => AmountSource::Hold,
            "checkout_session" => AmountSource::CheckoutSession,
            "invoice" => AmountSource::Invoice,
            "invoice_payment" => AmountSource::InvoicePayment,
            "payment_intent" => AmountSource::PaymentIntent,
            "charge" => AmountSource::Charge,
            _ => AmountSource::Other,
        }
    }

    /// Whether the amount is captured money.
    fn is_capture(self) -> bool {
        self > AmountSource::Hold
    }
}

/// A `payments` row (the columns this module writes).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct PaymentRow {
    payment_id: i64,
    paid_at: OffsetDateTime,
    amount: i64,
    currency: String,
    charge_amount_refunded: Option<i64>,
    charge_refunded_as_of: Option<OffsetDateTime>,
    refunded_at: Option<OffsetDateTime>,
    authorized_amount: Option<i64>,
    voided_at: Option<OffsetDateTime>,
    visitor_id: Option<String>,
    visitor_source: Option<String>,
    email_hash: Option<String>,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    description: Option<String>,
    livemode: bool,
    amount_source: String,
}

impl PaymentRow {
    fn from_observation(o: &Observation) -> PaymentRow {
        PaymentRow {
            payment_id: 0,
            paid_at: o.paid_at,
            amount: o.amount,
            currency: o.currency.clone(),
            charge_amount_refunded: o.charge_amount_refunded,
            charge_refunded_as_of: o.charge_refunded_as_of,
            refunded_at: o.refunded_at,
            authorized_amount: o.authorized_amount,
            voided_at: o.voided_at,
            visitor_source: o.visitor_id.as_ref().map(|_| "metadata".to_owned()),
            visitor_id: o.visitor_id.clone(),
            email_hash: o.email_hash.clone(),
            customer_id: o.customer_id.clone(),
            subscription_id: o.subscription_id.clone(),
            description: o.description.clone(),
            livemode: o.livemode,
            amount_source: o.source.as_str().to_owned(),
        }
    }
}

/// What one event (or one duplicate row being folded) says about a payment, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    aliases: Vec<String>,
    paid_at: OffsetDateTime,
    /// Captured money (0 for a hold or a placeholder).
    amount: i64,
    currency: String,
    source: AmountSource,
    charge_amount_refunded: Option<i64>,
    charge_refunded_as_of: Option<OffsetDateTime>,
    refunded_at: Option<OffsetDateTime>,
    authorized_amount: Option<i64>,
    voided_at: Option<OffsetDateTime>,
    /// The payment's own visitor (from Stripe metadata); inherited ones are not observations.
    visitor_id: Option<String>,
    email_hash: Option<String>,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    description: Option<String>,
    livemode: bool,
    /// The `inpay_` allocation an `invoice_payment.paid` describes.
    allocation: Option<Allocation>,
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
        let mut observation = Observation {
            aliases,
            paid_at: facts.occurred_at,
            amount: 0,
            currency: String::new(),
            source: AmountSource::Refund,
            charge_amount_refunded: None,
            charge_refunded_as_of: None,
            refunded_at: None,
            authorized_amount: None,
            voided_at: None,
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
            allocation: None,
        };
        match &facts.change {
            PaymentChange::Paid {
                amount,
                currency,
                paid_at,
            } => {
                observation.paid_at = *paid_at;
                observation.amount = *amount;
                observation.currency.clone_from(currency);
                observation.source = AmountSource::of_paid_event(&facts.event_type);
                if let (Some(invoice_payment_id), Some(invoice_id)) = (
                    non_empty(facts.ids.invoice_payment.as_deref()),
                    non_empty(facts.ids.invoice.as_deref()),
                ) {
                    observation.allocation = Some(Allocation {
                        invoice_payment_id,
                        invoice_id,
                        amount: *amount,
                        currency: currency.trim().to_ascii_lowercase(),
                    });
                }
            }
            PaymentChange::Held {
                amount,
                currency,
                authorized_at,
            } => {
                observation.paid_at = *authorized_at;
                observation.currency.clone_from(currency);
                observation.authorized_amount = Some(*amount);
                observation.source = AmountSource::Hold;
            }
            PaymentChange::Voided { voided_at } => {
                observation.voided_at = Some(*voided_at);
            }
            // A refunded charge states the payment as well as charge.succeeded does.
            PaymentChange::Refunded {
                amount,
                paid_at,
                amount_refunded,
                currency,
                refunded_at,
            } => {
                observation.paid_at = *paid_at;
                observation.amount = *amount;
                observation.currency.clone_from(currency);
                observation.source = AmountSource::Charge;
                observation.charge_amount_refunded = Some(*amount_refunded);
                observation.charge_refunded_as_of = Some(*refunded_at);
                observation.refunded_at = Some(*refunded_at);
            }
            PaymentChange::Refund {
                currency,
                created_at,
                ..
            }
            | PaymentChange::Dispute {
                currency,
                created_at,
                ..
            } => {
                observation.paid_at = *created_at;
                observation.currency.clone_from(currency);
            }
            PaymentChange::Linked => {}
        }
        observation.currency = observation.currency.trim().to_ascii_lowercase();
        observation
    }

    fn from_row(row: &PaymentRow) -> Observation {
        Observation {
            aliases: Vec::new(),
            paid_at: row.paid_at,
            amount: row.amount,
            currency: row.currency.clone(),
            source: AmountSource::parse(&row.amount_source),
            charge_amount_refunded: row.charge_amount_refunded,
            charge_refunded_as_of: row.charge_refunded_as_of,
            refunded_at: row.refunded_at,
            authorized_amount: row.authorized_amount,
            voided_at: row.voided_at,
            visitor_id: row
                .visitor_id
                .clone()
                .filter(|_| row.visitor_source.as_deref() == Some("metadata")),
            email_hash: row.email_hash.clone(),
            customer_id: row.customer_id.clone(),
            subscription_id: row.subscription_id.clone(),
            description: row.description.clone(),
            livemode: row.livemode,
            allocation: None,
        }
    }
}

pub(super) fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// Merges what `observation` says into `row`; true when anything changed. Never adds amounts:
/// amount, currency and `paid_at` come together from the most authoritative source seen (a
/// capture of the same source only grows), the charge's refunded figure is the latest one by
/// event time, a visitor from the payment's own metadata replaces an inherited one, and other
/// identity fields are only filled when missing (the first value seen stays).
fn merge(row: &mut PaymentRow, observation: &Observation) -> bool {
    let before = row.clone();
    let stored = AmountSource::parse(&row.amount_source);
    if observation.source > stored {
        if observation.currency != row.currency && stored > AmountSource::Refund {
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
    } else if observation.source == stored && stored.is_capture() && observation.amount > row.amount
    {
        // A later (partial or further) capture of the same object.
        row.amount = observation.amount;
    }
    if let (Some(refunded), Some(as_of)) = (
        observation.charge_amount_refunded,
        observation.charge_refunded_as_of,
    ) {
        if row
            .charge_refunded_as_of
            .is_none_or(|stored| as_of > stored)
        {
            row.charge_amount_refunded = Some(refunded);
            row.charge_refunded_as_of = Some(as_of);
        }
    }
    row.refunded_at = max(row.refunded_at, observation.refunded_at);
    row.authorized_amount = max(row.authorized_amount, observation.authorized_amount);
    fill_copy(&mut row.voided_at, observation.voided_at);
    if observation.visitor_id.is_some() && row.visitor_source.as_deref() != Some("metadata") {
        row.visitor_id.clone_from(&observation.visitor_id);
        row.visitor_source = Some("metadata".to_owned());
    }
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

fn fill_copy<T: Copy>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
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
            occurred_at: at(0),
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
            subscription: None,
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
            ..PaymentRow::from_observation(observation)
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
    fn an_invoice_payment_is_keyed_by_its_allocation_not_its_invoice() {
        let mut inpay = facts("invoice_payment.paid", paid(4000, 0));
        inpay.ids = PaymentIds {
            invoice_payment: Some("inpay_1".to_owned()),
            invoice: Some(" in_1 ".to_owned()),
            payment_intent: Some("pi_1".to_owned()),
            ..PaymentIds::default()
        };
        let observation = Observation::from_facts(&inpay, "s");
        assert_eq!(observation.aliases, ["inpay_1", "pi_1"]);
        assert_eq!(observation.source, AmountSource::InvoicePayment);
        assert_eq!(
            observation.allocation,
            Some(Allocation {
                invoice_payment_id: "inpay_1".to_owned(),
                invoice_id: "in_1".to_owned(),
                amount: 4000,
                currency: "usd".to_owned(),
            })
        );
        // The invoice itself (shared by every part) fills in the payer, never a part's amount.
        let mut row = row_from(&observation);
        let invoice = Observation::from_facts(&facts("invoice.paid", paid(10_000, 0)), "s");
        assert!(merge(&mut row, &invoice));
        assert_eq!(
            (row.amount, row.customer_id.as_deref()),
            (4000, Some("cus_1"))
        );
        // Other events carry no allocation.
        assert_eq!(invoice.allocation, None);
    }

    #[test]
    fn sources_rank_charge_highest_and_refund_lowest() {
        let order = [
            "refund",
            "hold",
            "other",
            "checkout_session",
            "invoice",
            "invoice_payment",
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
    fn merge_keeps_the_latest_charge_refund_figure_and_fills_missing_fields() {
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
        // An older figure never replaces a newer one; a newer lower one does (a refund failed).
        assert!(!merge(&mut row, &refund(300, 10)));
        assert_eq!((row.amount, row.charge_amount_refunded), (1000, Some(700)));
        assert_eq!(row.refunded_at, Some(at(20)));
        assert!(merge(&mut row, &refund(200, 30)));
        assert_eq!(row.charge_amount_refunded, Some(200));
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
                row.charge_amount_refunded.unwrap_or_default(),
                row.paid_at,
                row.amount_source.as_str()
            ),
            (1000, 400, at(0), "charge")
        );
        // The invoice describes the same money; it changes nothing.
        let invoice = Observation::from_facts(&facts("invoice.paid", paid(1000, 0)), "s");
        assert!(!merge(&mut row, &invoice));
        assert_eq!((row.amount, row.charge_amount_refunded), (1000, Some(400)));
    }

    #[test]
    fn holds_count_nothing_until_captured_and_captures_only_grow() {
        let held = Observation::from_facts(
            &facts(
                "charge.succeeded",
                PaymentChange::Held {
                    amount: 1000,
                    currency: "usd".to_owned(),
                    authorized_at: at(0),
                },
            ),
            "s",
        );
        let mut row = row_from(&held);
        assert_eq!((row.amount, row.authorized_amount), (0, Some(1000)));
        assert_eq!(row.amount_source, "hold");
        // Any capture beats the hold; a larger capture of the same source replaces it.
        let pi = Observation::from_facts(&facts("payment_intent.succeeded", paid(400, 5)), "s");
        assert!(merge(&mut row, &pi));
        assert_eq!(row.amount, 400);
        assert!(!merge(&mut row, &held));
        let captured = Observation::from_facts(&facts("charge.captured", paid(600, 6)), "s");
        assert!(merge(&mut row, &captured));
        assert_eq!((row.amount, row.amount_source.as_str()), (600, "charge"));
        assert!(!merge(
            &mut row,
            &Observation::from_facts(&facts("charge.succeeded", paid(500, 7)), "s")
        ));
        assert_eq!(row.amount, 600);
    }

    #[test]
    fn a_metadata_visitor_replaces_an_inherited_one() {
        let mut bare = Observation::from_facts(&facts("charge.succeeded", paid(1000, 0)), "s");
        bare.visitor_id = None;
        let mut row = row_from(&bare);
        row.visitor_id = Some("vis_customer".to_owned());
        row.visitor_source = Some("customer".to_owned());
        let with_visitor = Observation::from_facts(&facts("invoice.paid", paid(1000, 0)), "s");
        assert!(merge(&mut row, &with_visitor));
        assert_eq!(row.visitor_id.as_deref(), Some("vis_1"));
        assert_eq!(row.visitor_source.as_deref(), Some("metadata"));
        // Folding a row keeps only its own visitor.
        let mut other = row.clone();
        other.visitor_source = Some("subscription".to_owned());
        assert_eq!(Observation::from_row(&other).visitor_id, None);
    }
}
