-- Every change of owner commits with a message to mirror the new owner and epoch to Redis,
-- where generation reads it; delivered right after the commit, and by the relay if that fails.
CREATE TABLE escalation.outbox (
    id         bigserial PRIMARY KEY,
    kind       text        NOT NULL,
    key        text        NOT NULL,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts   integer     NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX outbox_key_idx ON escalation.outbox (key);
