-- An UPDATE of a payment that changes nothing writes nothing (issue 13). The credit triggers of
-- migration 0017 "touch" payments (update them to themselves) so that `payments_credit`
-- recomputes their stored credit, and the periodic recompute touches every recently written
-- payment; without this trigger each touch wrote a new row version even when the credit stayed
-- the same, which is nearly always. After a burst of 100,000 webhooks, the recompute rewrote
-- all of them every minute for an hour.
--
-- PostgreSQL's own `suppress_redundant_updates_trigger` compares the new row with the old one;
-- BEFORE triggers fire in name order, so it must sort after `payments_credit` to see the
-- recomputed credit.
CREATE TRIGGER payments_zz_skip_unchanged BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
