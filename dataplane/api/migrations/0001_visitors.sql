-- Visitors and how they arrived (zori-spec §6.4, §9.27, §9.28). Written by the stream consumer with
-- set-based upserts; the earliest touch wins whatever order events arrive in.
--
-- A touch is the earliest event of a session. A visitor's first touch (ft_*) is the touch of its
-- earliest event; ties on the timestamp are broken by the event id, so the outcome is the same
-- in any delivery order.

CREATE TABLE visitors (
    visitor_id       text        PRIMARY KEY,
    first_seen_at    timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    -- The event the first touch comes from.
    ft_event_id      text        NOT NULL,
    ft_session_id    text        NOT NULL,
    -- zori_core::channel::Channel, snake_case (`paid_social`, `direct`, …).
    ft_channel       text        NOT NULL,
    -- UTM source, else the referrer host, else `(direct)`.
    ft_source        text        NOT NULL,
    ft_medium        text        NULL,
    ft_campaign      text        NULL,
    ft_term          text        NULL,
    ft_content       text        NULL,
    ft_referrer_host text        NULL,
    -- Path of the landing page.
    ft_landing_page  text        NOT NULL,
    -- Advertising click ids of the landing URL (`gclid`, `fbclid`, …), name → value.
    ft_click_ids     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- From the visitor's latest event.
    country          text        NULL,
    device           text        NULL,
    browser          text        NULL,
    os               text        NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX visitors_first_seen_at_idx ON visitors (first_seen_at);

-- One row per session: the session's earliest event.
CREATE TABLE touches (
    visitor_id    text        NOT NULL,
    session_id    text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    event_id      text        NOT NULL,
    channel       text        NOT NULL,
    source        text        NOT NULL,
    medium        text        NULL,
    campaign      text        NULL,
    term          text        NULL,
    content       text        NULL,
    referrer_host text        NULL,
    landing_page  text        NOT NULL,
    click_ids     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (visitor_id, session_id)
);

-- The UTC days on which a visitor had at least one event: "visitors in range".
CREATE TABLE visitor_days (
    day        date NOT NULL,
    visitor_id text NOT NULL,
    PRIMARY KEY (day, visitor_id)
);
