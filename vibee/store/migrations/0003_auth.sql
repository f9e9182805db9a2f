-- Public API authentication: rotating refresh tokens grouped in families, and a counter on
-- users that invalidates every access token issued before a password change.

ALTER TABLE users ADD COLUMN auth_generation integer NOT NULL DEFAULT 0;

-- One login: every refresh token rotated from it belongs to the same family. Reusing a
-- rotated token, logging out or changing the password revokes the whole family.
CREATE TABLE refresh_families (
    id            uuid PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoke_reason text
);
CREATE INDEX refresh_families_user_idx ON refresh_families (user_id);

-- Tokens are stored as sha256 digests only; `used_at` is set when the token is rotated.
CREATE TABLE refresh_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family_id   uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
