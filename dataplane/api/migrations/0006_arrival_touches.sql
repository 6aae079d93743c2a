-- Only arrival events (`page_view`, `session_start`) make a touch (issue 11): a `session_end`
-- sent on the next visit carries that page's URL and referrer with the old session's time, and
-- must never become a visitor's first touch. Other events stand in only until an arrival event
-- of the visitor (or session) is seen; any arrival beats any other event, whatever their times.

ALTER TABLE visitors
    -- Whether the first-touch event is an arrival event.
    ADD COLUMN ft_arrival boolean     NOT NULL DEFAULT true,
    -- When the first-touch event happened (first_seen_at stays the earliest event of any kind);
    -- NULL on rows written before this migration, where it is first_seen_at.
    ADD COLUMN ft_at      timestamptz NULL;

ALTER TABLE touches
    ADD COLUMN arrival boolean NOT NULL DEFAULT true;
