"""Ingest: its writers keep a pool connection while messages keep coming, survive losing
it, and store different sessions side by side."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from tests.integration.telegram.test_daemon_sessions import vibee_user
from tests.integration.telegram.world import eventually
from vibee.automation.ingest import LINGER_S, WRITERS, Ingest
from vibee.store import sessions
from vibee.telegram.gateway import ChatType, NewMessage
from vibee.telegram.session_actor import Inbound


def inbound(session: int, user: int, message_id: int) -> Inbound:
    message = NewMessage(
        seq=message_id,
        chat_id=777,
        message_id=message_id,
        sender_id=5,
        sender_username=None,
        text=f"hello {message_id}",
        date=datetime.now(UTC),
        chat_type=ChatType.PRIVATE,
    )
    return Inbound(session, user, message)


def in_use(pool: asyncpg.Pool) -> int:
    return pool.get_size() - pool.get_idle_size()


class Storing:
    """A user, a session and a started ingest, recording what it stored."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.stored: list[set[tuple[int, int]]] = []
        self.ingest = Ingest(pool, batch_size=10, queue_size=10, on_stored=self.stored.append)
        self.pool = pool

    async def start(self, phone: str) -> None:
        self.user = await vibee_user(self.pool)
        self.session = (await sessions.create(self.pool, self.user, phone)).id
        await self.ingest.start()

    async def store(self, message_id: int) -> None:
        """Deliver one message and wait until its batch is stored."""
        await self.store_for(self.session, message_id)

    async def store_for(self, session: int, message_id: int) -> None:
        """Deliver one message of ``session`` and wait until its batch is stored."""
        before = len(self.stored)
        await self.ingest.deliver(inbound(session, self.user, message_id))
        await eventually(lambda: len(self.stored) > before)

    async def count(self) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM messages WHERE session_id = $1", self.session
            )
        )


async def test_batches_share_a_connection_that_goes_back_when_idle(pool: asyncpg.Pool) -> None:
    storing = Storing(pool)
    await storing.start("+15550002")
    try:
        await storing.store(1)
        assert in_use(pool) == 1  # kept for the next batch (for LINGER_S)
        await storing.store(2)
        await asyncio.sleep(LINGER_S * 4)
        assert in_use(pool) == 0  # idle: handed back, so a small pool is not starved
    finally:
        await storing.ingest.stop(10)
    assert await storing.count() == 2


async def test_a_connection_lost_while_held_is_replaced_and_nothing_is_lost(
    pool: asyncpg.Pool, db_url: str
) -> None:
    storing = Storing(pool)
    await storing.start("+15550003")
    try:
        await storing.store(1)
        killer = await asyncpg.connect(db_url)
        try:  # every other backend of the database, the one ingest holds included
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await killer.close()
        await storing.store(2)
    finally:
        await storing.ingest.stop(10)
    assert await storing.count() == 2
    assert in_use(pool) == 0  # handed back at stop


async def test_a_session_whose_batch_is_stuck_does_not_hold_up_the_others(
    pool: asyncpg.Pool, db_url: str
) -> None:
    """Two writers: a session's messages always go to the same one (kept in order), and a
    batch waiting on a lock delays only the sessions of its writer."""
    assert WRITERS == 2
    storing = Storing(pool)
    await storing.start("+15550004")
    stuck = storing.session
    other = stuck
    for phone in range(15550005, 15550015):  # until one goes to the other writer
        other = (await sessions.create(pool, storing.user, f"+{phone}")).id
        if other % WRITERS != stuck % WRITERS:
            break
    assert other % WRITERS != stuck % WRITERS
    locker = await asyncpg.connect(db_url)
    try:
        async with locker.transaction():  # storing a batch updates the session's last_seq
            await locker.execute("SELECT 1 FROM telegram_sessions WHERE id = $1 FOR UPDATE", stuck)
            await storing.ingest.deliver(inbound(stuck, storing.user, 1))
            await storing.store_for(other, 1)  # stored while the first batch waits
            assert await storing.count() == 0
        await eventually(lambda: storing.count())
    finally:
        await locker.close()
        await storing.ingest.stop(10)
    assert await storing.count() == 1
