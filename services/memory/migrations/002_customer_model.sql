-- The customer model: one customer across channels, a profile, what we learned about them,
-- their open issues and how their past conversations felt. Everything a customer owns hangs
-- off memory.customers so that erasure has one place to start from.
CREATE EXTENSION IF NOT EXISTS vector;

ALTER TABLE memory.customers
    ADD COLUMN name           text,
    ADD COLUMN preferred_name text,
    ADD COLUMN language       text,
    ADD COLUMN tier           text,
    ADD COLUMN lifetime_value numeric(12, 2),
    ADD COLUMN consent        jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN updated_at     timestamptz NOT NULL DEFAULT now();

-- A channel identity (web user id, phone:..., whatsapp:..., email:...) resolves to one customer.
CREATE TABLE memory.identities (
    identity    text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES memory.customers (customer_id) ON DELETE CASCADE,
    kind        text NOT NULL,
    verified    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identities_customer_idx ON memory.identities (customer_id);

-- One value per (customer, slot): learning "my new address is ..." replaces the old address.
CREATE TABLE memory.memories (
    memory_id              uuid PRIMARY KEY,
    customer_id            text NOT NULL REFERENCES memory.customers (customer_id) ON DELETE CASCADE,
    kind                   text NOT NULL
                           CHECK (kind IN ('preference', 'fact', 'constraint', 'contact')),
    slot                   text NOT NULL,
    text                   text NOT NULL,
    confidence             real NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    source_turn_id         uuid,
    source_conversation_id text,
    extractor              text NOT NULL,
    learned_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    embedding              vector(384) NOT NULL,
    UNIQUE (customer_id, slot)
);

CREATE TABLE memory.issues (
    issue_id        uuid PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES memory.customers (customer_id) ON DELETE CASCADE,
    conversation_id text NOT NULL,
    category        text NOT NULL,
    summary         text NOT NULL,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'resolved')),
    source_turn_id  uuid,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
-- At most one unresolved issue per customer and category: raising it again updates it.
CREATE UNIQUE INDEX issues_one_open_idx ON memory.issues (customer_id, category)
    WHERE status <> 'resolved';
CREATE INDEX issues_customer_idx ON memory.issues (customer_id, updated_at DESC);

-- The emotional course of each conversation, folded turn by turn.
CREATE TABLE memory.conversation_moods (
    conversation_id text PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES memory.customers (customer_id) ON DELETE CASCADE,
    turns           integer NOT NULL DEFAULT 0,
    sentiment_sum   double precision NOT NULL DEFAULT 0,
    min_sentiment   double precision NOT NULL DEFAULT 0,
    last_sentiment  double precision NOT NULL DEFAULT 0,
    last_label      text NOT NULL DEFAULT 'neutral',
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX moods_customer_idx ON memory.conversation_moods (customer_id, updated_at DESC);

CREATE INDEX turns_customer_idx ON memory.turns (customer_id);
