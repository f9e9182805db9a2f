-- History imports requested over the API (POST /api/v1/sessions/{id}/history/import):
-- one row per job, run by the instance whose session actor is connected. A job is claimed
-- atomically (state running, claimed_by/claimed_at, attempts + 1); its claimant refreshes
-- claimed_at while it works, so a job whose claimed_at grows old was left by a crashed
-- instance and is claimed again. `attempts` fences writes: only the current claimant's
-- updates match. At most one queued or running job per session.

CREATE TABLE history_imports (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id       bigint NOT NULL REFERENCES telegram_sessions (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'queued'
                         CHECK (state IN ('queued', 'running', 'done', 'failed')),
    message_limit    integer CHECK (message_limit > 0),
    chats_done       integer NOT NULL DEFAULT 0 CHECK (chats_done >= 0),
    chats_total      integer NOT NULL DEFAULT 0 CHECK (chats_total >= 0),
    messages_stored  bigint NOT NULL DEFAULT 0 CHECK (messages_stored >= 0),
    indexed          integer NOT NULL DEFAULT 0 CHECK (indexed >= 0),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error            text,
    claimed_by       text,
    claimed_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE UNIQUE INDEX history_imports_active_key ON history_imports (session_id)
    WHERE state IN ('queued', 'running');
CREATE INDEX history_imports_session_idx ON history_imports (session_id, id DESC);
CREATE INDEX history_imports_user_idx ON history_imports (user_id);
