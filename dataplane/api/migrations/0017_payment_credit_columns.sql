-- Each payment carries its resolved credit (issue 13): the visitor whose first touch gets its
-- revenue, the payer it counts for, and that visitor's report dimensions (first-touch channel,
-- source, medium, campaign, referrer, landing page; latest country and device). The revenue
-- reports then group the payments of a range by these columns instead of resolving every
-- payment's visitor, identity, user and the user's earliest visitor on each request.
--
-- The resolution is the one the reports did on every request (see reports/revenue.rs): the
-- stored credit (`credit_visitor_id`), else the earliest visitor of the payment's visitor's
-- user, else of the user of the payer's email, else the payment's own visitor when the
-- consumer has seen it, else unattributed. It is kept current by triggers:
--
-- * a BEFORE row trigger on payments recomputes a row whenever it is inserted or updated;
-- * statement triggers on visitors, identities and users "touch" (update to itself, ordered
--   by payment id) exactly the payments whose resolution may have changed: a visitor whose
--   first touch, first-seen time, country or device changed (a late event moves a first
--   touch), a visitor seen for the first time, a visitor identified as (or moved to) a user,
--   a user whose email became known.
--
-- All `cr_*` columns are derived; nothing else writes them.

ALTER TABLE payments
    ADD COLUMN cr_visitor_id      text    NULL,
    -- cr_visitor_id when the consumer has that visitor's row (its dimensions are known).
    ADD COLUMN cr_known_visitor   text    NULL,
    ADD COLUMN cr_payer           text    NULL,
    ADD COLUMN cr_visitor_user_id bigint  NULL,
    ADD COLUMN cr_email_user_id   bigint  NULL,
    ADD COLUMN cr_own_visitor     boolean NOT NULL DEFAULT false,
    ADD COLUMN cr_channel         text    NULL,
    ADD COLUMN cr_source          text    NULL,
    ADD COLUMN cr_medium          text    NULL,
    ADD COLUMN cr_campaign        text    NULL,
    ADD COLUMN cr_referrer_host   text    NULL,
    ADD COLUMN cr_landing_page    text    NULL,
    ADD COLUMN cr_country         text    NULL,
    ADD COLUMN cr_device          text    NULL;

CREATE FUNCTION zori_payment_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vu bigint;
    eu bigint;
    ft text;
    v  visitors%ROWTYPE;
BEGIN
    vu := NULL;
    eu := NULL;
    ft := NEW.credit_visitor_id;
    IF NEW.visitor_id IS NOT NULL THEN
        SELECT i.user_id INTO vu FROM identities i WHERE i.visitor_id = NEW.visitor_id;
    END IF;
    IF NEW.email_hash IS NOT NULL THEN
        SELECT u.user_id INTO eu FROM users u WHERE u.email_hash = NEW.email_hash;
    END IF;
    NEW.cr_own_visitor := NEW.visitor_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM visitors x WHERE x.visitor_id = NEW.visitor_id);
    IF ft IS NULL AND vu IS NOT NULL THEN
        SELECT x.visitor_id INTO ft
          FROM identities i JOIN visitors x ON x.visitor_id = i.visitor_id
         WHERE i.user_id = vu
         ORDER BY x.first_seen_at, x.ft_event_id
         LIMIT 1;
    END IF;
    IF ft IS NULL AND eu IS NOT NULL THEN
        SELECT x.visitor_id INTO ft
          FROM identities i JOIN visitors x ON x.visitor_id = i.visitor_id
         WHERE i.user_id = eu
         ORDER BY x.first_seen_at, x.ft_event_id
         LIMIT 1;
    END IF;
    IF ft IS NULL AND NEW.cr_own_visitor THEN
        ft := NEW.visitor_id;
    END IF;
    NEW.cr_visitor_id := ft;
    NEW.cr_visitor_user_id := vu;
    NEW.cr_email_user_id := eu;
    NEW.cr_payer := COALESCE(
        'u:' || COALESCE(vu, eu)::text,
        'v:' || NEW.visitor_id,
        'e:' || NEW.email_hash,
        'c:' || NEW.customer_id,
        'p:' || NEW.payment_id::text);
    v := NULL;
    IF ft IS NOT NULL THEN
        SELECT * INTO v FROM visitors x WHERE x.visitor_id = ft;
    END IF;
    NEW.cr_known_visitor := v.visitor_id;
    NEW.cr_channel := v.ft_channel;
    NEW.cr_source := v.ft_source;
    NEW.cr_medium := v.ft_medium;
    NEW.cr_campaign := v.ft_campaign;
    NEW.cr_referrer_host := v.ft_referrer_host;
    NEW.cr_landing_page := v.ft_landing_page;
    NEW.cr_country := v.country;
    NEW.cr_device := v.device;
    RETURN NEW;
END
$$;

CREATE TRIGGER payments_credit BEFORE INSERT OR UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION zori_payment_credit();

-- Recomputes the given payments (in payment id order, so concurrent writers lock alike).
CREATE FUNCTION zori_recredit(ids bigint[]) RETURNS void LANGUAGE sql AS $$
    UPDATE payments p SET cr_visitor_id = p.cr_visitor_id
     WHERE p.payment_id IN (
        SELECT q.payment_id FROM payments q
         WHERE q.payment_id = ANY(ids)
         ORDER BY q.payment_id
           FOR UPDATE)
$$;

-- Payments whose resolution depends on any of these visitors or users.
CREATE FUNCTION zori_payments_of(visitor_ids text[], user_ids bigint[], email_hashes text[])
RETURNS bigint[] LANGUAGE sql STABLE AS $$
    SELECT COALESCE(array_agg(DISTINCT payment_id), '{}') FROM (
        SELECT payment_id FROM payments WHERE visitor_id = ANY(visitor_ids)
        UNION ALL
        SELECT payment_id FROM payments WHERE cr_visitor_id = ANY(visitor_ids)
        UNION ALL
        SELECT payment_id FROM payments WHERE cr_visitor_user_id = ANY(user_ids)
        UNION ALL
        SELECT payment_id FROM payments WHERE cr_email_user_id = ANY(user_ids)
        UNION ALL
        SELECT payment_id FROM payments WHERE email_hash = ANY(email_hashes)
    ) affected
$$;

CREATE INDEX payments_cr_visitor_id_idx ON payments (cr_visitor_id)
    WHERE cr_visitor_id IS NOT NULL;
CREATE INDEX payments_cr_visitor_user_id_idx ON payments (cr_visitor_user_id)
    WHERE cr_visitor_user_id IS NOT NULL;
CREATE INDEX payments_cr_email_user_id_idx ON payments (cr_email_user_id)
    WHERE cr_email_user_id IS NOT NULL;

-- New visitors: payments naming them (own visitor), and their users' payments (a new visitor
-- of a user may be its earliest).
CREATE FUNCTION zori_visitors_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vs text[];
    us bigint[];
BEGIN
    SELECT array_agg(n.visitor_id) INTO vs FROM new_rows n;
    IF vs IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT i.user_id) INTO us FROM identities i WHERE i.visitor_id = ANY(vs);
    PERFORM zori_recredit(zori_payments_of(vs, COALESCE(us, '{}'), '{}'));
    RETURN NULL;
END
$$;

-- Visitors whose first touch, first-seen time, country or device changed.
CREATE FUNCTION zori_visitors_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vs text[];
    us bigint[];
BEGIN
    SELECT array_agg(n.visitor_id) INTO vs
      FROM new_rows n JOIN old_rows o ON o.visitor_id = n.visitor_id
     WHERE (n.ft_event_id, n.first_seen_at, n.ft_channel, n.ft_source, n.ft_medium,
            n.ft_campaign, n.ft_referrer_host, n.ft_landing_page, n.country, n.device)
           IS DISTINCT FROM
           (o.ft_event_id, o.first_seen_at, o.ft_channel, o.ft_source, o.ft_medium,
            o.ft_campaign, o.ft_referrer_host, o.ft_landing_page, o.country, o.device);
    IF vs IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT i.user_id) INTO us FROM identities i WHERE i.visitor_id = ANY(vs);
    PERFORM zori_recredit(zori_payments_of(vs, COALESCE(us, '{}'), '{}'));
    RETURN NULL;
END
$$;

CREATE TRIGGER visitors_recredit_insert AFTER INSERT ON visitors
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_visitors_inserted();
CREATE TRIGGER visitors_recredit_update AFTER UPDATE ON visitors
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_visitors_updated();

-- Identities added, moved or removed: the visitors' payments and both users' payments.
CREATE FUNCTION zori_identities_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vs text[];
    us bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.visitor_id), array_agg(DISTINCT n.user_id) INTO vs, us FROM new_rows n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.visitor_id), array_agg(DISTINCT o.user_id) INTO vs, us FROM old_rows o;
    ELSE
        SELECT array_agg(n.visitor_id), array_agg(DISTINCT u.user_id) INTO vs, us
          FROM new_rows n JOIN old_rows o ON o.visitor_id = n.visitor_id
          CROSS JOIN LATERAL (VALUES (n.user_id), (o.user_id)) u(user_id)
         WHERE n.user_id IS DISTINCT FROM o.user_id;
    END IF;
    IF vs IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM zori_recredit(zori_payments_of(vs, COALESCE(us, '{}'), '{}'));
    RETURN NULL;
END
$$;

CREATE TRIGGER identities_recredit_insert AFTER INSERT ON identities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_identities_changed();
CREATE TRIGGER identities_recredit_update AFTER UPDATE ON identities
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_identities_changed();
CREATE TRIGGER identities_recredit_delete AFTER DELETE ON identities
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_identities_changed();

-- Users whose email became known or changed: payments by either email.
CREATE FUNCTION zori_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    es text[];
    us bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.email_hash), array_agg(n.user_id) INTO es, us
          FROM new_rows n WHERE n.email_hash IS NOT NULL;
    ELSE
        SELECT array_agg(e.email_hash), array_agg(DISTINCT n.user_id) INTO es, us
          FROM new_rows n JOIN old_rows o ON o.user_id = n.user_id
          CROSS JOIN LATERAL (VALUES (n.email_hash), (o.email_hash)) e(email_hash)
         WHERE n.email_hash IS DISTINCT FROM o.email_hash AND e.email_hash IS NOT NULL;
    END IF;
    IF es IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM zori_recredit(zori_payments_of('{}', us, es));
    RETURN NULL;
END
$$;

CREATE TRIGGER users_recredit_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_users_changed();
CREATE TRIGGER users_recredit_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION zori_users_changed();

-- Payments stored before this migration.
UPDATE payments SET cr_visitor_id = cr_visitor_id;

-- The payments written recently, which zori-api recomputes every interval: a payment inserted
-- or linked while another transaction changed its visitor may have missed that change.
CREATE INDEX payments_updated_at_idx ON payments (updated_at);
