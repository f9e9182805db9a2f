-- The automation pipeline: per-user defaults for chats, personas, leads, dead letters,
-- and what a chat config and a session need beyond the first migration.

ALTER TABLE telegram_sessions ADD COLUMN tg_username text;

ALTER TABLE chat_configs
    ADD COLUMN tz text NOT NULL DEFAULT 'UTC',
    ADD COLUMN sniper_reply boolean NOT NULL DEFAULT false,
    ADD COLUMN lead_chat_id bigint;

-- A user's defaults for chats that have no chat_configs row. Automation is opt-in:
-- without a row here either, every chat is observed only.
CREATE TABLE chat_defaults (
    user_id              bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    mode                 text NOT NULL DEFAULT 'observe'
                             CHECK (mode IN ('digital_twin', 'sniper', 'observe', 'disabled')),
    trigger_words        text[] NOT NULL DEFAULT '{}',
    response_probability real NOT NULL DEFAULT 1.0
                             CHECK (response_probability BETWEEN 0 AND 1),
    cooldown_s           integer NOT NULL DEFAULT 0 CHECK (cooldown_s >= 0),
    reply_delay_min_s    real NOT NULL DEFAULT 2 CHECK (reply_delay_min_s >= 0),
    reply_delay_max_s    real NOT NULL DEFAULT 8,
    quiet_hours_start    time,
    quiet_hours_end      time,
    tz                   text NOT NULL DEFAULT 'UTC',
    sniper_reply         boolean NOT NULL DEFAULT false,
    lead_chat_id         bigint,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (reply_delay_max_s >= reply_delay_min_s)
);

-- The digital twin: who the owner is and how they write.
CREATE TABLE personas (
    user_id      bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    bio          text NOT NULL DEFAULT '',
    style_rules  text NOT NULL DEFAULT '',
    examples     text[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Sniper hits: at most one per sender per chat per hour (enforced by the pipeline, which
-- handles one chat at a time).
CREATE TABLE leads (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id   bigint NOT NULL REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    chat_id      bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    sender_id    bigint NOT NULL,
    message_id   bigint REFERENCES messages (id) ON DELETE SET NULL,
    trigger      text NOT NULL,
    text         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_user_idx ON leads (user_id, created_at DESC);
CREATE INDEX leads_dedup_idx ON leads (chat_id, sender_id, created_at DESC);

-- What could not be done, with why; an operator replays or drops it.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id   bigint REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    message_id   bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    error        text NOT NULL,
    attempts     integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX dead_letters_message_key ON dead_letters (message_id);
