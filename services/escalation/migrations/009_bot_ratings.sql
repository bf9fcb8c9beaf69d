-- The agent's rating of how the bot handled a conversation before the handoff (issue #15):
-- one per ticket, by the agent holding it; published as feedback.received (source `agent`).
-- Goes with its ticket when a customer is erased.
CREATE TABLE IF NOT EXISTS escalation.bot_ratings (
    ticket_id       uuid PRIMARY KEY REFERENCES escalation.tickets (ticket_id) ON DELETE CASCADE,
    conversation_id text        NOT NULL,
    agent_id        text        NOT NULL,
    rating          smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         text        NOT NULL DEFAULT '',
    event_id        uuid        NOT NULL,
    rated_at        timestamptz NOT NULL DEFAULT now(),
    tenant          text        NOT NULL DEFAULT 'default'
);
