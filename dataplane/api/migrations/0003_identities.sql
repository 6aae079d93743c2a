-- Users of the tenant's site and the visitors linked to them by identify() (zori-spec §1.5,
-- §9.22, §9.29). No email is stored, only its salted hash.

CREATE TABLE users (
    user_id             bigserial   PRIMARY KEY,
    -- The site's own user id.
    app_id              text        NULL UNIQUE,
    -- Salted SHA-256 of the normalised email (the same salt as payments.email_hash).
    email_hash          text        NULL UNIQUE,
    fullname            text        NULL,
    traits              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    first_identified_at timestamptz NOT NULL,
    last_identified_at  timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Each visitor belongs to at most one user: the one of its latest identify().
CREATE TABLE identities (
    visitor_id    text        PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users ON DELETE CASCADE,
    identified_at timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX identities_user_id_idx ON identities (user_id);
