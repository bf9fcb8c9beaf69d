-- What a ticket is about and which skill queue serves it (shared/intent.py reads it per turn).
ALTER TABLE escalation.tickets
    ADD COLUMN IF NOT EXISTS intent text NOT NULL DEFAULT 'general',
    ADD COLUMN IF NOT EXISTS skill text NOT NULL DEFAULT 'general';
CREATE INDEX IF NOT EXISTS tickets_open_by_skill
    ON escalation.tickets (skill, priority DESC, created_at) WHERE status IN ('queued', 'claimed');
