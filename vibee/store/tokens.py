"""Refresh tokens: rotating, grouped in families, stored as sha256 digests only.

Exceptions::

    TokenError              a refresh token was refused (the message never holds the token)
    ├── TokenInvalid        unknown, expired, or its family was revoked
    ├── TokenReused         an already-rotated token came back: its whole family is revoked
    └── TokenOwnerDisabled  the token is fine but its user is disabled

A login starts a *family*; each refresh marks the presented token used and issues its
successor in the same family. A used token presented again means that two parties hold
the family (one of them stole it), so the family is revoked and both must log in again.
Logging out revokes the family, changing the password revokes every family of the user.

Every function takes the raw token and stores or looks up its digest; expiry uses the
database clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from vibee.store import Conn, Executor


class TokenError(Exception):
    """A refresh token was refused; the message says why, never what the token was."""


class TokenInvalid(TokenError):
    """The token is unknown, expired, or its family was revoked."""


class TokenReused(TokenError):
    """The token had already been rotated; its family is now revoked."""


class TokenOwnerDisabled(TokenError):
    """The token's user is disabled."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of a successful refresh: whose token it was, its family, and the user's
    token generation (for the new access token)."""

    user_id: int
    family_id: UUID
    generation: int


def digest(token: str) -> bytes:
    """The sha256 digest under which ``token`` is stored."""
    return hashlib.sha256(token.encode()).digest()


async def issue(db: Executor, user_id: int, token: str, ttl_s: int) -> UUID:
    """Start a new family for ``user_id`` with ``token`` valid for ``ttl_s`` seconds."""
    family = await db.fetchval(
        """
        WITH family AS (
            INSERT INTO refresh_families (id, user_id) VALUES (gen_random_uuid(), $1)
            RETURNING id
        )
        INSERT INTO refresh_tokens (family_id, user_id, token_hash, expires_at)
        SELECT id, $1, $2, now() + make_interval(secs => $3) FROM family
        RETURNING family_id
        """,
        user_id,
        digest(token),
        float(ttl_s),
    )
    assert isinstance(family, UUID)
    return family


async def rotate(conn: Conn, old_token: str, new_token: str, ttl_s: int) -> Rotation:
    """Mark ``old_token`` used and issue ``new_token`` in its family, atomically.

    Raises TokenInvalid, TokenOwnerDisabled, or TokenReused (after revoking the family:
    that revocation is committed even though the call fails).
    """
    refused: TokenError | None = None
    async with conn.transaction():
        row = await conn.fetchrow(
            """
            SELECT t.id, t.user_id, t.family_id, t.used_at, t.expires_at <= now() AS expired,
                   f.revoked_at, u.disabled_at, u.auth_generation
              FROM refresh_tokens t
              JOIN refresh_families f ON f.id = t.family_id
              JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1
               FOR UPDATE OF t, f
            """,
            digest(old_token),
        )
        if row is None:
            raise TokenInvalid("unknown refresh token")
        if row["revoked_at"] is not None:
            raise TokenInvalid("this refresh token's session was signed out")
        if row["used_at"] is not None:
            await _revoke(conn, row["family_id"], "reuse")
            refused = TokenReused(
                "this refresh token was already used; every token of its session is revoked"
            )
        elif row["expired"]:
            raise TokenInvalid("the refresh token has expired")
        elif row["disabled_at"] is not None:
            raise TokenOwnerDisabled("the account is disabled")
        else:
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
            await conn.execute(
                "INSERT INTO refresh_tokens (family_id, user_id, token_hash, expires_at) "
                "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
                row["family_id"],
                row["user_id"],
                digest(new_token),
                float(ttl_s),
            )
    if refused is not None:
        raise refused
    return Rotation(row["user_id"], row["family_id"], row["auth_generation"])


async def _revoke(db: Executor, family_id: UUID, reason: str) -> None:
    await db.execute(
        "UPDATE refresh_families SET revoked_at = now(), revoke_reason = $2 "
        "WHERE id = $1 AND revoked_at IS NULL",
        family_id,
        reason,
    )


async def revoke_family(db: Executor, token: str, reason: str = "logout") -> bool:
    """Revoke the family of ``token``. False when no such token exists (or it was revoked)."""
    status = await db.execute(
        """
        UPDATE refresh_families SET revoked_at = now(), revoke_reason = $2
         WHERE id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
           AND revoked_at IS NULL
        """,
        digest(token),
        reason,
    )
    return status != "UPDATE 0"


async def revoke_all(db: Executor, user_id: int, reason: str = "password changed") -> int:
    """Revoke every live family of ``user_id``. Returns how many were revoked."""
    status = await db.execute(
        "UPDATE refresh_families SET revoked_at = now(), revoke_reason = $2 "
        "WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        reason,
    )
    return int(status.rsplit(" ", 1)[-1])


async def live_families(db: Executor, user_id: int) -> int:
    """How many families of ``user_id`` are not revoked and still hold an unexpired token."""
    count = await db.fetchval(
        """
        SELECT count(*) FROM refresh_families f
         WHERE f.user_id = $1 AND f.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM refresh_tokens t
                        WHERE t.family_id = f.id AND t.used_at IS NULL AND t.expires_at > now())
        """,
        user_id,
    )
    return int(count)


async def purge_expired(db: Executor, before: datetime) -> int:
    """Delete tokens that expired before ``before``, then families left without tokens.
    Returns how many tokens were deleted."""
    status = await db.execute("DELETE FROM refresh_tokens WHERE expires_at < $1", before)
    await db.execute(
        "DELETE FROM refresh_families f WHERE f.created_at < $1 "
        "AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id)",
        before,
    )
    return int(status.rsplit(" ", 1)[-1])
