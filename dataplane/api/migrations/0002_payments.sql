-- Stripe payments (zori-spec §7, §9.2-§9.7). One row per payment, however many Stripe events
-- (checkout session, payment intent, charge, invoice, refund) describe it: every Stripe id the
-- payment is known by is an alias pointing at the row. Amounts are minor units of `currency`
-- (lower-case ISO 4217) and are never summed across currencies.

CREATE TABLE payments (
    payment_id      bigserial   PRIMARY KEY,
    paid_at         timestamptz NOT NULL,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    -- Cumulative, as Stripe reports it; only ever raised (refund events may arrive in any order).
    amount_refunded bigint      NOT NULL DEFAULT 0,
    visitor_id      text        NULL,
    -- Salted SHA-256 of the normalised payer email; the email itself is never stored.
    email_hash      text        NULL,
    customer_id     text        NULL,
    subscription_id text        NULL,
    description     text        NULL,
    livemode        boolean     NOT NULL,
    -- Which kind of Stripe object set amount, currency and paid_at: `charge`, `payment_intent`,
    -- `invoice`, `checkout_session` or `refund` (a refund seen before its payment). A more
    -- authoritative kind replaces them; an equal or weaker one never does.
    amount_source   text        NOT NULL,
    -- When the latest refund seen happened (NULL while nothing is refunded).
    refunded_at     timestamptz NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_amount_nonnegative CHECK (amount >= 0),
    CONSTRAINT payments_amount_refunded_nonnegative CHECK (amount_refunded >= 0)
);

CREATE INDEX payments_paid_at_idx ON payments (paid_at);
CREATE INDEX payments_visitor_id_idx ON payments (visitor_id);
CREATE INDEX payments_email_hash_idx ON payments (email_hash);

-- Every Stripe id (cs_…, pi_…, ch_…, in_…) a payment is known by.
CREATE TABLE payment_aliases (
    alias      text   PRIMARY KEY,
    payment_id bigint NOT NULL REFERENCES payments ON DELETE CASCADE
);

CREATE INDEX payment_aliases_payment_id_idx ON payment_aliases (payment_id);

-- Every verified Stripe event, stored first: a replayed event id is a no-op.
-- outcome: `payment_created`, `payment_merged`, `refund_recorded`, `ignored` (type carries no
-- payment change) or `unreadable` (a handled type whose payload could not be read).
CREATE TABLE stripe_events (
    event_id    text        PRIMARY KEY,
    event_type  text        NOT NULL,
    livemode    boolean     NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL,
    payment_id  bigint      NULL REFERENCES payments ON DELETE SET NULL
);

CREATE INDEX stripe_events_payment_id_idx ON stripe_events (payment_id);
