"""The inbox side of ``messages``: idempotent batch inserts of what the accounts received.

One statement per batch, whatever the number of sessions in it: chats are upserted, the
messages inserted with ``ON CONFLICT DO NOTHING`` on (session, chat, message id, direction)
— a replayed update is a no-op — and each session's ``last_seq`` advanced, all in one
statement (one round trip, one transaction), so the stored seq never runs ahead of the
stored messages. Messages are inserted in (session, chat, message id) order, the order in
which the pipeline marks replies sent (:func:`vibee.store.turns.mark_sent_many`): the
two wait for each other's keys only in that order, so they cannot deadlock.
:func:`store_new` does the same and returns the new rows with their ids, so that ingest
can hand them to the pipeline without the pipeline reading them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vibee.store import Conn

FLAG_OUTGOING = 1
FLAG_BOT = 2
FLAG_GROUP = 4
FLAG_CHANNEL = 8
FLAG_MENTIONED = 16


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One received message, ready to store."""

    user_id: int
    session_id: int
    tg_chat_id: int
    chat_kind: str
    message_id: int
    direction: str
    sender_id: int
    text: str
    reply_to_msg_id: int | None
    seq: int
    flags: int
    tg_date: datetime
    sender_username: str | None = None


_STORE = (
    "WITH t AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], "
    "$5::bigint[], $6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], "
    "$11::int[], $12::timestamptz[], $13::text[]) AS t(u, s, c, k, m, d, f, x, r, q, g, dt, "
    "un)), "
    "chat AS (INSERT INTO chats (user_id, session_id, tg_chat_id, kind) "
    "SELECT DISTINCT u, s, c, k FROM t ON CONFLICT (session_id, tg_chat_id) DO NOTHING), "
    "seq AS (UPDATE telegram_sessions AS ts SET last_seq = greatest(ts.last_seq, v.q) "
    "FROM (SELECT s, max(q) AS q FROM t GROUP BY s) AS v WHERE ts.id = v.s), "
    "new AS (INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, direction, "
    "sender_id, text, reply_to_msg_id, seq, flags, tg_date, sender_username, state) "
    "SELECT u, s, c, m, d, f, x, r, q, g, dt, un, CASE WHEN d = 'in' THEN 'received' "
    "ELSE 'sent' END FROM t ORDER BY s, c, m, d "
    "ON CONFLICT (session_id, tg_chat_id, message_id, direction) DO NOTHING "
    "RETURNING id, session_id, tg_chat_id, message_id, direction, created_at) "
)
_COUNT_NEW = _STORE + "SELECT count(*) FROM new"  # noqa: S608 - constants
_RETURN_NEW = _STORE + "SELECT * FROM new"  # noqa: S608 - constants


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row :func:`store_new` stored: what was given, and what Postgres gave it."""

    row: InboxRow
    id: int
    created_at: datetime


async def store_batch(conn: Conn, rows: Sequence[InboxRow]) -> int:
    """Store ``rows`` in one statement (so one transaction). Returns how many were new."""
    if not rows:
        return 0
    return int(await conn.fetchval(_COUNT_NEW, *_columns(rows)) or 0)


async def store_new(conn: Conn, rows: Sequence[InboxRow]) -> list[StoredRow]:
    """:func:`store_batch`, returning the rows that were new (a replayed one is not)."""
    if not rows:
        return []
    found = await conn.fetch(_RETURN_NEW, *_columns(rows))
    given = {(r.session_id, r.tg_chat_id, r.message_id, r.direction): r for r in rows}
    return [StoredRow(given[(s, c, m, d)], i, t) for i, s, c, m, d, t in found]


def _columns(rows: Sequence[InboxRow]) -> list[tuple[Any, ...]]:
    return list(zip(*((
        r.user_id, r.session_id, r.tg_chat_id, r.chat_kind, r.message_id, r.direction,
        r.sender_id, r.text, r.reply_to_msg_id, r.seq, r.flags, r.tg_date, r.sender_username,
    ) for r in rows), strict=True))  # fmt: skip
