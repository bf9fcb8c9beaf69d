-- What the tenant's CRM says about a customer (its `account_lookup` action): a purchase-history
-- sentence next to the tier and lifetime value already kept, and when it was last asked, so
-- every replica asks at most once per customer per sync interval.
ALTER TABLE memory.customers ADD COLUMN purchase_summary text;
ALTER TABLE memory.customers ADD COLUMN crm_synced_at timestamptz;
