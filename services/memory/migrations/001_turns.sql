-- Customers, conversations and every turn said in them: the system of record.
CREATE SCHEMA IF NOT EXISTS memory;

CREATE TABLE memory.customers (
    customer_id   text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memory.conversations (
    conversation_id  text PRIMARY KEY,
    customer_id      text NOT NULL REFERENCES memory.customers (customer_id),
    channel          text NOT NULL,
    started_at       timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL
);
CREATE INDEX conversations_customer_idx ON memory.conversations (customer_id, last_activity_at DESC);

-- turn_key is the customer turn's id or the reply's id, so a redelivered event is stored once.
CREATE TABLE memory.turns (
    turn_key        uuid PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES memory.conversations (conversation_id),
    customer_id     text NOT NULL,
    role            text NOT NULL CHECK (role IN ('customer', 'bot', 'agent', 'system')),
    text            text NOT NULL,
    channel         text NOT NULL,
    in_reply_to     uuid,
    emotion         jsonb,
    event_id        uuid NOT NULL,
    trace_id        text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX turns_conversation_idx ON memory.turns (conversation_id, occurred_at);
