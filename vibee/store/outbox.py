"""The pipeline's view of ``messages``: unfinished inbound rows, the outbox, decisions.

States are explicit: inbound ``received`` → ``done`` (answered, or a lead recorded) |
``skipped`` (the policy said no; the reason is an analytics event); outbound ``pending`` →
``sent`` | ``dead`` (in ``dead_letters`` with its error). A reply is written here, with its
``random_id``, before it is sent; the inbound rows it answers become ``done`` in the same
transaction, so a crash either before or after leaves one consistent truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from vibee.store import Conn, Executor


@dataclass(frozen=True, slots=True)
class InboundRow:
    """A stored incoming message waiting for a decision."""

    id: int
    user_id: int
    session_id: int
    tg_chat_id: int
    message_id: int
    sender_id: int
    text: str
    flags: int
    tg_date: datetime
    created_at: datetime
    reply_to_msg_id: int | None = None
    sender_username: str | None = None
    stored_at: float | None = field(default=None, compare=False)
    """When ingest's commit of this row returned (``time.time()``), if it handed the row
    over; None when it was read back from the database."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A reply written and not yet confirmed sent."""

    id: int
    user_id: int
    session_id: int
    tg_chat_id: int
    text: str
    random_id: int
    reply_to_msg_id: int | None
    attempts: int


async def chats_with_work(db: Executor, session_id: int | None = None) -> list[tuple[int, int]]:
    """(session, chat) of every chat with an unanswered message or an unsent reply (of
    one session, or of all)."""
    rows = await db.fetch(
        "SELECT DISTINCT session_id, tg_chat_id FROM messages "
        "WHERE ((direction = 'in' AND state = 'received') "
        "OR (direction = 'out' AND state = 'pending')) "
        "AND ($1::bigint IS NULL OR session_id = $1)",
        session_id,
    )
    return [(r["session_id"], r["tg_chat_id"]) for r in rows]


async def received(db: Executor, session_id: int, tg_chat_id: int) -> list[InboundRow]:
    """The chat's messages waiting for a decision, oldest first."""
    rows = await db.fetch(
        "SELECT id, user_id, session_id, tg_chat_id, message_id, sender_id, text, flags, "
        "tg_date, created_at, reply_to_msg_id, sender_username FROM messages "
        "WHERE session_id = $1 "
        "AND tg_chat_id = $2 AND direction = 'in' AND state = 'received' ORDER BY message_id",
        session_id,
        tg_chat_id,
    )
    return [InboundRow(**dict(r)) for r in rows]


async def pending(db: Executor, session_id: int, tg_chat_id: int) -> list[OutboxRow]:
    """The chat's replies not yet confirmed sent, oldest first."""
    rows = await db.fetch(
        "SELECT id, user_id, session_id, tg_chat_id, text, random_id, reply_to_msg_id, attempts "
        "FROM messages WHERE session_id = $1 AND tg_chat_id = $2 AND direction = 'out' "
        "AND state = 'pending' ORDER BY id",
        session_id,
        tg_chat_id,
    )
    return [OutboxRow(**dict(r)) for r in rows]


async def ours_among(
    db: Executor, session_id: int, tg_chat_id: int, message_ids: list[int]
) -> set[int]:
    """Which of ``message_ids`` (in this chat) the account itself wrote."""
    if not message_ids:
        return set()
    rows = await db.fetch(
        "SELECT message_id FROM messages WHERE session_id = $1 AND tg_chat_id = $2 "
        "AND direction = 'out' AND message_id = ANY($3::bigint[])",
        session_id,
        tg_chat_id,
        message_ids,
    )
    return {r["message_id"] for r in rows}


async def recent_dialog(
    db: Executor, session_id: int, tg_chat_id: int, limit: int = 20
) -> list[tuple[str, str]]:
    """The last ``limit`` messages of the chat as (direction, text), oldest first."""
    rows = await db.fetch(
        "SELECT direction, text FROM (SELECT id, direction, text FROM messages "
        "WHERE session_id = $1 AND tg_chat_id = $2 AND text <> '' "
        "AND NOT (direction = 'out' AND state IN ('pending', 'dead')) "
        "ORDER BY id DESC LIMIT $3) t ORDER BY id",
        session_id,
        tg_chat_id,
        limit,
    )
    return [(r["direction"], r["text"]) for r in rows]


async def last_reply_at(db: Executor, session_id: int, tg_chat_id: int) -> datetime | None:
    """When VIBEE last replied in this chat (for the cooldown)."""
    value = await db.fetchval(
        "SELECT max(created_at) FROM messages WHERE session_id = $1 AND tg_chat_id = $2 "
        "AND direction = 'out' AND random_id IS NOT NULL",
        session_id,
        tg_chat_id,
    )
    return value if isinstance(value, datetime) else None


async def record(
    db: Executor,
    rows: Sequence[InboundRow],
    state: str,
    kind: str,
    reason: str,
    detail: str = "",
    chat_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Set the rows' state and write one analytics event per row with the reason."""
    if not rows:
        return
    ids = [r.id for r in rows]
    payload = orjson.dumps({"detail": detail, **(data or {})}).decode()
    await db.execute(
        "UPDATE messages SET state = $2, updated_at = now() WHERE id = ANY($1::bigint[])",
        ids,
        state,
    )
    await db.executemany(
        "INSERT INTO analytics_events (user_id, session_id, chat_id, message_id, kind, reason, "
        "data) VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)",
        [(r.user_id, r.session_id, chat_id, r.id, kind, reason, payload) for r in rows],
    )


async def write_card(
    db: Executor, user_id: int, session_id: int, tg_chat_id: int, text: str, random_id: int
) -> int | None:
    """A message to the owner (a lead card) in the outbox; None if written before."""
    value = await db.fetchval(
        "INSERT INTO messages (user_id, session_id, tg_chat_id, direction, text, random_id, "
        "state) VALUES ($1, $2, $3, 'out', $4, $5, 'pending') "
        "ON CONFLICT (session_id, random_id) DO NOTHING RETURNING id",
        user_id,
        session_id,
        tg_chat_id,
        text,
        random_id,
    )
    return int(value) if value is not None else None


async def mark_sent(conn: Conn, outbox: OutboxRow, message_id: int | None) -> None:
    """The reply reached Telegram (``message_id`` None: it had already, random_id reused).

    The account's own update for the sent message may have been stored as a plain outgoing
    row, even by a transaction still in flight: that copy is dropped (once the other
    transaction commits, the unique key makes ours wait and fail, and we drop it again)
    so the outbox row alone carries the message id."""
    for _ in range(5):
        try:
            async with conn.transaction():
                if message_id is not None:
                    await conn.execute(  # by the unique key first: see turns._MARK_SENT
                        "DELETE FROM messages WHERE id = (SELECT c.id FROM messages c "
                        "WHERE c.session_id = $1 AND c.tg_chat_id = $2 AND c.message_id = $3 "
                        "AND c.direction = 'out') AND random_id IS NULL",
                        outbox.session_id,
                        outbox.tg_chat_id,
                        message_id,
                    )
                await conn.execute(
                    "UPDATE messages SET state = 'sent', message_id = coalesce($2, message_id), "
                    "sent_at = now(), updated_at = now(), attempts = attempts + 1 WHERE id = $1",
                    outbox.id,
                    message_id,
                )
            return
        except asyncpg.UniqueViolationError:
            continue  # the copy was committed meanwhile: drop it and try again
    raise RuntimeError(f"cannot record outbox row {outbox.id} as sent")


async def count_attempt(db: Executor, outbox_id: int, error: str) -> int:
    """One more failed send; returns the number of attempts so far."""
    value = await db.fetchval(
        "UPDATE messages SET attempts = attempts + 1, last_error = $2, updated_at = now() "
        "WHERE id = $1 RETURNING attempts",
        outbox_id,
        error,
    )
    return int(value or 0)


async def dead_letter(db: Executor, outbox: OutboxRow, error: str, attempts: int) -> None:
    """Give up on a reply: state ``dead`` and a row in dead_letters with the error."""
    await db.execute(
        "WITH dead AS (UPDATE messages SET state = 'dead', last_error = $3, updated_at = now() "
        "WHERE id = $1 RETURNING id) INSERT INTO dead_letters (user_id, session_id, message_id, "
        "error, attempts) SELECT $2, $4, id, $3, $5 FROM dead "
        "ON CONFLICT (message_id) DO UPDATE SET error = excluded.error, "
        "attempts = excluded.attempts, created_at = now()",
        outbox.id,
        outbox.user_id,
        error,
        outbox.session_id,
        attempts,
    )
