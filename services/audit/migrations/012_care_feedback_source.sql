-- Who gave each rating (issue #15): the customer (CSAT, NPS), or the agent who took the
-- conversation over, rating how the bot handled it before the handoff. Rows from before are
-- customers'.
ALTER TABLE care.feedback ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'customer';
ALTER TABLE care.feedback ADD COLUMN IF NOT EXISTS agent_id text;
ALTER TABLE care.feedback ADD COLUMN IF NOT EXISTS ticket_id uuid;
CREATE INDEX IF NOT EXISTS feedback_source_idx ON care.feedback (source, at);
