-- Every customer belongs to a tenant: two tenants may both have a customer "user-1", or both
-- know the phone number +44..., and neither may see the other's. The tenant joins every key
-- (customers, identities, one memory per slot, one open issue per category, erasure receipts)
-- and every row, so each query can filter on it. Rows from before tenants are the default
-- tenant's, as events that name no tenant are.
ALTER TABLE memory.conversations DROP CONSTRAINT conversations_customer_id_fkey;
ALTER TABLE memory.identities DROP CONSTRAINT identities_customer_id_fkey;
ALTER TABLE memory.memories DROP CONSTRAINT memories_customer_id_fkey;
ALTER TABLE memory.issues DROP CONSTRAINT issues_customer_id_fkey;
ALTER TABLE memory.conversation_moods DROP CONSTRAINT conversation_moods_customer_id_fkey;

ALTER TABLE memory.customers ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE memory.customers DROP CONSTRAINT customers_pkey;
ALTER TABLE memory.customers ADD PRIMARY KEY (tenant, customer_id);

ALTER TABLE memory.identities ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE memory.identities DROP CONSTRAINT identities_pkey;
ALTER TABLE memory.identities ADD PRIMARY KEY (tenant, identity);
DROP INDEX memory.identities_customer_idx;
CREATE INDEX identities_customer_idx ON memory.identities (tenant, customer_id);

ALTER TABLE memory.memories ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE memory.memories DROP CONSTRAINT memories_customer_id_slot_key;
ALTER TABLE memory.memories ADD CONSTRAINT memories_tenant_customer_slot_key
    UNIQUE (tenant, customer_id, slot);

ALTER TABLE memory.issues ADD COLUMN tenant text NOT NULL DEFAULT 'default';
DROP INDEX memory.issues_one_open_idx;
CREATE UNIQUE INDEX issues_one_open_idx ON memory.issues (tenant, customer_id, category)
    WHERE status <> 'resolved';
DROP INDEX memory.issues_customer_idx;
CREATE INDEX issues_customer_idx ON memory.issues (tenant, customer_id, updated_at DESC);

ALTER TABLE memory.conversation_moods ADD COLUMN tenant text NOT NULL DEFAULT 'default';
DROP INDEX memory.moods_customer_idx;
CREATE INDEX moods_customer_idx ON memory.conversation_moods (tenant, customer_id, updated_at DESC);

ALTER TABLE memory.conversations ADD COLUMN tenant text NOT NULL DEFAULT 'default';
DROP INDEX memory.conversations_customer_idx;
CREATE INDEX conversations_customer_idx
    ON memory.conversations (tenant, customer_id, last_activity_at DESC);

ALTER TABLE memory.turns ADD COLUMN tenant text NOT NULL DEFAULT 'default';
DROP INDEX memory.turns_customer_idx;
CREATE INDEX turns_customer_idx ON memory.turns (tenant, customer_id);

ALTER TABLE memory.conversations ADD FOREIGN KEY (tenant, customer_id)
    REFERENCES memory.customers (tenant, customer_id);
ALTER TABLE memory.identities ADD FOREIGN KEY (tenant, customer_id)
    REFERENCES memory.customers (tenant, customer_id) ON DELETE CASCADE;
ALTER TABLE memory.memories ADD FOREIGN KEY (tenant, customer_id)
    REFERENCES memory.customers (tenant, customer_id) ON DELETE CASCADE;
ALTER TABLE memory.issues ADD FOREIGN KEY (tenant, customer_id)
    REFERENCES memory.customers (tenant, customer_id) ON DELETE CASCADE;
ALTER TABLE memory.conversation_moods ADD FOREIGN KEY (tenant, customer_id)
    REFERENCES memory.customers (tenant, customer_id) ON DELETE CASCADE;

-- A receipt answers a retried erasure of this tenant's customer only.
ALTER TABLE memory.erasures ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE memory.erasures DROP CONSTRAINT erasures_pkey;
ALTER TABLE memory.erasures ADD PRIMARY KEY (tenant, customer_key);
