-- Replay and backfill of Stripe events.
--
-- payload: the verified body of an event acknowledged as `ignored` or `unreadable`, kept so a
-- later zori-api can read it again (`POST /api/v1/stripe/replay`); cleared once it is processed.
-- It holds what Stripe sent (emails, metadata) and stays inside the tenant's schema.
ALTER TABLE stripe_events ADD COLUMN payload text NULL;

CREATE INDEX stripe_events_replayable_idx ON stripe_events (received_at)
    WHERE payload IS NOT NULL;

-- One backfill run per start date (`since`): events are read from Stripe's `GET /v1/events`
-- newest first; `cursor` is the id of the last event recorded, so an interrupted run resumes
-- after it. `finished_at` is set when the oldest page was read.
CREATE TABLE stripe_backfills (
    since       timestamptz PRIMARY KEY,
    cursor      text        NULL,
    events_read bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL
);
