-- Invoice payments (issue 11, API 2025-03-31.basil and later): one `inpay_…` allocation of
-- (part of) an invoice to one money movement (a payment intent, or a charge without one). One
-- invoice may be paid by several payment intents and one payment intent may pay several
-- invoices, so an invoice is not a payment: each allocation points at the payment row of the
-- money that paid it. A payment whose amount comes from allocations only (no payment intent or
-- charge event seen) is worth the sum of its allocations.
CREATE TABLE invoice_allocations (
    invoice_payment_id text   PRIMARY KEY,
    invoice_id         text   NOT NULL,
    payment_id         bigint NOT NULL REFERENCES payments ON DELETE CASCADE,
    amount             bigint NOT NULL CHECK (amount >= 0),
    currency           text   NOT NULL
);

CREATE INDEX invoice_allocations_invoice_id_idx ON invoice_allocations (invoice_id);
CREATE INDEX invoice_allocations_payment_id_idx ON invoice_allocations (payment_id);
