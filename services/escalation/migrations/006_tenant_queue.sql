-- Agents read their own tenant's queue (issue #12): the open tickets of one tenant, in order.
CREATE INDEX IF NOT EXISTS tickets_tenant_queue_idx
    ON escalation.tickets (tenant, status, priority DESC, created_at);
