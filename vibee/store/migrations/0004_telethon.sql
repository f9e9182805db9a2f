-- Telethon's session state, per Telegram session (the dc + auth key stay in
-- telegram_sessions.credential, sealed). Written through by vibee.telegram.telethon_session.

-- Update boxes: entity_id 0 is the account's common state (pts, qts, date, seq); any other
-- id is a channel (its pts only). Telethon resumes from here with getDifference.
CREATE TABLE telethon_update_state (
    session_id  bigint NOT NULL REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    entity_id   bigint NOT NULL,
    pts         bigint NOT NULL,
    qts         bigint NOT NULL,
    date        timestamptz NOT NULL,
    seq         bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, entity_id)
);

-- Telethon's entity cache: marked peer id (users > 0, basic groups < 0, channels -100…),
-- access hash, lowercased username, phone, display name. Id 0 is Telethon's marker for
-- the account itself (its hash is our user id).
CREATE TABLE telethon_entities (
    session_id  bigint NOT NULL REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    id          bigint NOT NULL,
    hash        bigint NOT NULL,
    username    text,
    phone       text,
    name        text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, id)
);
CREATE INDEX telethon_entities_recent_idx ON telethon_entities (session_id, updated_at DESC);
