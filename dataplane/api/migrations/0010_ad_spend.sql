-- Ad spend imported through PUT /api/v1/spend (issue 15): one row per day and
-- source × medium × campaign (an empty medium or campaign means "not set"), replaced on re-import.
-- Amounts are minor units of `currency` (lower-case ISO 4217).

CREATE TABLE ad_spend (
    day        date        NOT NULL,
    source     text        NOT NULL,
    medium     text        NOT NULL DEFAULT '',
    campaign   text        NOT NULL DEFAULT '',
    currency   text        NOT NULL,
    amount     bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, source, medium, campaign),
    CONSTRAINT ad_spend_amount_nonnegative CHECK (amount >= 0)
);
