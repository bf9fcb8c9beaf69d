-- Erasure without breaking the chain. From here on the chain covers sha256(body), not the body
-- itself (chain_version 2), so a customer's records can have their bytes erased while every
-- hash still verifies. Rows written before this migration keep chain_version 1; one of those
-- that is erased can no longer be recomputed, and verify says so instead of failing.
ALTER TABLE audit.events
    ADD COLUMN body_sha256   bytea,
    ADD COLUMN chain_version smallint NOT NULL DEFAULT 1,
    ADD COLUMN erased_at     timestamptz;
ALTER TABLE audit.events ALTER COLUMN chain_version SET DEFAULT 2;
CREATE INDEX events_customer_idx ON audit.events ((payload ->> 'customer_id'))
    WHERE erased_at IS NULL;

-- Still append-only, with one exception: erasing a record's content (never its place, its
-- hashes or its type) for the right to erasure.
CREATE OR REPLACE FUNCTION audit.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
       AND NEW.body = '\x'::bytea AND NEW.payload IS NULL AND NEW.conversation_id IS NULL
       AND NEW.seq = OLD.seq AND NEW.topic = OLD.topic
       AND NEW.kafka_partition = OLD.kafka_partition AND NEW.kafka_offset = OLD.kafka_offset
       AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id
       AND NEW.event_type IS NOT DISTINCT FROM OLD.event_type
       AND NEW.prev_hash = OLD.prev_hash AND NEW.hash = OLD.hash
       AND NEW.body_sha256 IS NOT DISTINCT FROM OLD.body_sha256
       AND NEW.chain_version = OLD.chain_version
       AND NEW.recorded_at = OLD.recorded_at
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP;
END;
$$;
