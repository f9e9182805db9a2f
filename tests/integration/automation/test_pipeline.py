"""The pipeline end to end in one process: the sim, real Postgres, the fake LLM over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.integration.telegram.test_daemon_sessions import KEYRING, authorized_session, vibee_user
from tests.integration.telegram.world import AccountRef, ChatRef, SimWorld, eventually
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Router
from vibee.automation.ingest import Ingest
from vibee.automation.pipeline import Pipeline
from vibee.runtime import CircuitBreaker, Supervisor
from vibee.store import automation, sessions
from vibee.store.db import _init_connection
from vibee.telegram.gateway import Gateway
from vibee.telegram.manager import SessionManager
from vibee.telegram.sim_gateway import SimGateway


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(db_url, min_size=2, max_size=10, init=_init_connection)
    assert created is not None
    yield created
    await created.close()


class Vibee:
    """ai + ingest + pipeline + sessions + manager, as vibee/app.py composes them."""

    def __init__(self, pool: asyncpg.Pool, world: SimWorld, llm_url: str, model: str = "gpt"):
        provider = OpenAICompatProvider("openai", f"{llm_url}/openai/v1", model, "k", 10)
        self.router = Router(
            [ProviderSlot(provider, CircuitBreaker(f"pipeline-test:{id(self)}"))],
            base_delay_s=0.01,
        )
        self.sessions = Supervisor("sessions", concurrent_stop=True)
        self.pipeline = Pipeline(
            pool, lambda: self.router, lambda: self.sessions, worker_count=4, sweep_s=0.5, seed=7
        )
        self.ingest = Ingest(pool, 50, 500, self.pipeline.notify)

        def gateway(_id: int, credential: bytes | None) -> Gateway:
            return SimGateway(world.url, credential)

        self.manager = SessionManager(
            lambda: self.sessions, pool, KEYRING, gateway, self.ingest, sweep_s=0.5
        )

    async def __aenter__(self) -> Vibee:
        for child in (self.ingest, self.pipeline, self.sessions, self.manager):
            await child.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in (self.manager, self.sessions, self.pipeline, self.ingest):
            await child.stop(10)
        await self.router.close()


async def setup_account(
    pool: asyncpg.Pool, world: SimWorld, name: str = "owner"
) -> tuple[int, int, AccountRef]:
    user = await vibee_user(pool, name)
    account = await world.account()
    return user, await authorized_session(pool, user, account), account


async def replies(world: SimWorld, chat: ChatRef, account: AccountRef) -> list[dict[str, Any]]:
    return [m for m in await world.transcript(chat) if m["from"] == account.user_id]


async def test_twin_replies_once_observe_and_guards_do_not(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world)
    friend, _ = await sim_world.user()
    bot, _ = await sim_world.user(bot=True)
    twin = await sim_world.chat("private", [account.user_id, friend])
    quiet = await sim_world.chat("private", [account.user_id, bot])
    watched = await sim_world.chat("group", [account.user_id, friend])
    fast = {"reply_delay_min_s": 0.0, "reply_delay_max_s": 0.0}
    await automation.set_chat_config(
        pool, user, session_id, twin.seen_by(account.user_id), mode="digital_twin", **fast
    )
    await automation.set_chat_config(
        pool, user, session_id, quiet.seen_by(account.user_id), mode="digital_twin", **fast
    )
    async with Vibee(pool, sim_world, sim_llm):
        await eventually(lambda: _connected(pool, user, session_id))
        await sim_world.inject(twin, friend, "Hi, are you free tomorrow?")
        await sim_world.inject(quiet, bot, "I am a bot, answer me")
        await sim_world.inject(watched, friend, "observed only")

        async def replied() -> list[dict[str, Any]]:
            return await replies(sim_world, twin, account)

        first = await eventually(replied)
        await asyncio.sleep(1.5)  # a few sweeps: nothing more may arrive
        assert len(await replies(sim_world, twin, account)) == 1
        assert "are you free tomorrow" in first[0]["text"]
        assert await replies(sim_world, quiet, account) == []
        assert await replies(sim_world, watched, account) == []
    reasons = await pool.fetch("SELECT reason FROM analytics_events ORDER BY id")
    assert {r["reason"] for r in reasons} >= {"replied", "bot", "observe"}
    states = await pool.fetch(
        "SELECT direction, state, count(*) AS n FROM messages WHERE session_id = $1 GROUP BY 1, 2",
        session_id,
    )
    counts = {(r["direction"], r["state"]): r["n"] for r in states}
    assert counts[("out", "sent")] == 1 and counts[("in", "done")] == 1
    assert counts[("in", "skipped")] == 2


async def _connected(pool: asyncpg.Pool, user: int, session_id: int) -> bool:
    return (await sessions.get(pool, user, session_id)).state == "connected"
