"""RAG for the twin: the fake LLM's /v1/embeddings over HTTP, real Postgres with pgvector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from vibee.ai.base import PermanentError, RetryableError
from vibee.ai.embeddings import EmbeddingsClient
from vibee.automation.context import build_request
from vibee.automation.rag import Rag
from vibee.sim.llm import embedding_of
from vibee.store import automation, embeddings, outbox
from vibee.store.inbox import FLAG_OUTGOING, InboxRow, store_batch

CHAT = 555
OWNER_TEXTS = [
    "sure, tomorrow at 10 works for me",
    "I'm out of office until Monday",
    "the invoice is in your inbox",
    "haha no way",
    "let's call later tonight",
]


@pytest.fixture
async def embedder(sim_llm: str) -> AsyncIterator[EmbeddingsClient]:
    client = EmbeddingsClient(f"{sim_llm}/openai/v1", "text-embedding-3-small", "k", batch_size=2)
    yield client
    await client.close()


async def owner(db: asyncpg.Pool | asyncpg.Connection, name: str) -> tuple[int, int]:
    user = await db.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ($1, 'x') RETURNING id", name
    )
    session = await db.fetchval(
        "INSERT INTO telegram_sessions (user_id) VALUES ($1) RETURNING id", user
    )
    return int(user), int(session)


def row(user: int, session: int, message_id: int, direction: str, text: str) -> InboxRow:
    return InboxRow(
        user_id=user,
        session_id=session,
        tg_chat_id=CHAT,
        chat_kind="private",
        message_id=message_id,
        direction=direction,
        sender_id=1 if direction == "out" else 2,
        text=text,
        reply_to_msg_id=None,
        seq=message_id,
        flags=FLAG_OUTGOING if direction == "out" else 0,
        tg_date=datetime.now(UTC),
    )


async def store(db: asyncpg.Pool | asyncpg.Connection, rows: list[InboxRow]) -> None:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            await store_batch(conn, rows)
    else:
        await store_batch(db, rows)


async def seed(db: asyncpg.Pool | asyncpg.Connection, user: int, session: int) -> None:
    """The owner's own replies, a friend's message, an empty one and a reply VIBEE sent."""
    rows = [row(user, session, i + 1, "out", t) for i, t in enumerate(OWNER_TEXTS)]
    rows += [row(user, session, 100, "in", "are you free tomorrow?")]
    await store(db, [*rows, row(user, session, 101, "out", " ")])
    await db.execute(
        "INSERT INTO messages (user_id, session_id, tg_chat_id, direction, text, random_id, state) "
        "VALUES ($1, $2, $3, 'out', 'a reply VIBEE wrote', 42, 'sent')",
        user,
        session,
        CHAT,
    )


async def test_embed_batches_in_order(embedder: EmbeddingsClient) -> None:
    vectors = await embedder.embed(OWNER_TEXTS)
    assert vectors == [embedding_of(t, 1536) for t in OWNER_TEXTS]
    assert await embedder.embed([]) == []


async def test_index_and_nearest_first(pool: asyncpg.Pool, embedder: EmbeddingsClient) -> None:
    user, session = await owner(pool, "owner")
    other, other_session = await owner(pool, "other")
    await seed(pool, user, session)
    await seed(pool, other, other_session)
    rag = Rag(embedder, pool)
    assert await rag.index_pending(user) == len(OWNER_TEXTS)  # not VIBEE's, not inbound
    assert await rag.index_pending(user) == 0
    assert await embeddings.pending_owner_messages(pool, user, 10) == []
    assert len(await embeddings.pending_owner_messages(pool, other, 10)) == len(OWNER_TEXTS)

    for text in OWNER_TEXTS:
        found = await embeddings.similar_owner_messages(pool, user, embedding_of(text, 1536), 3)
        assert found[0].text == text and found[0].distance == pytest.approx(0.0, abs=1e-6)
        assert len(found) == 3 and found[1].distance > found[0].distance
        assert (await rag.examples(user, text, k=5))[0] == text
    assert await rag.examples(user, "an unrelated text") == []  # too far (fake vectors)
    assert await rag.examples(other, OWNER_TEXTS[0]) == []  # nothing indexed for them yet
    ids = await pool.fetch("SELECT id FROM messages WHERE user_id = $1", other)
    found = await embeddings.similar_owner_messages(pool, user, embedding_of("x", 1536), 50)
    assert len(found) == len(OWNER_TEXTS) and {f.id for f in found}.isdisjoint(
        {r["id"] for r in ids}
    )


async def test_plain_connection_and_hnsw_plan(
    conn: asyncpg.Connection, embedder: EmbeddingsClient
) -> None:
    """Without the pgvector codec too; the ordering (a text parameter cast to vector) can
    use the HNSW index (with a user filter the planner may prefer the user index instead)."""
    user, session = await owner(conn, "owner")
    await seed(conn, user, session)
    assert await Rag(embedder, conn).index_pending(user, limit=3) == 3
    assert await Rag(embedder, conn).index_pending(user) == 2
    found = await embeddings.similar_owner_messages(
        conn, user, embedding_of(OWNER_TEXTS[2], 1536), 1
    )
    assert [f.text for f in found] == [OWNER_TEXTS[2]]
    await conn.execute("SET enable_seqscan = off")
    plan = await conn.fetch(
        "EXPLAIN SELECT id FROM messages ORDER BY embedding <=> $1::text::vector LIMIT 3",
        embeddings.vector_literal(embedding_of("q", 1536)),
    )
    assert "messages_embedding_idx" in "\n".join(r[0] for r in plan)


async def test_rag_off_and_failing_endpoint(pool: asyncpg.Pool, sim_llm: str) -> None:
    user, session = await owner(pool, "owner")
    await seed(pool, user, session)
    off = Rag(None, pool)
    assert not off.enabled
    assert await off.index_pending(user) == 0 and await off.examples(user, "hi") == []

    broken = EmbeddingsClient(f"{sim_llm}/openai/v1", "sim:status=503", "k")
    slow = EmbeddingsClient(f"{sim_llm}/openai/v1", "sim:latency_ms=3000", "k")
    invalid = EmbeddingsClient(f"{sim_llm}/openai/v1", "m", "sk-invalid")
    small = EmbeddingsClient(f"{sim_llm}/openai/v1", "m", "k", dimensions=8)
    try:
        with pytest.raises(RetryableError):
            await Rag(broken, pool).index_pending(user)
        with pytest.raises(PermanentError):
            await invalid.embed(["x"])
        with pytest.raises(PermanentError):  # 1536 dims answered, 8 expected
            await small.embed(["x"])
        assert await Rag(broken, pool).examples(user, OWNER_TEXTS[0]) == []
        late = Rag(slow, pool, examples_timeout_s=0.2)  # a reply never waits for RAG long
        assert await late.examples(user, OWNER_TEXTS[0]) == []
    finally:
        for client in (broken, invalid, small, slow):
            await client.close()


async def test_build_request_adds_similar_replies(
    pool: asyncpg.Pool, embedder: EmbeddingsClient
) -> None:
    user, session = await owner(pool, "owner")
    await seed(pool, user, session)
    await pool.execute("UPDATE messages SET state = 'done' WHERE direction = 'in'")
    await store(pool, [row(user, session, 200, "in", OWNER_TEXTS[1])])
    rag = Rag(embedder, pool)
    await rag.index_pending(user)
    rows = await outbox.received(pool, session, CHAT)
    assert [r.text for r in rows] == [OWNER_TEXTS[1]]  # the fake's vectors: same text, near
    twin = automation.ChatConfig(chat_id=1, mode="digital_twin")

    plain = await build_request(pool, rows, twin)
    off = await build_request(pool, rows, twin, Rag(None, pool))
    with_rag = await build_request(pool, rows, twin, rag)
    sniper = await build_request(pool, rows, automation.ChatConfig(chat_id=1, mode="sniper"), rag)

    assert off.system == plain.system and "similar messages" not in plain.system
    assert with_rag.system.startswith(plain.system)
    block = with_rag.system[len(plain.system) :].splitlines()
    assert block[1].startswith("How you answered similar messages before")
    assert f"- {OWNER_TEXTS[1]}" in block[2:]
    assert "a reply VIBEE wrote" not in with_rag.system
    assert with_rag.messages == plain.messages
    assert "similar messages" not in sniper.system
