-- The tenant of each care row (the event envelope's, issue #12): two tenants may both have a
-- customer "user-1", so joins to memory's customers, repeat contacts, follow-ups and erasure
-- match customer ids within a tenant. Rows from before are the default tenant's.
ALTER TABLE care.conversations ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE care.turns ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE care.replies ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE care.feedback ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE care.followups ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
CREATE INDEX IF NOT EXISTS conversations_tenant_customer_idx
    ON care.conversations (tenant, customer_id, closed_at DESC);
