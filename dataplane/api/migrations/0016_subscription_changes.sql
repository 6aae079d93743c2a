-- What each customer.subscription.* event said a subscription is billed from its time on
-- (issue 15): the history MRR, its movements and trial-to-paid conversion are computed from.
-- One row per Stripe event (a redelivery changes nothing); events of one subscription are
-- ordered by Stripe's `created`, then by `event_rank` (created < updated/paused/resumed <
-- deleted) for events of the same second.

CREATE TABLE subscription_changes (
    event_id        text        PRIMARY KEY,
    subscription_id text        NOT NULL,
    customer_id     text        NOT NULL,
    livemode        boolean     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    event_rank      smallint    NOT NULL,
    status          text        NOT NULL,
    -- Lower-case ISO 4217; mrr in its minor units (0 while not billed).
    currency        text        NOT NULL,
    mrr             bigint      NOT NULL,
    -- Items counted 0 because their price has no unit amount (tiered, metered).
    unpriced_items  integer     NOT NULL DEFAULT 0,
    -- False when the event's item list was cut short (`has_more`).
    items_complete  boolean     NOT NULL DEFAULT true,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscription_changes_subscription_idx
    ON subscription_changes (subscription_id, occurred_at, event_rank);
CREATE INDEX subscription_changes_livemode_idx ON subscription_changes (livemode, occurred_at);
