"""Telegram sessions (one row per connected account): login steps, state, sealed credential.

Every function that serves a user takes ``user_id`` and filters by it; the functions that
the daemon uses for all accounts (boot, key rotation) say so in their name or docstring.
The credential column holds ciphertext only (:mod:`vibee.telegram.session_store` seals it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from vibee.store import Executor

STATES = (
    "new",
    "code_sent",
    "password_needed",
    "authorized",
    "connecting",
    "connected",
    "transient_disconnect",
    "logged_out",
    "bad_credentials",
)
RUNNABLE = ("authorized", "connecting", "connected", "transient_disconnect")
"""States of a session whose actor should be running."""


class SessionNotFound(LookupError):
    """No such session for this user."""


class StaleEpoch(Exception):
    """A fenced write from an instance that no longer holds the session's lease."""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One Telegram session as stored."""

    id: int
    user_id: int
    phone: str | None
    telegram_user_id: int | None
    state: str
    state_reason: str | None
    phone_code_hash: str | None
    credential: bytes | None
    credential_key_id: str | None
    last_seq: int
    created_at: datetime
    updated_at: datetime


def _row(record: asyncpg.Record) -> SessionRow:
    return SessionRow(**dict(record))


async def create(db: Executor, user_id: int, phone: str | None) -> SessionRow:
    """A new session for ``user_id`` (or the existing one for the same phone, reset to new)."""
    record = await db.fetchrow(
        "INSERT INTO telegram_sessions (user_id, phone) VALUES ($1, $2) "
        "ON CONFLICT (user_id, phone) WHERE phone IS NOT NULL DO UPDATE "
        "SET updated_at = now() "
        "RETURNING id, user_id, phone, telegram_user_id, state, state_reason, phone_code_hash, "
        "credential, credential_key_id, last_seq, created_at, updated_at",
        user_id,
        phone,
    )
    assert record is not None
    return _row(record)


async def get(db: Executor, user_id: int, session_id: int) -> SessionRow:
    """The user's session. Raises SessionNotFound (also for another user's session)."""
    record = await db.fetchrow(
        "SELECT id, user_id, phone, telegram_user_id, state, state_reason, phone_code_hash, "
        "credential, credential_key_id, last_seq, created_at, updated_at "
        "FROM telegram_sessions WHERE id = $1 AND user_id = $2",
        session_id,
        user_id,
    )
    if record is None:
        raise SessionNotFound(f"no session {session_id}")
    return _row(record)


async def get_any_user(db: Executor, session_id: int) -> SessionRow:
    """Any user's session, for operators' commands (``vibee history import``)."""
    record = await db.fetchrow(
        "SELECT id, user_id, phone, telegram_user_id, state, state_reason, phone_code_hash, "
        "credential, credential_key_id, last_seq, created_at, updated_at "
        "FROM telegram_sessions WHERE id = $1",
        session_id,
    )
    if record is None:
        raise SessionNotFound(f"no session {session_id}")
    return _row(record)


async def list_for_user(db: Executor, user_id: int) -> list[SessionRow]:
    """The user's sessions, oldest first."""
    records = await db.fetch(
        "SELECT id, user_id, phone, telegram_user_id, state, state_reason, phone_code_hash, "
        "credential, credential_key_id, last_seq, created_at, updated_at "
        "FROM telegram_sessions WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    return [_row(r) for r in records]


async def list_runnable_all_users(db: Executor) -> list[SessionRow]:
    """Every session of every enabled user whose actor should run (the daemon's boot)."""
    records = await db.fetch(
        "SELECT s.id, s.user_id, s.phone, s.telegram_user_id, s.state, s.state_reason, "
        "s.phone_code_hash, s.credential, s.credential_key_id, s.last_seq, s.created_at, "
        "s.updated_at FROM telegram_sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.state = ANY($1::text[]) AND s.credential IS NOT NULL "
        "AND u.disabled_at IS NULL ORDER BY s.id",
        list(RUNNABLE),
    )
    return [_row(r) for r in records]


async def save_login_step(
    db: Executor,
    user_id: int,
    session_id: int,
    state: str,
    phone_code_hash: str | None,
    credential: bytes | None,
    key_id: str | None,
) -> None:
    """Record a login step so that any instance can continue it."""
    await db.execute(
        "UPDATE telegram_sessions SET state = $3, state_reason = NULL, phone_code_hash = $4, "
        "credential = $5, credential_key_id = $6, updated_at = now(), "
        "login_expires_at = now() + interval '10 minutes' WHERE id = $1 AND user_id = $2",
        session_id,
        user_id,
        state,
        phone_code_hash,
        credential,
        key_id,
    )


async def save_authorized(
    db: Executor,
    user_id: int,
    session_id: int,
    telegram_user_id: int,
    credential: bytes,
    key_id: str,
) -> None:
    """The login finished: keep the sealed credential, forget the login step."""
    await db.execute(
        "UPDATE telegram_sessions SET state = 'authorized', state_reason = NULL, "
        "telegram_user_id = $3, credential = $4, credential_key_id = $5, "
        "phone_code_hash = NULL, login_expires_at = NULL, updated_at = now() "
        "WHERE id = $1 AND user_id = $2",
        session_id,
        user_id,
        telegram_user_id,
        credential,
        key_id,
    )


async def set_state(
    db: Executor,
    session_id: int,
    state: str,
    reason: str | None = None,
    epoch: int | None = None,
) -> None:
    """The daemon reports a session's connection state (all users: called by its actor).

    With ``epoch`` (the actor's lease), the write is fenced: once another instance has
    taken the session (a higher epoch in the row), it raises :class:`StaleEpoch` and
    changes nothing. It raises the same when the session was deleted."""
    if state not in STATES:
        raise ValueError(f"unknown session state {state!r}")
    found = await db.fetchval(
        "UPDATE telegram_sessions SET state = $2, state_reason = $3, updated_at = now(), "
        "connected_at = CASE WHEN $2 = 'connected' THEN now() ELSE connected_at END "
        "WHERE id = $1 AND ($4::bigint IS NULL OR epoch <= $4) RETURNING id",
        session_id,
        state,
        reason,
        epoch,
    )
    if found is None and epoch is not None:
        raise StaleEpoch(f"session {session_id}: epoch {epoch} is stale or the session is gone")


async def runnable_all_users(db: Executor) -> list[tuple[int, int, int]]:
    """(session id, user id, epoch) of every session whose actor should run somewhere:
    what placement needs, without the credentials."""
    records = await db.fetch(
        "SELECT s.id, s.user_id, s.epoch FROM telegram_sessions s "
        "JOIN users u ON u.id = s.user_id "
        "WHERE s.state = ANY($1::text[]) AND s.credential IS NOT NULL "
        "AND u.disabled_at IS NULL ORDER BY s.id",
        list(RUNNABLE),
    )
    return [(int(r["id"]), int(r["user_id"]), int(r["epoch"])) for r in records]


async def fence(db: Executor, epochs: dict[int, int]) -> list[SessionRow]:
    """Record new leases' epochs (session id → epoch) in one statement; returns the rows
    of the sessions fenced. A session missing from the answer had this or a newer epoch
    already (the lease is stale: another holder came after it) or is gone."""
    if not epochs:
        return []
    # FOR UPDATE first: it waits for a reply being written under the old epoch (which
    # holds the row FOR KEY SHARE; see store.turns), where a plain UPDATE would not
    records = await db.fetch(
        "WITH lk AS (SELECT id FROM telegram_sessions WHERE id = ANY($1::bigint[]) "
        "ORDER BY id FOR UPDATE) "
        "UPDATE telegram_sessions AS s SET epoch = v.epoch "
        "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, epoch) "
        "WHERE s.id = v.id AND s.id IN (SELECT id FROM lk) AND s.epoch < v.epoch "
        "RETURNING s.id, s.user_id, s.phone, s.telegram_user_id, s.state, s.state_reason, "
        "s.phone_code_hash, s.credential, s.credential_key_id, s.last_seq, s.created_at, "
        "s.updated_at",
        list(epochs),
        list(epochs.values()),
    )
    return [_row(r) for r in records]


async def save_last_seq(db: Executor, session_id: int, seq: int) -> None:
    """Remember the last update stored for the session (never moves backwards)."""
    await db.execute(
        "UPDATE telegram_sessions SET last_seq = greatest(last_seq, $2) WHERE id = $1",
        session_id,
        seq,
    )


async def delete(db: Executor, user_id: int, session_id: int) -> bool:
    """Forget a session and everything stored for it. True when it existed."""
    result = await db.execute(
        "DELETE FROM telegram_sessions WHERE id = $1 AND user_id = $2", session_id, user_id
    )
    return str(result).endswith(" 1")


async def sealed_credentials_all_users(db: Executor) -> list[tuple[int, bytes, str | None]]:
    """(id, credential, key id) of every session with a credential (key rotation)."""
    records = await db.fetch(
        "SELECT id, credential, credential_key_id FROM telegram_sessions "
        "WHERE credential IS NOT NULL ORDER BY id"
    )
    return [(r["id"], r["credential"], r["credential_key_id"]) for r in records]


async def replace_credential(
    db: Executor, session_id: int, old: bytes, new: bytes, key_id: str
) -> bool:
    """Swap a credential for its re-encryption, only if nobody changed it meanwhile."""
    result = await db.execute(
        "UPDATE telegram_sessions SET credential = $3, credential_key_id = $4 "
        "WHERE id = $1 AND credential = $2",
        session_id,
        old,
        new,
        key_id,
    )
    return str(result).endswith(" 1")
