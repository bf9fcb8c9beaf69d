-- Each agent's credential fingerprint (a keyed digest of the configured hash, never the
-- password) and token version: a changed credential bumps the version, revoking old tokens.
CREATE TABLE IF NOT EXISTS escalation.agent_credentials (
    agent_id      text PRIMARY KEY,
    fingerprint   text        NOT NULL,
    token_version integer     NOT NULL DEFAULT 0 CHECK (token_version >= 0),
    changed_at    timestamptz NOT NULL DEFAULT now()
);
