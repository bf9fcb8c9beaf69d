-- Every record seen on every topic, in arrival order, hash-chained so that any later edit
-- or deletion is detectable, and guarded by triggers so that none happens by accident.
-- `body` keeps the exact bytes (the chain is computed over them); `payload` is the same
-- record parsed, for queries, when it is a JSON object.
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.events (
    seq             bigserial PRIMARY KEY,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event_id        uuid,
    event_type      text,
    conversation_id text,
    trace_id        text,
    body            bytea       NOT NULL,
    payload         jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX events_conversation_idx ON audit.events (conversation_id, seq);
CREATE INDEX events_type_idx ON audit.events (event_type, seq);

-- One row holding the latest hash; updating it serialises writers onto one chain.
CREATE TABLE audit.chain_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL,
    hash bytea  NOT NULL
);
INSERT INTO audit.chain_head (id, seq, hash) VALUES (true, 0, '\x00'::bytea);

CREATE FUNCTION audit.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.reject_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.reject_change();
