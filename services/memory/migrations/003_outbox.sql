-- Erasure commits and its customer.erased event must follow: the event is written here in the
-- same transaction, delivered right after the commit, and by the relay if that fails.
CREATE TABLE memory.outbox (
    id         bigserial PRIMARY KEY,
    kind       text        NOT NULL,
    key        text        NOT NULL,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts   integer     NOT NULL DEFAULT 0,
    last_error text
);

-- One receipt per erased customer: a retried DELETE answers with the same receipt instead of
-- 404, and the platform can show when an erasure was carried out. Counts only, no content.
CREATE TABLE memory.erasures (
    customer_id      text PRIMARY KEY,
    erasure_event_id uuid        NOT NULL,
    identities       integer     NOT NULL,
    conversations    integer     NOT NULL,
    requested_by     text        NOT NULL,
    erased_at        timestamptz NOT NULL DEFAULT now()
);
