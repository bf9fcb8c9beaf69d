-- Provenance on everything memory learns: which turn said it, on which channel, and which
-- extractor read it, so a reviewer can trace (and an operator can purge) what one source taught.
ALTER TABLE memory.memories ADD COLUMN IF NOT EXISTS source_channel text;
ALTER TABLE memory.issues ADD COLUMN IF NOT EXISTS source_channel text;
ALTER TABLE memory.issues ADD COLUMN IF NOT EXISTS extractor text NOT NULL DEFAULT 'rules';

-- Rows learned from now on must say where they came from; NOT VALID leaves older rows alone.
ALTER TABLE memory.memories ADD CONSTRAINT memories_provenance
    CHECK (source_turn_id IS NOT NULL AND source_channel IS NOT NULL AND extractor <> '') NOT VALID;
ALTER TABLE memory.issues ADD CONSTRAINT issues_provenance
    CHECK (source_turn_id IS NOT NULL AND source_channel IS NOT NULL) NOT VALID;
