-- A record is known by its position and its bytes, not by its position alone. An embedded
-- broker that loses its log (in-memory storage, killed) hands out offsets from zero again, so
-- a new record can arrive at a position an old one holds; keyed by position only, the ledger
-- skipped every such record until the offsets passed the old ones. The same record delivered
-- again (same position, same bytes) is still recorded once. The digest stays when a record is
-- erased, so an erased record's redelivery is still recognised. Records from before chain
-- version 2 have no digest; NULLS NOT DISTINCT keeps their positions unique as before.
ALTER TABLE audit.events
    DROP CONSTRAINT IF EXISTS events_topic_kafka_partition_kafka_offset_key;
CREATE UNIQUE INDEX IF NOT EXISTS events_position_digest_key
    ON audit.events (topic, kafka_partition, kafka_offset, body_sha256) NULLS NOT DISTINCT;
