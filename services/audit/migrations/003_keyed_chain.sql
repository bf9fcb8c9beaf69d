-- A keyed chain, erasure by record, and roles that can only append.
--
-- Chain version 3 is HMAC-SHA256 under a key from settings (CBD_AUDIT_CHAIN_KEY) over the
-- previous hash, the record's position and sha256(body): whoever can write the table but does
-- not hold the key cannot forge a consistent chain. `key_id` names the key (a keyed digest,
-- never the key) so a rotation can be verified. The head moves to audit.chain_heads, one row
-- appended in the same transaction as each record (writers take an advisory lock, so one chain
-- never forks): the head is anchored outside the events table, cutting records off the end is
-- detected, and the writer role needs no UPDATE anywhere.
ALTER TABLE audit.events
    ADD COLUMN IF NOT EXISTS customer_id text,
    ADD COLUMN IF NOT EXISTS key_id text;
ALTER TABLE audit.events ALTER COLUMN chain_version SET DEFAULT 3;
CREATE TABLE IF NOT EXISTS audit.chain_heads (
    seq         bigint PRIMARY KEY,
    hash        bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit.chain_heads (seq, hash) SELECT seq, hash FROM audit.chain_head
    ON CONFLICT DO NOTHING;
CREATE FUNCTION audit.reject_any_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END;
$$;
CREATE TRIGGER chain_heads_append_only
    BEFORE UPDATE OR DELETE ON audit.chain_heads
    FOR EACH ROW EXECUTE FUNCTION audit.reject_any_change();
CREATE TRIGGER chain_heads_no_truncate
    BEFORE TRUNCATE ON audit.chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit.reject_any_change();
CREATE INDEX IF NOT EXISTS events_customer_id_idx ON audit.events (customer_id)
    WHERE erased_at IS NULL;
CREATE INDEX IF NOT EXISTS events_conversation_open_idx ON audit.events (conversation_id)
    WHERE erased_at IS NULL;

-- Erasure blanks content and who it was about (customer and conversation), nothing else.
CREATE OR REPLACE FUNCTION audit.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
       AND NEW.body = '\x'::bytea AND NEW.payload IS NULL AND NEW.conversation_id IS NULL
       AND NEW.customer_id IS NULL
       AND NEW.seq = OLD.seq AND NEW.topic = OLD.topic
       AND NEW.kafka_partition = OLD.kafka_partition AND NEW.kafka_offset = OLD.kafka_offset
       AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id
       AND NEW.event_type IS NOT DISTINCT FROM OLD.event_type
       AND NEW.prev_hash = OLD.prev_hash AND NEW.hash = OLD.hash
       AND NEW.body_sha256 IS NOT DISTINCT FROM OLD.body_sha256
       AND NEW.chain_version = OLD.chain_version
       AND NEW.key_id IS NOT DISTINCT FROM OLD.key_id
       AND NEW.recorded_at = OLD.recorded_at
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP;
END;
$$;

-- Roles for production (NOLOGIN; grant them to the login users the services connect as):
-- the writer may only read and append (records and heads); the eraser may only blank
-- the erasable columns (the trigger above still decides what an erasure is).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbd_audit_writer') THEN
        CREATE ROLE cbd_audit_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbd_audit_eraser') THEN
        CREATE ROLE cbd_audit_eraser NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'audit roles not created (no CREATEROLE); create them as an administrator';
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbd_audit_writer') THEN
        GRANT USAGE ON SCHEMA audit TO cbd_audit_writer;
        GRANT SELECT, INSERT ON audit.events TO cbd_audit_writer;
        GRANT USAGE ON SEQUENCE audit.events_seq_seq TO cbd_audit_writer;
        GRANT SELECT, INSERT ON audit.chain_heads TO cbd_audit_writer;
        GRANT SELECT ON audit.chain_head TO cbd_audit_writer;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbd_audit_eraser') THEN
        GRANT USAGE ON SCHEMA audit TO cbd_audit_eraser;
        GRANT SELECT ON audit.events TO cbd_audit_eraser;
        GRANT UPDATE (body, payload, conversation_id, customer_id, erased_at)
            ON audit.events TO cbd_audit_eraser;
    END IF;
END;
$$;
