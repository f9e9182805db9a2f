"""The pipeline's reads and writes for many chats at once: one statement, one round trip.

The pipeline groups what its workers need (see :mod:`vibee.automation.lanes`): the chats
it knows nothing about are loaded together (:func:`load_chats`: each chat's effective
config, its unfinished rows and its recent dialog), the replies of many chats are written
together (:func:`write_replies`), and so are the decisions (:func:`record_many`) and the
sends Telegram confirmed (:func:`mark_sent_many`). Each function is one round trip and
one transaction, all or nothing, with the same effect, row for row, as the one-chat
functions in :mod:`vibee.store.outbox`.

Durability: :func:`write_replies` commits like any statement (``synchronous_commit`` as
configured, ``on`` by default): the reply is durable before it is sent. :func:`record_many`
and :func:`mark_sent_many` commit with ``synchronous_commit = off`` for their own
transaction only: losing the last few of them in a crash of *Postgres* (not of VIBEE)
loses nothing that matters — an undecided message is decided again (the same decision:
the draw is seeded by the row), an unconfirmed reply is sent again with its ``random_id``
and Telegram refuses the duplicate — and any later synchronous commit (the next reply)
flushes them anyway, since the WAL is written in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from vibee.store import Conn
from vibee.store.automation import CONFIG_COLUMNS, ChatConfig, config_of
from vibee.store.inbox import FLAG_GROUP
from vibee.store.outbox import InboundRow, OutboxRow

ChatKey = tuple[int, int]
"""(session id, Telegram chat id)."""

DIALOG_TURNS = 20
"""How many of a chat's last messages make its dialog (the prompt's turns)."""

_LOAD = (
    "SELECT k.s, k.c, ts.user_id, "  # noqa: S608 - built once from constant column names
    "CASE WHEN k.cfg THEN (SELECT ROW(ch.id, "
    + ", ".join(f"coalesce(cc.{col}, d.{col})" for col in CONFIG_COLUMNS)
    + ") FROM chats ch LEFT JOIN chat_configs cc ON cc.chat_id = ch.id "  # noqa: S608 - constants
    "LEFT JOIN chat_defaults d ON d.user_id = ch.user_id "
    "WHERE ch.user_id = ts.user_id AND ch.session_id = k.s AND ch.tg_chat_id = k.c) END, "
    "CASE WHEN k.work THEN ARRAY(SELECT ROW(m.id, m.user_id, m.session_id, m.tg_chat_id, "
    "m.message_id, m.sender_id, m.text, m.flags, m.tg_date, m.created_at, m.reply_to_msg_id, "
    "m.sender_username) "
    "FROM messages m WHERE m.user_id = ts.user_id AND m.session_id = k.s "
    "AND m.tg_chat_id = k.c AND m.direction = 'in' AND m.state = 'received' "
    "ORDER BY m.message_id) END, "
    "CASE WHEN k.work THEN ARRAY(SELECT ROW(m.id, m.user_id, m.session_id, m.tg_chat_id, "
    "m.text, m.random_id, m.reply_to_msg_id, m.attempts) FROM messages m "
    "WHERE m.user_id = ts.user_id AND m.session_id = k.s AND m.tg_chat_id = k.c "
    "AND m.direction = 'out' AND m.state = 'pending' ORDER BY m.id) END, "
    "CASE WHEN k.dialog THEN ARRAY(SELECT ROW(t.id, t.direction, t.text, t.message_id, "
    "t.speaker, t.sender_username) FROM (SELECT m.id, m.direction, m.text, m.message_id, "
    f"CASE WHEN m.direction = 'in' AND m.flags & {FLAG_GROUP} <> 0 THEN m.sender_id END "
    "AS speaker, m.sender_username FROM messages m "
    "WHERE m.session_id = k.s AND m.tg_chat_id = k.c AND m.text <> '' "
    "AND NOT (m.direction = 'out' AND m.state IN ('pending', 'dead')) "
    "ORDER BY m.id DESC LIMIT $6) t ORDER BY t.id) END "
    "FROM unnest($1::bigint[], $2::bigint[], $3::bool[], $4::bool[], $5::bool[]) "
    "AS k(s, c, cfg, work, dialog) JOIN telegram_sessions ts ON ts.id = k.s"
)


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What to load for one chat: its config, its unfinished rows, its recent dialog."""

    key: ChatKey
    config: bool = True
    work: bool = True
    dialog: bool = True


def spoken(text: str, speaker: int | None, username: str | None = None) -> str:
    """A message's text as the dialog shows it: in a group, who wrote it first (``speaker``:
    the sender of a group message, None elsewhere; named by ``username`` when known), so
    that the model can tell the people apart and see who was addressed."""
    if speaker is None:
        return text
    return f"{'@' + username if username else f'user {speaker}'}: {text}"


DialogRow = tuple[int, str, str, int | None]
"""A message of the dialog: (row id, direction, text, Telegram message id)."""


@dataclass(slots=True)
class Loaded:
    """One chat as stored. ``None`` for what was not asked; ``config`` is None too when
    the chat is unknown (no ``chats`` row for the session's owner)."""

    user_id: int | None = None
    config: ChatConfig | None = None
    received: list[InboundRow] | None = None
    pending: list[OutboxRow] | None = None
    dialog: list[DialogRow] | None = None


async def load_chats(
    conn: Conn, requests: Sequence[LoadRequest], dialog_turns: int
) -> dict[ChatKey, Loaded]:
    """Load every requested chat in one statement (a chat of an unknown session is
    missing from the result)."""
    if not requests:
        return {}
    rows = await conn.fetch(
        _LOAD,
        [r.key[0] for r in requests],
        [r.key[1] for r in requests],
        [r.config for r in requests],
        [r.work for r in requests],
        [r.dialog for r in requests],
        dialog_turns,
    )
    out: dict[ChatKey, Loaded] = {}
    for s, c, user_id, config, received, pending, dialog in rows:
        loaded = Loaded(user_id=user_id)
        if config is not None:
            loaded.config = config_of(dict(zip(("chat_id", *CONFIG_COLUMNS), config, strict=True)))
        if received is not None:
            loaded.received = [InboundRow(*r) for r in received]
        if pending is not None:
            loaded.pending = [OutboxRow(*r) for r in pending]
        if dialog is not None:
            loaded.dialog = [(r[0], r[1], spoken(r[2], r[4], r[5]), r[3]) for r in dialog]
        out[(s, c)] = loaded
    return out


# A reply whose writer no longer holds the session's lease (``ep``: its epoch, NULL when
# unfenced) is left out, with its messages: the session's row is read FOR KEY SHARE, so a
# new holder's fence (which locks the row FOR UPDATE) either waits for this statement or,
# committed first, is seen by it; the new holder then reads these messages as still
# undecided. KEY SHARE, not SHARE: ingest's and the actor's updates of the same row
# (last_seq, state) must not wait for replies, nor replies for them.
_WRITE_REPLIES = (
    "WITH r AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], "
    "$5::bigint[], $6::bigint[], $7::bigint[], $13::bigint[]) AS r(u, s, c, x, rt, irt, rid, ep)), "
    "fence AS (SELECT t.id, t.epoch FROM telegram_sessions t "
    "WHERE t.id IN (SELECT s FROM r WHERE ep IS NOT NULL) ORDER BY t.id FOR KEY SHARE), "
    "ok AS (SELECT r.* FROM r WHERE r.ep IS NULL "
    "OR EXISTS (SELECT 1 FROM fence f WHERE f.id = r.s AND f.epoch = r.ep)), "
    "ins AS (INSERT INTO messages (user_id, session_id, tg_chat_id, direction, text, "
    "reply_to_msg_id, in_reply_to, random_id, state) SELECT u, s, c, 'out', x, rt, irt, rid, "
    "'pending' FROM ok ON CONFLICT (session_id, random_id) DO NOTHING "
    "RETURNING id, session_id, random_id, created_at), "
    "a AS (SELECT a.* FROM unnest($8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], "
    "$12::text[], $14::bigint[]) AS a(id, u, s, c, p, rid) "
    "WHERE EXISTS (SELECT 1 FROM ok WHERE ok.s = a.s AND ok.rid = a.rid)), "
    "done AS (UPDATE messages m SET state = 'done', updated_at = now() FROM a "
    "WHERE m.id = a.id), "
    "ev AS (INSERT INTO analytics_events (user_id, session_id, chat_id, message_id, kind, "
    "reason, data) SELECT a.u, a.s, a.c, a.id, 'reply', 'replied', a.p::jsonb FROM a) "
    "SELECT id, session_id, random_id, created_at FROM ins"
)


@dataclass(frozen=True, slots=True)
class ReplyWrite:
    """A reply to write to the outbox, and the messages it answers (they become done)."""

    answered: Sequence[InboundRow]
    text: str
    random_id: int
    reply_to_msg_id: int | None
    chat_id: int | None
    data: str
    """The analytics payload (JSON text) of each answered message."""
    epoch: int | None = None
    """The writer's lease epoch for the session (None: unfenced)."""


@dataclass(frozen=True, slots=True)
class ReplyWritten:
    """The outbox row (None: this ``random_id`` was written before) and when."""

    outbox_id: int | None
    created_at: datetime | None


async def write_replies(conn: Conn, replies: Sequence[ReplyWrite]) -> list[ReplyWritten]:
    """In one statement: every reply in the outbox (pending), the messages each answers
    done with a ``reply``/``replied`` analytics event. Results are in ``replies`` order; a
    reply written before, or whose ``epoch`` is stale, has no outbox id (and its messages
    stay as they were)."""
    if not replies:
        return []
    answered = [(r, row) for r in replies for row in r.answered]
    rows = await conn.fetch(
        _WRITE_REPLIES,
        [r.answered[-1].user_id for r in replies],
        [r.answered[-1].session_id for r in replies],
        [r.answered[-1].tg_chat_id for r in replies],
        [r.text for r in replies],
        [r.reply_to_msg_id for r in replies],
        [r.answered[-1].id for r in replies],
        [r.random_id for r in replies],
        [row.id for _, row in answered],
        [row.user_id for _, row in answered],
        [row.session_id for _, row in answered],
        [r.chat_id for r, _ in answered],
        [r.data for r, _ in answered],
        [r.epoch for r in replies],
        [r.random_id for r, _ in answered],
    )
    written = {(r["session_id"], r["random_id"]): r for r in rows}
    out = []
    for reply in replies:
        found = written.get((reply.answered[-1].session_id, reply.random_id))
        if found is None:
            out.append(ReplyWritten(None, None))
        else:
            out.append(ReplyWritten(int(found["id"]), found["created_at"]))
    return out


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision to record: the messages' new state and one analytics event each."""

    rows: Sequence[InboundRow]
    state: str
    kind: str
    reason: str
    chat_id: int | None
    data: str
    """The analytics payload (JSON text)."""


async def record_many(conn: Conn, decided: Sequence[Decided]) -> None:
    """Every decision in one statement (asynchronous commit: see the module doc)."""
    flat = [(d, row) for d in decided for row in d.rows]
    if not flat:
        return
    await conn.execute(
        "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], "
        "$5::bigint[], $6::text[], $7::text[], $8::text[]) AS v(id, st, u, s, c, k, r, p) "
        "WHERE (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL), "
        "upd AS (UPDATE messages m SET state = v.st, updated_at = now() FROM v WHERE m.id = v.id) "
        "INSERT INTO analytics_events (user_id, session_id, chat_id, message_id, kind, reason, "
        "data) SELECT u, s, c, id, k, r, p::jsonb FROM v",
        [row.id for _, row in flat],
        [d.state for d, _ in flat],
        [row.user_id for _, row in flat],
        [row.session_id for _, row in flat],
        [d.chat_id for d, _ in flat],
        [d.kind for d, _ in flat],
        [d.reason for d, _ in flat],
        [d.data for d, _ in flat],
    )


# The copy is found by its unique key first: with ``session_id = $2 AND random_id IS NULL``
# side by side, Postgres takes the (session_id, random_id) unique index for a one-row
# lookup and reads every message the session received (tests/integration/store/test_turns).
_MARK_SENT = (
    "WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true)), "
    "copy AS (DELETE FROM messages WHERE id = (SELECT c.id FROM messages c "
    "WHERE c.session_id = $2 AND c.tg_chat_id = $3 AND c.message_id = $4::bigint "
    "AND c.direction = 'out') AND random_id IS NULL RETURNING id) "
    "UPDATE messages SET state = 'sent', message_id = coalesce($4, message_id), "
    "sent_at = now(), updated_at = now(), attempts = attempts + 1 "
    "WHERE id = $1 AND (SELECT count(*) FROM copy) >= 0 AND (SELECT count(*) FROM cfg) = 1"
)


async def mark_sent_many(conn: Conn, sent: Sequence[tuple[OutboxRow, int | None]]) -> None:
    """:func:`vibee.store.outbox.mark_sent` for many replies: one statement each, sent
    together (one round trip), in one transaction (asynchronous commit: see the module
    doc). Raises ``UniqueViolationError`` when an account's own copy of a sent message was
    committed meanwhile: call again (the copy is deleted then).

    In (session, chat, message id) order, as ingest stores messages
    (:mod:`vibee.store.inbox`): a transaction that marks several replies waits for an
    ingest batch storing the account's copies of them (or the other way round) only in
    that order, so the two never wait for each other — no deadlock, which Postgres would
    break only after ``deadlock_timeout``."""
    ordered = sorted(sent, key=lambda s: (s[0].session_id, s[0].tg_chat_id, s[1] or 0))
    # each statement deletes the copy first (the CTE is read before the update), so the
    # message id is free when the outbox row takes it
    await conn.executemany(
        _MARK_SENT,
        [(item.id, item.session_id, item.tg_chat_id, message_id) for item, message_id in ordered],
    )


def payload(detail: str = "", data: dict[str, Any] | None = None) -> str:
    """The analytics payload of a decision, as :func:`vibee.store.outbox.record` writes it."""
    return orjson.dumps({"detail": detail, **(data or {})}).decode()


async def load_batch(conn: Conn, requests: list[LoadRequest]) -> list[Loaded]:
    """:func:`load_chats` in request order (an unknown chat: nothing loaded)."""
    found = await load_chats(conn, requests, DIALOG_TURNS)
    return [found.get(r.key) or Loaded() for r in requests]


async def record_batch(conn: Conn, items: list[list[Decided]]) -> list[None]:
    """:func:`record_many` for several callers' decisions."""
    await record_many(conn, [d for decided in items for d in decided])
    return [None] * len(items)


async def mark_sent_batch(conn: Conn, items: list[tuple[OutboxRow, int | None]]) -> list[None]:
    """:func:`mark_sent_many`, again while an account's own copy of a sent message is
    committed meanwhile (it is deleted the next time)."""
    for _ in range(5):
        try:
            await mark_sent_many(conn, items)
            return [None] * len(items)
        except asyncpg.UniqueViolationError:
            continue
    raise RuntimeError(f"cannot record {len(items)} outbox rows as sent")
