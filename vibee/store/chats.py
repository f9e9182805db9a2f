"""What the public API reads and writes about chats: the chat list, a chat's messages with
the automation's decision for each inbound one, messages queued by the user, the persona
and the leads.

Every function takes the authenticated ``user_id`` and filters by it: another user's chat
is indistinguishable from a chat that does not exist (:class:`ChatNotFound`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from vibee.store import Executor, automation


class ChatNotFound(LookupError):
    """No such chat for this user."""


@dataclass(frozen=True, slots=True)
class ChatRow:
    """One chat as VIBEE knows it: VIBEE's id for (session, Telegram chat)."""

    id: int
    session_id: int
    tg_chat_id: int
    kind: str
    title: str
    mode: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One stored message, and for an inbound one the last decision taken on it."""

    id: int
    direction: str
    text: str
    state: str
    message_id: int | None
    sender_id: int | None
    reply_to_msg_id: int | None
    created_at: datetime
    decision: str | None
    decision_detail: str | None


@dataclass(frozen=True, slots=True)
class LeadRow:
    """A lead the sniper recorded."""

    id: int
    session_id: int
    chat_id: int
    sender_id: int
    trigger: str
    text: str
    created_at: datetime


_CHAT_SELECT = (
    "SELECT c.id, c.session_id, c.tg_chat_id, c.kind, c.title, "
    "coalesce(cc.mode, d.mode, 'observe') AS mode, c.created_at FROM chats c "
    "LEFT JOIN chat_configs cc ON cc.chat_id = c.id "
    "LEFT JOIN chat_defaults d ON d.user_id = c.user_id WHERE c.user_id = $1"
)


async def list_chats(db: Executor, user_id: int, session_id: int | None = None) -> list[ChatRow]:
    """The user's chats (of one session when ``session_id`` is given), oldest first."""
    records = await db.fetch(
        _CHAT_SELECT + " AND ($2::bigint IS NULL OR c.session_id = $2) ORDER BY c.id",
        user_id,
        session_id,
    )
    return [ChatRow(**dict(r)) for r in records]


async def get_chat(db: Executor, user_id: int, chat_id: int) -> ChatRow:
    """The user's chat ``chat_id``. Raises ChatNotFound (also for another user's chat)."""
    record = await db.fetchrow(_CHAT_SELECT + " AND c.id = $2", user_id, chat_id)
    if record is None:
        raise ChatNotFound(f"no chat {chat_id}")
    return ChatRow(**dict(record))


async def messages(
    db: Executor, user_id: int, chat_id: int, limit: int, before: int | None = None
) -> list[MessageRow]:
    """The chat's messages, newest first: at most ``limit``, with ids below ``before``.

    ``decision`` is the reason of the last analytics event written for an inbound message
    (why it was or was not answered; None while undecided). Raises ChatNotFound."""
    await get_chat(db, user_id, chat_id)
    records = await db.fetch(
        "SELECT m.id, m.direction, m.text, m.state, m.message_id, m.sender_id, "
        "m.reply_to_msg_id, m.created_at, e.reason AS decision, "
        "e.data->>'detail' AS decision_detail FROM chats c "
        "JOIN messages m ON m.session_id = c.session_id AND m.tg_chat_id = c.tg_chat_id "
        "AND m.user_id = c.user_id "
        "LEFT JOIN LATERAL (SELECT reason, data FROM analytics_events a "
        "WHERE a.message_id = m.id AND m.direction = 'in' ORDER BY a.id DESC LIMIT 1) e "
        "ON true WHERE c.id = $1 AND c.user_id = $2 AND ($3::bigint IS NULL OR m.id < $3) "
        "ORDER BY m.id DESC LIMIT $4",
        chat_id,
        user_id,
        before,
        limit,
    )
    return [MessageRow(**dict(r)) for r in records]


def new_random_id() -> int:
    """A fresh random signed 64-bit ``random_id`` (never 0)."""
    while True:
        value = secrets.randbits(64) - 2**63
        if value != 0:
            return value


async def enqueue_send(
    db: Executor, user_id: int, chat_id: int, text: str, reply_to_msg_id: int | None
) -> int:
    """Queue a message written by the user in the outbox (outgoing, ``pending``, a fresh
    ``random_id``); the pipeline's sweep sends it. Returns its id. Raises ChatNotFound."""
    value = await db.fetchval(
        "INSERT INTO messages (user_id, session_id, tg_chat_id, direction, text, "
        "reply_to_msg_id, random_id, state) SELECT c.user_id, c.session_id, c.tg_chat_id, "
        "'out', $3, $4, $5, 'pending' FROM chats c WHERE c.id = $1 AND c.user_id = $2 "
        "RETURNING id",
        chat_id,
        user_id,
        text,
        reply_to_msg_id,
        new_random_id(),
    )
    if value is None:
        raise ChatNotFound(f"no chat {chat_id}")
    return int(value)


async def set_persona(
    db: Executor, user_id: int, name: str, bio: str, style_rules: str, examples: Sequence[str]
) -> None:
    """Create or replace the user's persona."""
    await db.execute(
        "INSERT INTO personas (user_id, name, bio, style_rules, examples) "
        "VALUES ($1, $2, $3, $4, $5::text[]) ON CONFLICT (user_id) DO UPDATE SET "
        "name = excluded.name, bio = excluded.bio, style_rules = excluded.style_rules, "
        "examples = excluded.examples, updated_at = now()",
        user_id,
        name,
        bio,
        style_rules,
        list(examples),
    )
    await automation.announce_persona_change(db, user_id)  # every instance forgets its copy


async def leads(db: Executor, user_id: int, limit: int) -> list[LeadRow]:
    """The user's newest leads, at most ``limit``."""
    records = await db.fetch(
        "SELECT id, session_id, chat_id, sender_id, trigger, text, created_at FROM leads "
        "WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        user_id,
        limit,
    )
    return [LeadRow(**dict(r)) for r in records]
