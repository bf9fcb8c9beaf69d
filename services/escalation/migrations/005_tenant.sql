-- The tenant of each conversation and ticket (the event envelope's): the handoff packet reads
-- the customer's record within it, since another tenant may have a customer with the same id.
ALTER TABLE escalation.conversations ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE escalation.tickets ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
