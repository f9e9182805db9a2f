"""The inbox side of ``messages``: idempotent batch inserts of what the accounts received.

One statement per batch, whatever the number of sessions in it: chats are upserted, the
messages inserted with ``ON CONFLICT DO NOTHING`` on (session, chat, message id, direction)
— a replayed update is a no-op — and each session's ``last_seq`` advanced, all in one
transaction, so the stored seq never runs ahead of the stored messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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


async def store_batch(conn: Conn, rows: Sequence[InboxRow]) -> int:
    """Store ``rows`` in one transaction. Returns how many were new."""
    if not rows:
        return 0
    columns = list(zip(*((
        r.user_id, r.session_id, r.tg_chat_id, r.chat_kind, r.message_id, r.direction,
        r.sender_id, r.text, r.reply_to_msg_id, r.seq, r.flags, r.tg_date,
    ) for r in rows), strict=True))  # fmt: skip
    seqs: dict[int, int] = {}
    for row in rows:
        seqs[row.session_id] = max(seqs.get(row.session_id, 0), row.seq)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO chats (user_id, session_id, tg_chat_id, kind) "
            "SELECT DISTINCT u, s, c, k FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "
            "$4::text[]) AS t(u, s, c, k) ON CONFLICT (session_id, tg_chat_id) DO NOTHING",
            columns[0],
            columns[1],
            columns[2],
            columns[3],
        )
        inserted = await conn.fetchval(
            "WITH new AS (INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, "
            "direction, sender_id, text, reply_to_msg_id, seq, flags, tg_date, state) "
            "SELECT u, s, c, m, d, f, x, r, q, g, t, CASE WHEN d = 'in' THEN 'received' "
            "ELSE 'sent' END FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "
            "$4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], "
            "$10::int[], $11::timestamptz[]) AS t(u, s, c, m, d, f, x, r, q, g, t) "
            "ON CONFLICT (session_id, tg_chat_id, message_id, direction) DO NOTHING "
            "RETURNING 1) SELECT count(*) FROM new",
            columns[0],
            columns[1],
            columns[2],
            columns[4],
            columns[5],
            columns[6],
            columns[7],
            columns[8],
            columns[9],
            columns[10],
            columns[11],
        )
        await conn.execute(
            "UPDATE telegram_sessions AS s SET last_seq = greatest(s.last_seq, v.seq) "
            "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq) WHERE s.id = v.id",
            list(seqs),
            list(seqs.values()),
        )
    return int(inserted or 0)
