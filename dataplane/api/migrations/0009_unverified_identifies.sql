-- identify() calls whose identity claim could not be verified (identity verification set to
-- `ignore`: no signature, or a wrong one). Kept for the site owner to look at; they link no
-- visitor, create no user and change no user, so they cannot move attribution or a name.

CREATE TABLE unverified_identifies (
    event_id    text        PRIMARY KEY,
    visitor_id  text        NOT NULL,
    app_id      text        NULL,
    -- Salted SHA-256 of the normalised email, as in users.email_hash.
    email_hash  text        NULL,
    fullname    text        NULL,
    traits      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX unverified_identifies_visitor_id_idx ON unverified_identifies (visitor_id);
