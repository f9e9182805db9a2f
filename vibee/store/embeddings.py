"""The twin's memory in ``messages``: embeddings of the owner's own replies, and history import.

Embeddings (pgvector, ``messages.embedding vector(1536)``, HNSW cosine index): only the
owner's own outgoing messages — ``direction = 'out'`` and ``random_id IS NULL`` (written
by the owner, not by VIBEE) with some text — are embedded and searched. Vectors travel as
pgvector's text form (``'[0.1,0.2,…]'::vector``), which works on plain connections and on
pool connections with the pgvector codec alike.

History import stores pages of old messages through :func:`vibee.store.inbox.store_batch`
marked :data:`FLAG_IMPORTED`, and in the same transaction turns the imported inbound rows
from ``received`` into ``done``: the pipeline never sees them, so it never answers history.
Rows that were already stored (live ingest) keep their state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from vibee.store import Conn, Executor
from vibee.store.inbox import InboxRow, store_batch

FLAG_IMPORTED = 32
"""``messages.flags`` bit: the row came from a history import, not from a live update."""

EF_SEARCH = 200
"""HNSW candidate list for similarity search: the index is shared by every user and the
user filter applies after it, so the default (40) could leave a user with fewer than k."""


@dataclass(frozen=True, slots=True)
class OwnerMessage:
    """An owner's message waiting for its embedding."""

    id: int
    text: str


@dataclass(frozen=True, slots=True)
class Similar:
    """A past owner reply and its cosine distance to the query (0 = same direction)."""

    id: int
    text: str
    distance: float


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form of ``vector``: ``[x,y,…]``."""
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


async def pending_owner_messages(db: Executor, user_id: int, limit: int) -> list[OwnerMessage]:
    """Up to ``limit`` of the owner's own outgoing messages that have no embedding yet."""
    rows = await db.fetch(
        "SELECT id, text FROM messages WHERE user_id = $1 AND direction = 'out' "
        "AND random_id IS NULL AND embedding IS NULL AND btrim(text) <> '' "
        "ORDER BY id DESC LIMIT $2",
        user_id,
        limit,
    )
    return [OwnerMessage(r["id"], r["text"]) for r in rows]


async def set_embeddings(db: Executor, embeddings: Sequence[tuple[int, Sequence[float]]]) -> int:
    """Store each (message row id, vector) in one statement. Returns the rows updated."""
    if not embeddings:
        return 0
    updated = await db.fetchval(
        "WITH done AS (UPDATE messages AS m SET embedding = v.e::vector, updated_at = now() "
        "FROM unnest($1::bigint[], $2::text[]) AS v(id, e) WHERE m.id = v.id RETURNING 1) "
        "SELECT count(*) FROM done",
        [row_id for row_id, _ in embeddings],
        [vector_literal(vector) for _, vector in embeddings],
    )
    return int(updated or 0)


async def similar_owner_messages(
    db: Executor, user_id: int, vector: Sequence[float], k: int
) -> list[Similar]:
    """The ``k`` owner messages nearest to ``vector`` (cosine distance, HNSW), nearest first."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _similar(conn, user_id, vector, k)
    return await _similar(db, user_id, vector, k)


async def _similar(conn: Conn, user_id: int, vector: Sequence[float], k: int) -> list[Similar]:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}")
        rows = await conn.fetch(
            "SELECT id, text, embedding <=> $2::text::vector AS distance FROM messages "
            "WHERE user_id = $1 AND embedding IS NOT NULL AND direction = 'out' "
            "AND random_id IS NULL ORDER BY embedding <=> $2::text::vector LIMIT $3",
            user_id,
            vector_literal(vector),
            k,
        )
    return [Similar(r["id"], r["text"], float(r["distance"])) for r in rows]


async def store_history(conn: Conn, rows: Sequence[InboxRow]) -> int:
    """Store imported ``rows`` (each with :data:`FLAG_IMPORTED`) idempotently; inbound ones
    this call inserted become ``done`` in the same transaction. Returns how many were new."""
    if not rows:
        return 0
    if any(not r.flags & FLAG_IMPORTED for r in rows):
        raise ValueError("imported rows must carry FLAG_IMPORTED")
    async with conn.transaction():
        inserted = await store_batch(conn, rows)
        await conn.execute(
            "UPDATE messages AS m SET state = 'done', updated_at = now() "
            "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(s, c, i) "
            "WHERE m.session_id = v.s AND m.tg_chat_id = v.c AND m.message_id = v.i "
            "AND m.direction = 'in' AND m.state = 'received' AND m.flags & $4 <> 0",
            [r.session_id for r in rows],
            [r.tg_chat_id for r in rows],
            [r.message_id for r in rows],
            FLAG_IMPORTED,
        )
    return inserted


async def imported_extent(db: Executor, session_id: int, tg_chat_id: int) -> tuple[int | None, int]:
    """(oldest imported message id or None, how many rows were imported) for a chat."""
    row = await db.fetchrow(
        "SELECT min(message_id) AS oldest, count(*) AS n FROM messages "
        "WHERE session_id = $1 AND tg_chat_id = $2 AND flags & $3 <> 0",
        session_id,
        tg_chat_id,
        FLAG_IMPORTED,
    )
    if row is None:
        return None, 0
    return row["oldest"], int(row["n"])


async def users_with_pending(db: Executor, limit: int) -> list[int]:
    """Users with own messages not embedded yet (all users: the daemon's indexing)."""
    rows = await db.fetch(
        "SELECT DISTINCT user_id FROM messages WHERE direction = 'out' AND random_id IS NULL "
        "AND embedding IS NULL AND text <> '' LIMIT $1",
        limit,
    )
    return [r["user_id"] for r in rows]
