"""``GET /api/v1/events``: the WebSocket of real-time events, over real HTTP on loopback
against this test's Postgres — auth by query parameter and subprotocol, 401s before the
upgrade, only the user's own events, slow clients dropped, and the daemon publishing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from tests.integration.api.conftest import Client, problem, register
from tests.integration.telegram.test_daemon_sessions import KEYRING, authorized_session
from tests.integration.telegram.world import SimWorld
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Router
from vibee.api.app import build_api_app
from vibee.api.context import ApiSettings
from vibee.automation.events import EventBus, event
from vibee.automation.ingest import Ingest
from vibee.automation.pipeline import Pipeline
from vibee.coord.local import LocalRateLimiter
from vibee.runtime import CircuitBreaker, Supervisor
from vibee.secrets import Keyring
from vibee.store import automation, sessions
from vibee.store.db import init_connection
from vibee.telegram.gateway import ChatType, Gateway, NewMessage
from vibee.telegram.manager import SessionManager
from vibee.telegram.session_actor import Inbound
from vibee.telegram.sim_gateway import SimGateway

EVENTS = "/api/v1/events"
WAIT_S = 10.0  # a generous bound on waits that should finish at once, never asserted on
Served = tuple[Client, EventBus]


@pytest.fixture
async def served(pool: asyncpg.Pool, keyring: Keyring) -> AsyncIterator[Served]:
    """An API on loopback whose events come from a bus the test holds (small queues)."""
    bus = EventBus(queue_size=8)
    settings = ApiSettings(
        user_cache_ttl_s=0.0, auth_per_minute_per_ip=10_000, token_per_minute_per_ip=10_000
    )
    app = build_api_app(settings, lambda: pool, keyring, LocalRateLimiter(), events=bus)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client, bus
    await client.close()


async def user(client: Client, name: str) -> tuple[int, str]:
    """Register ``name``: its user id and access token."""
    body = await register(client, name)
    return int(body["user"]["id"]), str(body["tokens"]["access_token"])


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next frame, which must be a JSON text frame."""
    message = await asyncio.wait_for(ws.receive(), WAIT_S)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    found: dict[str, Any] = message.json()
    return found


async def until(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (polling; fails after a generous bound)."""
    async with asyncio.timeout(WAIT_S):
        while not check():
            await asyncio.sleep(0.01)


def dropped_total() -> float:
    return REGISTRY.get_sample_value("vibee_events_dropped_total") or 0.0


async def test_token_in_the_query_parameter(served: Served) -> None:
    client, bus = served
    uid, token = await user(client, "query")
    async with client.ws_connect(f"{EVENTS}?access_token={token}") as ws:
        assert bus.subscribers(uid) == 1
        bus.publish(uid, event("session.state", session_id=5, state="connected"))
        got = await next_json(ws)
        assert got["type"] == "session.state" and got["state"] == "connected"
        assert got["session_id"] == 5 and isinstance(got["ts"], float)
    await until(lambda: bus.subscribers(uid) == 0)


async def test_token_in_the_subprotocol_is_echoed(served: Served) -> None:
    client, bus = served
    uid, token = await user(client, "proto")
    async with client.ws_connect(EVENTS, protocols=(f"bearer.{token}",)) as ws:
        assert ws.protocol == f"bearer.{token}"
        bus.publish(uid, event("quota.exhausted", session_id=1, chat=2))
        assert (await next_json(ws))["type"] == "quota.exhausted"


async def test_401_before_the_upgrade(served: Served) -> None:
    client, _ = served
    _, token = await user(client, "refused")
    await problem(await client.get(EVENTS), 401)
    await problem(await client.get(f"{EVENTS}?access_token=not-a-jwt"), 401)
    await problem(await client.get(f"{EVENTS}?access_token={token[:-3]}abc"), 401)
    for bad in ({"protocols": ("bearer.nope",)}, {"params": {"access_token": token + "x"}}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(EVENTS, **bad)
        assert refused.value.status == 401
    # a valid token without the upgrade: 426, not a hanging socket
    await problem(await client.get(f"{EVENTS}?access_token={token}"), 426)


async def test_only_the_users_own_events(served: Served) -> None:
    client, bus = served
    a, token_a = await user(client, "alice")
    b, token_b = await user(client, "bob")
    async with (
        client.ws_connect(f"{EVENTS}?access_token={token_a}") as ws_a,
        client.ws_connect(f"{EVENTS}?access_token={token_b}") as ws_b,
    ):
        bus.publish(b, event("lead", lead_id=1, session_id=1, chat=9, trigger="price"))
        bus.publish(a, event("reply.sent", outbox_id=7, session_id=1, chat=9, message_id=3))
        bus.publish(b, event("lead", lead_id=2, session_id=1, chat=9, trigger="buy"))
        got_a = await next_json(ws_a)
        assert got_a["type"] == "reply.sent" and got_a["outbox_id"] == 7
        assert [(await next_json(ws_b))["lead_id"] for _ in range(2)] == [1, 2]
        # A got nothing of B's: the next thing on A's socket is A's next event
        bus.publish(a, event("session.state", session_id=1, state="connected"))
        assert (await next_json(ws_a))["type"] == "session.state"


async def test_a_slow_client_is_dropped_and_counted(served: Served) -> None:
    client, bus = served
    slow_id, slow_token = await user(client, "slow")
    other_id, other_token = await user(client, "other")
    before = dropped_total()
    async with (
        client.ws_connect(f"{EVENTS}?access_token={slow_token}") as slow,
        client.ws_connect(f"{EVENTS}?access_token={other_token}") as other,
    ):
        for n in range(bus.queue_size + 5):  # in one go: nothing drains the queue meanwhile
            bus.publish(slow_id, event("message.received", session_id=1, chat=2, message_id=n))
        assert bus.subscribers(slow_id) == 0
        closing = await asyncio.wait_for(slow.receive(), WAIT_S)
        assert closing.type == aiohttp.WSMsgType.CLOSE, closing
        assert closing.data == 4008 and closing.extra == "too slow"
        assert dropped_total() == before + 1
        bus.publish(other_id, event("session.state", session_id=3, state="connected"))
        assert (await next_json(other))["session_id"] == 3
    # the dropped user may connect again
    async with client.ws_connect(f"{EVENTS}?access_token={slow_token}") as again:
        bus.publish(slow_id, event("quota.exhausted", session_id=1, chat=2))
        assert (await next_json(again))["type"] == "quota.exhausted"


def test_only_the_slow_subscriber_of_a_user_is_dropped() -> None:
    bus = EventBus(queue_size=4)
    fast, slow = bus.subscribe(1), bus.subscribe(1)
    received = []
    for n in range(10):
        bus.publish(1, {"type": "x", "n": n})
        received.append(fast.queue.get_nowait())
    assert [e["n"] for e in received if e is not None] == list(range(10))
    assert slow.dropped and not fast.dropped
    assert slow.queue.qsize() == 1 and slow.queue.get_nowait() is None  # only the end marker
    assert bus.subscribers(1) == 1


async def test_ingest_publishes_message_received(served: Served, pool: asyncpg.Pool) -> None:
    client, bus = served
    uid, token = await user(client, "ingested")
    session = await sessions.create(pool, uid, "+15550001111")
    ingest = Ingest(pool, batch_size=10, queue_size=10, events=bus)
    await ingest.start()
    try:
        async with client.ws_connect(f"{EVENTS}?access_token={token}") as ws:
            message = NewMessage(
                seq=1,
                chat_id=4242,
                message_id=77,
                sender_id=99,
                sender_username=None,
                text="hello",
                date=datetime.now(UTC),
                chat_type=ChatType.PRIVATE,
            )
            await ingest.deliver(Inbound(session.id, uid, message))
            got = await next_json(ws)
            assert got["type"] == "message.received"
            assert (got["session_id"], got["chat"], got["message_id"]) == (session.id, 4242, 77)
            assert "text" not in got
    finally:
        await ingest.stop(10)


async def test_the_daemon_publishes_state_message_and_reply(
    served: Served, db_url: str, sim_world: SimWorld, sim_llm: str
) -> None:
    """Sessions, ingest and the pipeline composed as vibee/app.py does, on the sim and the
    fake LLM: the owner's socket sees the session connect, the message and the reply."""
    client, bus = served
    uid, token = await user(client, "daemon")
    account = await sim_world.account()
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=8, init=init_connection)
    assert pool is not None
    session_id = await authorized_session(pool, uid, account)
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    await automation.set_chat_config(
        pool,
        uid,
        session_id,
        chat.seen_by(account.user_id),
        mode="digital_twin",
        reply_delay_min_s=0.0,
        reply_delay_max_s=0.0,
    )
    provider = OpenAICompatProvider("openai", f"{sim_llm}/openai/v1", "gpt", "k", 10)
    router = Router([ProviderSlot(provider, CircuitBreaker("events-test"))], base_delay_s=0.01)
    tree = Supervisor("sessions", concurrent_stop=True)
    pipeline = Pipeline(
        pool, lambda: router, lambda: tree, worker_count=2, sweep_s=0.5, seed=7, events=bus
    )
    ingest = Ingest(pool, 50, 500, pipeline.notify, events=bus)

    def gateway(_id: int, credential: bytes | None) -> Gateway:
        return SimGateway(sim_world.url, credential)

    manager = SessionManager(lambda: tree, pool, KEYRING, gateway, ingest, sweep_s=0.5, events=bus)
    try:
        async with client.ws_connect(f"{EVENTS}?access_token={token}") as ws:
            for child in (ingest, pipeline, tree, manager):
                await child.start()
            seen: list[dict[str, Any]] = []
            while not any(e["type"] == "session.state" and e["state"] == "connected" for e in seen):
                seen.append(await next_json(ws))
            await sim_world.inject(chat, friend, "Hi, are you free tomorrow?")
            while not any(e["type"] == "reply.sent" for e in seen):
                seen.append(await next_json(ws))
        received = [e for e in seen if e["type"] == "message.received"]
        sent = [e for e in seen if e["type"] == "reply.sent"]
        assert [(e["session_id"], e["message_id"] > 0) for e in received] == [(session_id, True)]
        assert sent[0]["session_id"] == session_id and sent[0]["chat"] == received[0]["chat"]
        assert {e["session_id"] for e in seen} == {session_id}
    finally:
        for child in (manager, tree, pipeline, ingest):
            await child.stop(10)
        await router.close()
        await pool.close()
