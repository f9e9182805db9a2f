-- The seed's tables (users, telegram_sessions, messages, chat_configs, analytics_events),
-- adapted: explicit states, random_id on the outbox, unique keys for idempotent ingest,
-- user_id on every row that belongs to a user, pgvector embeddings with an HNSW index.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE users (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username          text NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    password_hash     text NOT NULL,
    display_name      text NOT NULL DEFAULT '',
    subscription_tier text NOT NULL DEFAULT 'free',
    disabled_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

-- One Telegram account connected by a user. `credential` is what the gateway needs to
-- reconnect (a Telethon dc + auth key, or a sim token), sealed with the session keyring
-- (AES-256-GCM, the row id as associated data); `credential_key_id` names the key.
CREATE TABLE telegram_sessions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone             text,
    telegram_user_id  bigint,
    state             text NOT NULL DEFAULT 'new' CHECK (state IN (
                          'new', 'code_sent', 'password_needed', 'authorized',
                          'connecting', 'connected', 'transient_disconnect',
                          'logged_out', 'bad_credentials')),
    state_reason      text,
    phone_code_hash   text,
    login_expires_at  timestamptz,
    credential        bytea,
    credential_key_id text,
    last_seq          bigint NOT NULL DEFAULT 0,
    epoch             bigint NOT NULL DEFAULT 0,
    connected_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX telegram_sessions_user_idx ON telegram_sessions (user_id);
CREATE UNIQUE INDEX telegram_sessions_phone_key ON telegram_sessions (user_id, phone)
    WHERE phone IS NOT NULL;

-- VIBEE's own id for (session, Telegram chat): the `{id}` of /api/v1/chats/{id}.
CREATE TABLE chats (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id   bigint NOT NULL REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    tg_chat_id   bigint NOT NULL,
    kind         text NOT NULL DEFAULT 'private'
                     CHECK (kind IN ('private', 'group', 'channel')),
    title        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, tg_chat_id)
);
CREATE INDEX chats_user_idx ON chats (user_id);

CREATE TABLE chat_configs (
    chat_id              bigint PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
    user_id              bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
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
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (reply_delay_max_s >= reply_delay_min_s)
);
CREATE INDEX chat_configs_user_idx ON chat_configs (user_id);

-- Inbox (direction 'in') and outbox (direction 'out') in one table with explicit states.
-- Inbound: received -> processing -> done | skipped | failed.
-- Outbound: pending -> sending -> sent | dead. `random_id` is derived from the inbound row
-- before the first send, so a resend after a crash is rejected by Telegram as a duplicate.
CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id      bigint NOT NULL REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    tg_chat_id      bigint NOT NULL,
    message_id      bigint,
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    sender_id       bigint,
    text            text NOT NULL DEFAULT '',
    reply_to_msg_id bigint,
    in_reply_to     bigint REFERENCES messages (id) ON DELETE SET NULL,
    random_id       bigint,
    seq             bigint,
    flags           integer NOT NULL DEFAULT 0,
    state           text NOT NULL CHECK (state IN (
                        'received', 'processing', 'done', 'skipped', 'failed',
                        'pending', 'sending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    tg_date         timestamptz,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    embedding       vector(1536),
    UNIQUE (session_id, tg_chat_id, message_id, direction),
    UNIQUE (session_id, random_id)
);
CREATE INDEX messages_chat_idx ON messages (session_id, tg_chat_id, id DESC);
CREATE INDEX messages_user_idx ON messages (user_id, created_at DESC);
CREATE INDEX messages_unfinished_idx ON messages (session_id, id)
    WHERE state IN ('received', 'processing', 'pending', 'sending');
CREATE INDEX messages_embedding_idx ON messages USING hnsw (embedding vector_cosine_ops);

-- Every automation decision with its reason ("why didn't it answer?").
CREATE TABLE analytics_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id  bigint REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    chat_id     bigint REFERENCES chats (id) ON DELETE CASCADE,
    message_id  bigint REFERENCES messages (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX analytics_events_user_idx ON analytics_events (user_id, created_at DESC);
CREATE INDEX analytics_events_message_idx ON analytics_events (message_id)
    WHERE message_id IS NOT NULL;
