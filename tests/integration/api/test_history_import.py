"""History import over the API, against the real sim process and real Postgres: the call
queues a job (idempotently), the history-jobs child runs it through the connected session
actor's gateway (the sim sees one connection per account), progress arrives on the event
bus; ownership, bad bodies and sessions that are not logged in are 4xx problems."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.api.conftest import Client, bearer, problem, register
from tests.integration.automation.test_history_jobs import (
    FAST,
    Live,
    events_until,
    expected,
    imported,
    owner_with_history,
)
from tests.integration.telegram.world import SimWorld, eventually
from vibee.api.app import build_api_app
from vibee.api.context import ApiSettings
from vibee.automation.events import EventBus
from vibee.automation.history_jobs import HistoryJobs
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring
from vibee.store import history_jobs as jobs
from vibee.store import sessions

PATH = "/api/v1/sessions/{}/history/import"


class Harness:
    """The API wired as vibee/app.py wires it: the event bus, and a wake that reaches the
    current history-jobs child (counted, to see it called only for new jobs)."""

    def __init__(self) -> None:
        self.bus = EventBus()
        self.child: HistoryJobs | None = None
        self.wakes = 0

    async def wake(self) -> None:
        self.wakes += 1
        if self.child is not None:
            self.child.wake()


@pytest.fixture
async def harness() -> Harness:
    return Harness()


@pytest.fixture
async def api(pool: asyncpg.Pool, keyring: Keyring, harness: Harness) -> AsyncIterator[Client]:
    settings = ApiSettings(
        user_cache_ttl_s=0.0, auth_per_minute_per_ip=10_000, token_per_minute_per_ip=10_000
    )
    app = build_api_app(
        settings,
        lambda: pool,
        keyring,
        LocalRateLimiter(),
        events=harness.bus,
        history=harness.wake,
    )
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def account_holder(api: Client, name: str) -> tuple[dict[str, str], int]:
    """Register ``name``: (its Authorization header, its user id)."""
    body = await register(api, name)
    return bearer(body["tokens"]["access_token"]), int(body["user"]["id"])


async def ok(response: Any, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return body


async def test_an_import_runs_through_the_live_session_with_progress_events(
    api: Client, harness: Harness, pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    alice, alice_id = await account_holder(api, "alice")
    owner = await owner_with_history(pool, sim_world, alice_id)
    subscription = harness.bus.subscribe(alice_id)
    path = PATH.format(owner.session_id)
    async with Live(pool, sim_world.url) as live:
        await live.connected(owner.session_id)

        # no body at all: every chat, every message
        first = await ok(await api.post(path, headers=alice), 202)
        assert first["state"] == "queued" and first["limit"] is None
        assert first["session_id"] == owner.session_id and first["messages_stored"] == 0
        assert harness.wakes == 1
        # again (with another limit, and five at once): the same queued job, unchanged
        again = await ok(await api.post(path, json={"limit": 5}, headers=alice), 202)
        assert again == first
        many = await asyncio.gather(*(api.post(path, json={}, headers=alice) for _ in range(5)))
        assert {(await ok(r, 202))["id"] for r in many} == {first["id"]}
        # while running (claimed by another instance here): that job, running
        [claimed] = await jobs.claim(
            pool, [owner.session_id], "elsewhere", stale_after_s=60, limit=1
        )
        running = await ok(await api.post(path, json={"limit": None}, headers=alice), 202)
        assert running["id"] == first["id"] and running["state"] == "running"
        assert harness.wakes == 1  # only a new job wakes the children
        assert await jobs.release(pool, claimed.id, claimed.attempts, "handed over")

        harness.child = await live.jobs(harness.bus, **FAST)
        seen = await events_until(subscription, "history.done")

        async def finished() -> dict[str, Any] | None:
            body = await ok(await api.get(path, headers=alice), 200)
            return body if body["state"] == "done" else None

        done = await eventually(finished)
    assert done["id"] == first["id"] and done["attempts"] == 2 and done["error"] is None
    assert done["chats_done"] == done["chats_total"] == 2 and done["messages_stored"] == 10
    assert done["finished_at"] and done["started_at"]
    progress = [e for e in seen if e["type"] == "history.progress"]
    assert progress[0] | {"ts": 0} == {
        "type": "history.progress",
        "ts": 0,
        "job_id": first["id"],
        "session_id": owner.session_id,
        "state": "running",
        "chats_done": 0,
        "chats_total": 2,
        "messages": 0,
    }
    assert (progress[-1]["chats_done"], progress[-1]["messages"]) == (2, 10)
    assert [p["messages"] for p in progress] == sorted(p["messages"] for p in progress)
    assert seen[-1] | {"ts": 0} == {
        "type": "history.done",
        "ts": 0,
        "job_id": first["id"],
        "session_id": owner.session_id,
        "chats": 2,
        "messages": 10,
        "indexed": 0,
    }
    assert await imported(pool, owner.session_id) == await expected(sim_world, owner)
    # the sim_world fixture checks the account never had two connections at once


async def test_a_finished_import_asked_again_stores_nothing_twice(
    api: Client, harness: Harness, pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    alice, alice_id = await account_holder(api, "alice")
    owner = await owner_with_history(pool, sim_world, alice_id)
    path = PATH.format(owner.session_id)
    async with Live(pool, sim_world.url) as live:
        await live.connected(owner.session_id)
        harness.child = await live.jobs(harness.bus, **FAST)
        ids = []
        for limit, stored in ((3, 5), (3, 0), (None, 5)):  # 3 of 8 + 2 of 2; nothing; the rest
            start = await ok(await api.post(path, json={"limit": limit}, headers=alice), 202)
            assert start["limit"] == limit
            ids.append(start["id"])

            async def finished(job_id: int = start["id"]) -> dict[str, Any] | None:
                body = await ok(await api.get(path, headers=alice), 200)
                return body if body["id"] == job_id and body["state"] == "done" else None

            done = await eventually(finished)
            assert done["messages_stored"] == stored, (limit, done)
    assert len(set(ids)) == 3
    assert await imported(pool, owner.session_id) == await expected(sim_world, owner)


async def test_another_users_session_is_a_404(
    api: Client, pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    _, alice_id = await account_holder(api, "alice")
    bob, _ = await account_holder(api, "bob")
    owner = await owner_with_history(pool, sim_world, alice_id)
    path = PATH.format(owner.session_id)
    assert (await jobs.request(pool, alice_id, owner.session_id, None))[1]
    for response in (
        await api.post(path, headers=bob),
        await api.post(path, json={"limit": 3}, headers=bob),
        await api.get(path, headers=bob),
    ):
        body = await problem(response, 404)
        assert body["type"] == "urn:vibee:problem:not-found"
    assert len(await pool.fetch("SELECT id FROM history_imports")) == 1  # bob queued none
    for bad in ("0", "abc", "99999999999999999999", str(owner.session_id + 1000)):
        await problem(await api.post(PATH.format(bad), headers=bob), 404)


async def test_bad_bodies_are_4xx_problems(
    api: Client, pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    alice, alice_id = await account_holder(api, "alice")
    owner = await owner_with_history(pool, sim_world, alice_id)
    path = PATH.format(owner.session_id)
    json_type = {"Content-Type": "application/json"}
    for payload, field in (
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": 1_000_001}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"chats": [1]}, "chats"),
    ):
        body = await problem(await api.post(path, json=payload, headers=alice), 422)
        assert [e["loc"] for e in body["errors"]] == [field], body
    for data, headers, status in (
        (b'{"limit": ', json_type, 400),
        (b"[]", json_type, 422),
        (b"null", json_type, 422),
        (b'{"limit": 3}', {"Content-Type": "text/plain"}, 415),
        (b'{"limit": ' + b"1" * 70_000 + b"}", json_type, 413),
    ):
        await problem(await api.post(path, data=data, headers={**alice, **headers}), status)
    assert await pool.fetchval("SELECT count(*) FROM history_imports") == 0
    # nothing asked yet: no import to show
    body = await problem(await api.get(path, headers=alice), 404)
    assert body["detail"] == f"no history import for session {owner.session_id}"


async def test_a_session_that_is_not_logged_in_is_a_409(
    api: Client, pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    alice, alice_id = await account_holder(api, "alice")
    pending = await sessions.create(pool, alice_id, "+15550101010")  # code never entered
    body = await problem(await api.post(PATH.format(pending.id), headers=alice), 409)
    assert body["type"] == "urn:vibee:problem:session-not-logged-in"
    owner = await owner_with_history(pool, sim_world, alice_id)
    await sessions.set_state(pool, owner.session_id, "logged_out", "revoked")
    await problem(await api.post(PATH.format(owner.session_id), headers=alice), 409)
    assert await pool.fetchval("SELECT count(*) FROM history_imports") == 0
