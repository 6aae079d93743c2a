-- A payment's credit, computed once when it arrives (issue 11, cross-device): the visitor whose
-- first touch gets the revenue and why. Closed months do not move when an old device of the
-- payer is identified later. NULL while no visitor could be found yet (the reports then resolve
-- it as before, and the next event about the payment tries again).
--
-- credit_reason: `visitor` (the payment's own visitor id, or the earliest visitor of the user it
-- is identified as), `subscription` / `customer` (the visitor inherited through a Stripe
-- subscription or customer), `email` (the payer's email matches an identified user).

ALTER TABLE payments
    ADD COLUMN credit_visitor_id text        NULL,
    ADD COLUMN credit_reason     text        NULL,
    ADD COLUMN credited_at       timestamptz NULL;
