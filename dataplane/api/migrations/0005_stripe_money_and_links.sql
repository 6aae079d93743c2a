-- Stripe on every API version (issue 11): authorizations, refunds and disputes as records of
-- their own, and the visitor a subscription or customer belongs to.
--
-- `payments.amount` is captured money only: a row known only from an authorization (or from a
-- refund or dispute seen before its payment) has amount 0 and counts nowhere until captured.
-- `amount_refunded` and `amount_disputed` are derived by the webhook store from `refunds` and
-- `disputes` (falling back to the charge's own `amount_refunded` while no refund record is
-- known); net revenue = amount - amount_refunded - amount_disputed.

ALTER TABLE payments
    -- What the authorization held (`captured: false` charges, unpaid Checkout sessions).
    ADD COLUMN authorized_amount      bigint      NULL,
    -- Set by `payment_intent.canceled` / `charge.expired`: the hold was released.
    ADD COLUMN voided_at              timestamptz NULL,
    -- The charge's cumulative `amount_refunded` as of `charge_refunded_as_of` (the event time
    -- of the latest `charge.refunded` seen); used while no refund record is known.
    ADD COLUMN charge_amount_refunded bigint      NULL,
    ADD COLUMN charge_refunded_as_of  timestamptz NULL,
    -- Disputed money currently out of the merchant's balance (lost, or withdrawn and not
    -- reinstated).
    ADD COLUMN amount_disputed        bigint      NOT NULL DEFAULT 0,
    -- Where visitor_id comes from: `metadata` (the payment's own Stripe objects),
    -- `subscription` or `customer` (inherited through a link below).
    ADD COLUMN visitor_source         text        NULL,
    ADD CONSTRAINT payments_amount_disputed_nonnegative CHECK (amount_disputed >= 0);

UPDATE payments SET visitor_source = 'metadata' WHERE visitor_id IS NOT NULL;

CREATE INDEX payments_subscription_id_idx ON payments (subscription_id);
CREATE INDEX payments_customer_id_idx ON payments (customer_id);

-- One row per Stripe refund (re_…). `counts`: the status takes money back (pending,
-- requires_action, succeeded); failed and canceled refunds restore revenue.
CREATE TABLE refunds (
    refund_id  text        PRIMARY KEY,
    payment_id bigint      NOT NULL REFERENCES payments ON DELETE CASCADE,
    amount     bigint      NOT NULL CHECK (amount >= 0),
    currency   text        NOT NULL,
    status     text        NOT NULL,
    counts     boolean     NOT NULL,
    -- The refund's own `created`: the day finance books it.
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refunds_payment_id_idx ON refunds (payment_id);
CREATE INDEX refunds_created_at_idx ON refunds (created_at);

-- One row per Stripe dispute (dp_…). `balance_transactions`: 1 funds withdrawn, 2 withdrawn and
-- reinstated. `counts`: the disputed amount is out of the balance now.
CREATE TABLE disputes (
    dispute_id           text        PRIMARY KEY,
    payment_id           bigint      NOT NULL REFERENCES payments ON DELETE CASCADE,
    amount               bigint      NOT NULL CHECK (amount >= 0),
    currency             text        NOT NULL,
    status               text        NOT NULL,
    balance_transactions bigint      NOT NULL,
    counts               boolean     NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX disputes_payment_id_idx ON disputes (payment_id);
CREATE INDEX disputes_created_at_idx ON disputes (created_at);

-- The visitor a subscription (sub_…) or a customer (cus_…) belongs to: the visitor of the
-- earliest event (by Stripe's `created`) that carried both; later events never move it.
CREATE TABLE subscription_visitors (
    subscription_id text        PRIMARY KEY,
    visitor_id      text        NOT NULL,
    linked_at       timestamptz NOT NULL
);

CREATE TABLE customer_visitors (
    customer_id text        PRIMARY KEY,
    visitor_id  text        NOT NULL,
    linked_at   timestamptz NOT NULL
);
