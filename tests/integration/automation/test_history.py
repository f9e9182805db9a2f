"""History import through the real sim process into real Postgres, then RAG indexing."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from tests.integration.telegram.test_daemon_sessions import authorized_session, vibee_user
from tests.integration.telegram.world import AccountRef, ChatRef, SimWorld
from vibee.ai.embeddings import EmbeddingsClient
from vibee.automation.history import HistoryImport
from vibee.automation.rag import Rag
from vibee.store import embeddings
from vibee.store.inbox import InboxRow, store_batch
from vibee.telegram.gateway import FloodWait, Message, NetworkError
from vibee.telegram.sim_gateway import SimGateway


class CountingGateway(SimGateway):
    """The sim gateway, recording ``history`` calls; fails the call number ``fail_at`` and
    answers FloodWait to the calls numbered in ``flood_at``."""

    def __init__(self, url: str, credential: bytes | None, fail_at: int | None = None) -> None:
        super().__init__(url, credential)
        self.calls: list[tuple[int, int | None]] = []
        self.fail_at = fail_at
        self.flood_at: set[int] = set()

    async def history(
        self, chat_id: int, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        self.calls.append((chat_id, before_id))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise NetworkError("interrupted by the test")
        if len(self.calls) in self.flood_at:
            raise FloodWait(0)
        return await super().history(chat_id, limit=limit, before_id=before_id)


async def world_chats(world: SimWorld) -> tuple[AccountRef, ChatRef, ChatRef, ChatRef]:
    """A private chat of 8 messages (owner and friend alternating), a group of 2 and a
    channel post (never imported unless asked for)."""
    account = await world.account()
    friend, _ = await world.user()
    private = await world.chat("private", [account.user_id, friend])
    group = await world.chat("group", [account.user_id, friend])
    for i in range(8):
        sender = account.user_id if i % 2 else friend
        await world.inject(private, sender, f"private message {i}")
    await world.inject(group, friend, "group hello")
    await world.inject(group, account.user_id, "group answer")
    channel = await world.chat("channel", [account.user_id, friend], admins=[friend])
    await world.inject(channel, friend, "channel post")
    return account, private, group, channel


async def stored(pool: asyncpg.Pool, session: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT tg_chat_id, message_id, direction, state, text, random_id, seq FROM messages "
        "WHERE session_id = $1 ORDER BY tg_chat_id, message_id",
        session,
    )


async def test_import_idempotent_resumable_never_received(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    account, private, group, _ = await world_chats(sim_world)
    user = await vibee_user(pool)
    session = await authorized_session(pool, user, account)
    private_id, group_id = private.seen_by(account.user_id), group.seen_by(account.user_id)
    transcript = await sim_world.transcript(private)
    assert len(transcript) == 8

    # A live update already stored and waiting for an answer must stay so.
    newest = transcript[-2]  # the friend's last message
    live = InboxRow(
        user, session, private_id, "private", newest["message_id"], "in", newest["from"],
        newest["text"], None, 1, 0, datetime.now(UTC),
    )  # fmt: skip
    async with pool.acquire() as conn:
        await store_batch(conn, [live])

    gateway = CountingGateway(sim_world.url, account.credential, fail_at=2)
    await gateway.connect()
    try:
        async with pool.acquire() as conn:
            job = HistoryImport(conn, gateway, user, session, page_size=3)
            with pytest.raises(NetworkError):
                await job.run(chat_ids=[private_id])
            first_page = await stored(pool, session)
            assert len(first_page) == 3  # the newest 3 (one was there already, live)
            oldest = min(r["message_id"] for r in first_page)

            gateway.calls.clear()
            gateway.fail_at = None
            gateway.flood_at = {1, 3}  # waited out, then the same page asked again
            progress: list[tuple[int, int, int]] = []

            def report(done: int, total: int, messages: int) -> None:
                progress.append((done, total, messages))

            embedder = EmbeddingsClient(f"{sim_llm}/openai/v1", "text-embedding-3-small", "k")
            try:
                job = HistoryImport(
                    conn, gateway, user, session, page_size=3, rag=Rag(embedder, pool)
                )
                result = await job.run(progress=report)
            finally:
                await embedder.close()
            private_calls = [before for chat, before in gateway.calls if chat == private_id]
            assert private_calls[0] == private_calls[1] == oldest  # resumed below page 1

            rows = await stored(pool, session)
            assert result.chats == 2 and result.messages == 10 - 3
            assert progress[0] == (0, 2, 0) and progress[-1] == (2, 2, 7)
            assert result.indexed == 5  # the owner's 4 private messages and 1 group answer
            by_chat = {
                private_id: [r for r in rows if r["tg_chat_id"] == private_id],
                group_id: [r for r in rows if r["tg_chat_id"] == group_id],
            }
            assert [r["text"] for r in by_chat[private_id]] == [m["text"] for m in transcript]
            assert [r["text"] for r in by_chat[group_id]] == ["group hello", "group answer"]
            for r in rows:
                assert r["random_id"] is None
                if r["direction"] == "out":
                    assert r["state"] == "sent"
                    assert r["text"].startswith(("private message", "group answer"))
                elif r["message_id"] == newest["message_id"] and r["tg_chat_id"] == private_id:
                    assert r["state"] == "received"  # the live row, untouched
                else:
                    assert r["state"] == "done"
            assert sum(r["direction"] == "out" for r in rows) == 5
            assert (
                await pool.fetchval("SELECT last_seq FROM telegram_sessions WHERE id = $1", session)
                == 1
            )  # history never moves the update cursor

            # Twice: nothing new, nothing doubled, nothing re-fetched beyond one empty page.
            gateway.calls.clear()
            gateway.flood_at = set()
            again = await HistoryImport(conn, gateway, user, session, page_size=3).run()
            assert again.messages == 0 and await stored(pool, session) == rows
            assert len(gateway.calls) == 2
            assert await embeddings.pending_owner_messages(pool, user, 10) == []
    finally:
        await gateway.disconnect()


async def test_limit_per_chat(pool: asyncpg.Pool, sim_world: SimWorld) -> None:
    account, private, _, channel = await world_chats(sim_world)
    user = await vibee_user(pool)
    session = await authorized_session(pool, user, account)
    private_id = private.seen_by(account.user_id)
    gateway = SimGateway(sim_world.url, account.credential)
    await gateway.connect()
    try:
        async with pool.acquire() as conn:
            job = HistoryImport(conn, gateway, user, session, page_size=3)
            assert (await job.run(chat_ids=[private_id], limit=4)).messages == 4
            assert (await job.run(chat_ids=[private_id], limit=4)).messages == 0
            assert (await job.run(chat_ids=[private_id], limit=6)).messages == 2
            channel_id = channel.seen_by(account.user_id)
            assert (await job.run(chat_ids=[channel_id])).messages == 1  # asked for: imported
    finally:
        await gateway.disconnect()
    texts = [r["text"] for r in await stored(pool, session) if r["tg_chat_id"] != channel_id]
    assert texts == [f"private message {i}" for i in range(2, 8)]  # the newest 6
