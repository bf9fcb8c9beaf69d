-- Who owns each conversation (the bot, the queue, or an agent) and the tickets agents work.
CREATE SCHEMA IF NOT EXISTS escalation;

CREATE TABLE escalation.conversations (
    conversation_id text PRIMARY KEY,
    customer_id     text        NOT NULL,
    channel         text        NOT NULL,
    owner           text        NOT NULL DEFAULT 'bot' CHECK (owner IN ('bot', 'queued', 'agent')),
    agent_id        text,
    -- Bumped at every change of owner; routed turns carry it so a stale bot reply is dropped.
    epoch           bigint      NOT NULL DEFAULT 0,
    last_turn_id    uuid,
    -- Customer turns since the bot (re)gained the conversation; reset at every hand-back.
    bot_turns       integer     NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE escalation.tickets (
    ticket_id       uuid PRIMARY KEY,
    conversation_id text        NOT NULL REFERENCES escalation.conversations (conversation_id),
    customer_id     text        NOT NULL,
    channel         text        NOT NULL,
    status          text        NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'claimed', 'resolved', 'handed_back')),
    priority        integer     NOT NULL,
    severity        text        NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    reasons         jsonb       NOT NULL,
    summary         text        NOT NULL DEFAULT '',
    opened_by_event uuid        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    claimed_by      text,
    claimed_at      timestamptz,
    closed_at       timestamptz
);
-- At most one open ticket per conversation.
CREATE UNIQUE INDEX tickets_one_open_idx ON escalation.tickets (conversation_id)
    WHERE status IN ('queued', 'claimed');
CREATE INDEX tickets_queue_idx ON escalation.tickets (status, priority DESC, created_at);
