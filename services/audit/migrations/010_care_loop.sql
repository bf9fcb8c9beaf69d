-- The care loop: how conversations end (containment, first-contact resolution, repeat
-- contacts), which bot replies people review and what they score, ratings, and proactive
-- follow-ups. Kept in its own schema: audit.events stays the append-only ledger, these rows
-- are the working state built from the same events (and erased with the customer).
CREATE SCHEMA IF NOT EXISTS care;

CREATE TABLE care.conversations (
    conversation_id    text PRIMARY KEY,
    customer_id        text        NOT NULL,
    channel            text        NOT NULL,
    started_at         timestamptz NOT NULL,
    last_activity_at   timestamptz NOT NULL,
    variant            text,
    playbook           text,
    agent_id           text,
    escalated          boolean     NOT NULL DEFAULT false,
    ticket_id          uuid,
    last_bot_reply_id  uuid,
    issue_categories   text[]      NOT NULL DEFAULT '{}',
    close_requested_at timestamptz,
    closed_at          timestamptz,
    close_reason       text,
    disposition        text,
    fcr_candidate      boolean,
    repeat_of          text,
    repeated_by        text,
    fcr                boolean
);
CREATE INDEX conversations_idle_idx ON care.conversations (last_activity_at)
    WHERE closed_at IS NULL;
CREATE INDEX conversations_customer_idx ON care.conversations (customer_id, closed_at DESC);
CREATE INDEX conversations_fcr_idx ON care.conversations (closed_at)
    WHERE fcr IS NULL AND fcr_candidate;

-- What produced each bot reply: the customer's message, emotion and what memory recalled.
CREATE TABLE care.turns (
    turn_id         uuid PRIMARY KEY,
    conversation_id text        NOT NULL,
    customer_id     text        NOT NULL,
    message         text        NOT NULL,
    emotion         jsonb       NOT NULL,
    memories        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    open_issues     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    route           jsonb,
    at              timestamptz NOT NULL
);
CREATE INDEX turns_conversation_idx ON care.turns (conversation_id);

CREATE TABLE care.replies (
    reply_id        uuid PRIMARY KEY,
    turn_id         uuid        NOT NULL,
    conversation_id text        NOT NULL,
    customer_id     text        NOT NULL,
    channel         text        NOT NULL,
    author          text        NOT NULL,
    text            text        NOT NULL,
    variant         text,
    playbook        text,
    knowledge_used  text[]      NOT NULL DEFAULT '{}',
    memories_used   text[]      NOT NULL DEFAULT '{}',
    flags           text[]      NOT NULL DEFAULT '{}',
    at              timestamptz NOT NULL
);
CREATE INDEX replies_conversation_idx ON care.replies (conversation_id, at);

CREATE TABLE care.feedback (
    event_id        uuid PRIMARY KEY,
    conversation_id text        NOT NULL,
    customer_id     text        NOT NULL,
    reply_id        uuid,
    rating          smallint    NOT NULL,
    nps             smallint,
    comment         text        NOT NULL DEFAULT '',
    at              timestamptz NOT NULL
);
CREATE INDEX feedback_conversation_idx ON care.feedback (conversation_id);

-- The review queue: a reply is queued once, with every reason it was picked.
CREATE TABLE care.review_items (
    reply_id   uuid PRIMARY KEY,
    reasons    text[]      NOT NULL,
    priority   smallint    NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_items_order_idx ON care.review_items (priority DESC, queued_at);

CREATE TABLE care.reviews (
    review_id    uuid PRIMARY KEY,
    reply_id     uuid        NOT NULL,
    reviewer_id  text        NOT NULL,
    scores       jsonb       NOT NULL,
    tags         text[]      NOT NULL DEFAULT '{}',
    better_reply text        NOT NULL DEFAULT '',
    comment      text        NOT NULL DEFAULT '',
    submitted_at timestamptz NOT NULL,
    UNIQUE (reply_id, reviewer_id)
);

-- One row per issue ever followed up: the primary key is what makes "never twice" hold across
-- restarts and replicas.
CREATE TABLE care.followups (
    issue_id        uuid PRIMARY KEY,
    customer_id     text        NOT NULL,
    conversation_id text        NOT NULL,
    channel         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('sending', 'sent', 'skipped')),
    detail          text        NOT NULL DEFAULT '',
    claimed_by      text        NOT NULL,
    claimed_at      timestamptz NOT NULL,
    sent_at         timestamptz
);
