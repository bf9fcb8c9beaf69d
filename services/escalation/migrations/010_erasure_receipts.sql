-- Erasure receipts: what later writes consult (shared/erasure.py `Receipts`). An erasure
-- records one row per erased customer id (SHA-256 of tenant and id) and conversation (SHA-256
-- of its id) with the erasure's time, and no content. A record about the customer still in
-- flight when the erasure ran is checked against them in its own transaction and stored erased
-- or dropped. Kept 30 days (the longest topic retention), pruned by later erasures.
CREATE TABLE IF NOT EXISTS escalation.erasure_receipts (
    key         bytea PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('customer', 'conversation')),
    erased_at   timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS erasure_receipts_recorded_idx ON escalation.erasure_receipts (recorded_at);
