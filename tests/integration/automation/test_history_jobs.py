"""The history-jobs child against the real sim process and real Postgres: jobs run through
the live session actor's connection, survive a dropped connection, a stop and a crashed
instance without storing a message twice, and two instances never run one job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tests.integration.automation.test_history import world_chats
from tests.integration.telegram.test_daemon_sessions import (
    KEYRING,
    authorized_session,
    vibee_user,
)
from tests.integration.telegram.world import AccountRef, ChatRef, SimWorld, eventually
from vibee.automation.events import EventBus, Subscription
from vibee.automation.history import HistoryImport
from vibee.automation.history_jobs import HistoryJobs, live_gateway
from vibee.automation.ingest import Ingest
from vibee.runtime import Supervisor
from vibee.store import history_jobs as jobs
from vibee.store import sessions
from vibee.store.history_jobs import HistoryJob
from vibee.telegram.gateway import Gateway, Message, NetworkError
from vibee.telegram.manager import SessionManager
from vibee.telegram.session_actor import SessionActor
from vibee.telegram.sim_gateway import SimGateway

FAST: dict[str, Any] = {"poll_s": 0.1, "stale_after_s": 30.0, "progress_interval_s": 0.0}


class GatedGateway(SimGateway):
    """The sim gateway; its ``history`` calls wait while ``gate`` is clear (``waiting`` is
    set then), and the call numbered ``fail_at`` fails as a dropped connection would."""

    def __init__(self, url: str, credential: bytes | None) -> None:
        super().__init__(url, credential)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()
        self.calls = 0
        self.fail_at: int | None = None

    async def history(
        self, chat_id: int, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise NetworkError("connection cut by the test")
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await super().history(chat_id, limit=limit, before_id=before_id)


class Live:
    """ingest + the sessions supervisor + the session manager, as vibee/app.py composes
    them; the history-jobs children are started with :meth:`jobs`."""

    def __init__(self, pool: asyncpg.Pool, sim_url: str) -> None:
        self.pool = pool
        self.ingest = Ingest(pool, batch_size=50, queue_size=200)
        self.sessions = Supervisor("sessions", concurrent_stop=True)
        self.gateways: dict[int, GatedGateway] = {}
        self.children: list[HistoryJobs] = []

        def gateway(session_id: int, credential: bytes | None) -> Gateway:
            made = GatedGateway(sim_url, credential)
            self.gateways[session_id] = made
            return made

        self.manager = SessionManager(
            lambda: self.sessions, pool, KEYRING, gateway, self.ingest, retry_delay_s=0.05
        )

    async def __aenter__(self) -> Live:
        await self.ingest.start()
        await self.sessions.start()
        await self.manager.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in self.children:
            if child.running:
                await child.stop(5)
        await self.manager.stop(2)
        await self.sessions.stop(10)
        await self.ingest.stop(10)

    async def connected(self, session_id: int) -> SessionActor:
        """The session's actor, once connected."""
        self.manager.wake()

        async def probe() -> SessionActor | None:
            child = self.sessions.get(f"session:{session_id}")
            if isinstance(child, SessionActor) and child.connected.is_set():
                return child
            return None

        actor: SessionActor = await eventually(probe)
        return actor

    async def jobs(self, events: EventBus | None = None, **options: Any) -> HistoryJobs:
        """A started history-jobs child on this instance's sessions."""
        child = HistoryJobs(self.pool, lambda: self.sessions, events=events, **options)
        await child.start()
        self.children.append(child)
        return child


@dataclass(frozen=True, slots=True)
class Owner:
    """A VIBEE user with one authorized session over a sim account with history."""

    user_id: int
    session_id: int
    account: AccountRef
    private: ChatRef
    group: ChatRef


async def owner_with_history(
    pool: asyncpg.Pool, sim_world: SimWorld, user_id: int | None = None
) -> Owner:
    """:func:`world_chats`' account (10 messages to import, a channel post never imported)
    as a session whose update cursor is past them (so only the import stores them)."""
    account, private, group, _ = await world_chats(sim_world)
    user = user_id if user_id is not None else await vibee_user(pool)
    session_id = await authorized_session(pool, user, account)
    await sessions.save_last_seq(pool, session_id, (await sim_world.info(account))["seq"])
    return Owner(user, session_id, account, private, group)


async def imported(pool: asyncpg.Pool, session_id: int) -> list[tuple[int, int, str]]:
    """(chat, message id, text) of every stored message of the session, in order."""
    rows = await pool.fetch(
        "SELECT tg_chat_id, message_id, text FROM messages WHERE session_id = $1 "
        "ORDER BY tg_chat_id, message_id",
        session_id,
    )
    return [(r["tg_chat_id"], r["message_id"], r["text"]) for r in rows]


async def expected(sim_world: SimWorld, owner: Owner) -> list[tuple[int, int, str]]:
    """What a complete import stores: both chats' transcripts."""
    found = []
    for chat in (owner.private, owner.group):
        seen = chat.seen_by(owner.account.user_id)
        for m in await sim_world.transcript(chat):
            found.append((seen, m["message_id"], m["text"]))
    return sorted(found)


async def job_in(pool: asyncpg.Pool, owner: Owner, *states: str) -> HistoryJob:
    """The owner's newest job, once it is in one of ``states``."""

    async def probe() -> HistoryJob | None:
        job = await jobs.latest(pool, owner.user_id, owner.session_id)
        return job if job is not None and job.state in states else None

    job: HistoryJob = await eventually(probe)
    return job


async def events_until(subscription: Subscription, kind: str) -> list[dict[str, Any]]:
    """The subscription's events up to and including the first of type ``kind``."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not found or found[-1]["type"] != kind:
            item = await subscription.next()
            assert item is not None, "dropped as too slow"
            found.append(item)
    return found


async def test_a_dropped_connection_queues_the_job_again_and_it_resumes(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    owner = await owner_with_history(pool, sim_world)
    bus = EventBus()
    subscription = bus.subscribe(owner.user_id)
    async with Live(pool, sim_world.url) as live:
        await live.connected(owner.session_id)
        live.gateways[owner.session_id].fail_at = 2  # the second page asked for
        job, created = await jobs.request(pool, owner.user_id, owner.session_id, None)
        assert created and job.state == "queued"
        await live.jobs(bus, page_size=3, **FAST)

        seen = await events_until(subscription, "history.done")
        paused = [e for e in seen if e["type"] == "history.progress" and e["state"] == "queued"]
        assert len(paused) == 1 and 0 < paused[0]["messages"] < 10
        assert all(e["job_id"] == job.id and e["session_id"] == owner.session_id for e in seen)
        done = await job_in(pool, owner, "done")
        assert done.attempts == 2 and done.messages_stored == 10 and done.error is None
        assert seen[-1] == {**seen[-1], "chats": 2, "messages": 10, "indexed": 0}
    assert await imported(pool, owner.session_id) == await expected(sim_world, owner)


async def test_stopping_queues_the_running_job_and_another_instance_finishes_it(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    owner = await owner_with_history(pool, sim_world)
    async with Live(pool, sim_world.url) as live:
        await live.connected(owner.session_id)
        gateway = live.gateways[owner.session_id]
        gateway.gate.clear()
        job, _ = await jobs.request(pool, owner.user_id, owner.session_id, None)
        first = await live.jobs(instance="first", **FAST)
        await asyncio.wait_for(gateway.waiting.wait(), 20)
        running = await job_in(pool, owner, "running")
        assert running.claimed_by == "first" and first.running_jobs == [job.id]

        await first.stop(5)
        queued = await job_in(pool, owner, "queued")
        assert queued.claimed_by is None and queued.error == "interrupted: VIBEE stopped"
        assert queued.chats_total == 2  # progress is kept

        gateway.gate.set()
        second = await live.jobs(instance="second", **FAST)
        second.wake()
        done = await job_in(pool, owner, "done")
        assert done.attempts == 2 and done.claimed_by == "second"
        assert done.messages_stored == 10
    assert await imported(pool, owner.session_id) == await expected(sim_world, owner)


async def test_a_job_left_running_by_a_crashed_instance_is_resumed_without_duplicates(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    owner = await owner_with_history(pool, sim_world)
    private_id = owner.private.seen_by(owner.account.user_id)
    async with Live(pool, sim_world.url) as live:
        actor = await live.connected(owner.session_id)
        # the crashed instance claimed the job, stored 3 messages, then went silent
        job, _ = await jobs.request(pool, owner.user_id, owner.session_id, None)
        [claimed] = await jobs.claim(pool, [owner.session_id], "crashed", stale_after_s=60, limit=1)
        partial = HistoryImport(pool, live_gateway(actor), owner.user_id, owner.session_id)
        assert (await partial.run(chat_ids=[private_id], limit=3)).messages == 3
        assert await jobs.progress(pool, job.id, claimed.attempts, 0, 2, 3)

        gateway = live.gateways[owner.session_id]
        gateway.gate.clear()  # hold the taker-over inside its first history call
        child = await live.jobs(poll_s=0.1, stale_after_s=1.0, progress_interval_s=0.0)
        await asyncio.sleep(0.5)  # a fresh claim is respected
        still = await job_in(pool, owner, "running")
        assert still.claimed_by == "crashed" and still.attempts == 1

        await asyncio.wait_for(gateway.waiting.wait(), 20)  # once the claim is a second old
        taken = await job_in(pool, owner, "running")
        assert taken.claimed_by == child.instance and taken.attempts == 2
        # the crashed instance's late writes match nothing: its attempt is fenced off
        assert not await jobs.progress(pool, job.id, claimed.attempts, 1, 2, 99)
        assert not await jobs.release(pool, job.id, claimed.attempts, "late")
        assert await jobs.fail(pool, job.id, claimed.attempts, "late") is None
        assert await jobs.finish(pool, job.id, claimed.attempts, 2, 99, 0) is None
        gateway.gate.set()

        done = await job_in(pool, owner, "done")
        assert done.claimed_by == child.instance and done.attempts == 2
        assert done.messages_stored == 3 + 7 and done.chats_done == done.chats_total == 2
    assert await imported(pool, owner.session_id) == await expected(sim_world, owner)


async def test_two_instances_never_claim_one_job(pool: asyncpg.Pool) -> None:
    user = await vibee_user(pool)
    session_ids = []
    for i in range(30):
        row = await sessions.create(pool, user, f"+1555000{i:04d}")
        await sessions.save_authorized(pool, user, row.id, 1000 + i, b"sealed", "k1")
        session_ids.append(row.id)
        await jobs.request(pool, user, row.id, None)

    async def claim_all(instance: str) -> list[int]:
        got: list[int] = []
        while True:
            batch = await jobs.claim(pool, session_ids, instance, stale_after_s=60, limit=3)
            if not batch:
                return got
            got += [j.id for j in batch]

    a, b, c = await asyncio.gather(claim_all("a"), claim_all("b"), claim_all("c"))
    assert len(a) + len(b) + len(c) == 30 and len(set(a) | set(b) | set(c)) == 30
    rows = await pool.fetch("SELECT state, attempts FROM history_imports WHERE user_id = $1", user)
    assert {(r["state"], r["attempts"]) for r in rows} == {("running", 1)}
    # claimed again only once stale, and by one instance
    await pool.execute("UPDATE history_imports SET claimed_at = now() - interval '2 minutes'")
    again = await asyncio.gather(claim_all("d"), claim_all("e"))
    assert sum(len(x) for x in again) == 30


async def test_a_logged_out_session_fails_its_queued_job(pool: asyncpg.Pool) -> None:
    user = await vibee_user(pool)
    row = await sessions.create(pool, user, "+15550009999")
    await sessions.save_authorized(pool, user, row.id, 77, b"sealed", "k1")
    job, _ = await jobs.request(pool, user, row.id, 10)
    assert job.message_limit == 10
    await sessions.set_state(pool, row.id, "logged_out", "revoked by the test")
    bus = EventBus()
    subscription = bus.subscribe(user)
    child = HistoryJobs(pool, lambda: None, events=bus)
    assert await child.sweep() == 0
    failed = await jobs.latest(pool, user, row.id)
    assert failed is not None and failed.state == "failed"
    assert failed.error is not None and "logged out" in failed.error
    [sent] = await events_until(subscription, "history.failed")
    assert sent["job_id"] == job.id and sent["error"] == failed.error
    with pytest.raises(jobs.SessionNotRunnable):
        await jobs.request(pool, user, row.id, None)


async def test_a_job_claimed_too_often_fails(pool: asyncpg.Pool, sim_world: SimWorld) -> None:
    owner = await owner_with_history(pool, sim_world)
    bus = EventBus()
    subscription = bus.subscribe(owner.user_id)
    async with Live(pool, sim_world.url) as live:
        await live.connected(owner.session_id)
        job, _ = await jobs.request(pool, owner.user_id, owner.session_id, None)
        await jobs.claim(pool, [owner.session_id], "gone", stale_after_s=60, limit=1)
        await pool.execute("UPDATE history_imports SET claimed_at = now() - interval '2 minutes'")
        await live.jobs(bus, max_attempts=1, **FAST)
        [failed] = await events_until(subscription, "history.failed")
        assert failed["job_id"] == job.id and failed["error"] == "gave up after 1 attempts"
        assert (await job_in(pool, owner, "failed")).attempts == 2
    assert await imported(pool, owner.session_id) == []
