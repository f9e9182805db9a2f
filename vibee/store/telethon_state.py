"""What ``TelethonSession`` keeps in Postgres: update state, entities, the sealed credential.

Tables (migration 0004): ``telethon_update_state`` (one row per session and update box:
entity 0 is the account's common pts/qts/date/seq, other ids are channels' pts) and
``telethon_entities`` (Telethon's entity cache: marked peer id, access hash, username,
phone, display name; id 0 is Telethon's "who am I" marker whose hash is our user id).
Both hang off ``telegram_sessions`` and disappear with it (``ON DELETE CASCADE``). The
credential (dc + auth key) lives in ``telegram_sessions.credential``, sealed by the caller.

These rows are daemon-internal: they are read and written by the session's own actor by
session id only, never served to a user, so they carry no ``user_id`` of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from vibee.store import Conn, Executor

EntityRow = tuple[int, int, str | None, str | None, str | None]
"""(marked id, access hash, username, phone, name): Telethon's own row shape."""


@dataclass(frozen=True, slots=True)
class UpdateStateRow:
    """One update box's position (Telethon's ``types.updates.State`` without unread_count)."""

    entity_id: int
    pts: int
    qts: int
    date: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """Everything one flush writes, in one transaction, in this order."""

    clear: bool = False
    credential: tuple[bytes, str] | None = None
    states: tuple[UpdateStateRow, ...] = ()
    entities: tuple[EntityRow, ...] = ()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def load_states(db: Executor, session_id: int) -> list[UpdateStateRow]:
    """Every stored update box of the session."""
    records = await db.fetch(
        "SELECT entity_id, pts, qts, date, seq FROM telethon_update_state "
        "WHERE session_id = $1 ORDER BY entity_id",
        session_id,
    )
    return [
        UpdateStateRow(r["entity_id"], r["pts"], r["qts"], r["date"], r["seq"]) for r in records
    ]


async def load_entities(db: Executor, session_id: int, limit: int) -> list[EntityRow]:
    """The ``limit`` most recently updated entities of the session, oldest first."""
    records = await db.fetch(
        "SELECT id, hash, username, phone, name FROM ("
        "  SELECT id, hash, username, phone, name, updated_at FROM telethon_entities "
        "  WHERE session_id = $1 ORDER BY updated_at DESC, id LIMIT $2"
        ") AS recent ORDER BY updated_at, id",
        session_id,
        limit,
    )
    return [(r["id"], r["hash"], r["username"], r["phone"], r["name"]) for r in records]


async def save(db: Executor, session_id: int, write: SessionWrite) -> bool:
    """Apply ``write`` in one transaction. False when the session row no longer exists
    (it was deleted: nothing is written and nothing more should be)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _save(conn, session_id, write)
    return await _save(db, session_id, write)


async def _save(conn: Conn, session_id: int, write: SessionWrite) -> bool:
    try:
        async with conn.transaction():
            exists = await conn.fetchval(
                "SELECT true FROM telegram_sessions WHERE id = $1 FOR KEY SHARE", session_id
            )
            if not exists:
                return False
            if write.clear:
                await conn.execute(
                    "DELETE FROM telethon_update_state WHERE session_id = $1", session_id
                )
                await conn.execute(
                    "DELETE FROM telethon_entities WHERE session_id = $1", session_id
                )
            if write.credential is not None:
                sealed, key_id = write.credential
                await conn.execute(
                    "UPDATE telegram_sessions SET credential = $2, credential_key_id = $3, "
                    "updated_at = now() WHERE id = $1",
                    session_id,
                    sealed,
                    key_id,
                )
            if write.states:
                await conn.executemany(
                    "INSERT INTO telethon_update_state "
                    "(session_id, entity_id, pts, qts, date, seq, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, now()) "
                    "ON CONFLICT (session_id, entity_id) DO UPDATE SET pts = EXCLUDED.pts, "
                    "qts = EXCLUDED.qts, date = EXCLUDED.date, seq = EXCLUDED.seq, "
                    "updated_at = now()",
                    [
                        (session_id, s.entity_id, s.pts, s.qts, _aware(s.date), s.seq)
                        for s in write.states
                    ],
                )
            if write.entities:
                await conn.executemany(
                    "INSERT INTO telethon_entities "
                    "(session_id, id, hash, username, phone, name, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, now()) "
                    "ON CONFLICT (session_id, id) DO UPDATE SET hash = EXCLUDED.hash, "
                    "username = EXCLUDED.username, phone = EXCLUDED.phone, "
                    "name = EXCLUDED.name, updated_at = now()",
                    [(session_id, *row) for row in write.entities],
                )
    except asyncpg.ForeignKeyViolationError:
        return False  # the session row was deleted while we wrote
    return True
