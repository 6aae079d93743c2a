-- Reports count live payments by default and test-mode ones only while no live payment exists:
-- every revenue report asks whether one does. A partial index answers without a scan.
CREATE INDEX payments_live_idx ON payments (payment_id) WHERE livemode AND amount > 0;
