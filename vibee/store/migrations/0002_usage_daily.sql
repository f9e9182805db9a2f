-- AI usage per user per UTC day: what quotas are checked against, atomically.
CREATE TABLE usage_daily (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day         date NOT NULL,
    requests    integer NOT NULL DEFAULT 0 CHECK (requests >= 0),
    tokens      bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    cost        numeric(14, 8) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, day)
);
