"""Connecting Telegram over HTTP against the real sim process, and the session routes:
login errors as 4xx with Telegram's message, 2FA, ownership (404), no credential shown."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.api.conftest import Client, bearer, problem, register
from tests.integration.telegram.world import SimWorld
from vibee.api.app import build_api_app
from vibee.api.context import ApiSettings
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import Executor, sessions
from vibee.telegram.login import LoginFlow
from vibee.telegram.sim_gateway import SimGateway

SESSION_KEYS = Keyring.parse("session_keys", new_keyring_text())
_phones = itertools.count(1)


@pytest.fixture
async def tg_api(
    pool: asyncpg.Pool, keyring: Keyring, sim_world: SimWorld
) -> AsyncIterator[Client]:
    """The API with a login flow on the sim."""

    def login(db: Executor) -> LoginFlow:
        return LoginFlow(db, SESSION_KEYS, lambda _id, cred: SimGateway(sim_world.url, cred))

    settings = ApiSettings(
        user_cache_ttl_s=0.0, auth_per_minute_per_ip=10_000, token_per_minute_per_ip=10_000
    )
    app = build_api_app(settings, lambda: pool, keyring, LocalRateLimiter(), login=login)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def new_phone(sim_world: SimWorld, password: str | None = None) -> str:
    """A sim account that is not logged in yet."""
    phone = f"+1557{os.getpid() % 100000:05d}{next(_phones):04d}"
    await sim_world.request("POST", "/accounts", {"phone": phone, "password": password})
    return phone


async def token(api: Client, name: str) -> dict[str, str]:
    """Register ``name``; its Authorization header."""
    return bearer((await register(api, name))["tokens"]["access_token"])


async def ok(response: Any, status: int = 200) -> Any:
    """Assert ``status``; the JSON body."""
    assert response.status == status, await response.text()
    return await response.json()


async def test_code_login_with_a_wrong_code_then_the_right_one(
    tg_api: Client, sim_world: SimWorld, pool: asyncpg.Pool
) -> None:
    alice = await token(tg_api, "alice")
    phone = await new_phone(sim_world)
    started = await ok(
        await tg_api.post("/api/v1/sessions/connect", json={"phone": phone}, headers=alice), 201
    )
    assert started["state"] == "code_sent"
    sid = started["session_id"]
    code = await sim_world.login_code(phone)
    wrong = "1" + code if code != "1" * len(code) else "2" + code
    bad = await problem(
        await tg_api.post(f"/api/v1/sessions/{sid}/code", json={"code": wrong}, headers=alice),
        422,
    )
    assert bad["title"] == "Wrong login code"
    assert bad["detail"] == "The code is wrong: check it and try again."
    done = await ok(
        await tg_api.post(f"/api/v1/sessions/{sid}/code", json={"code": code}, headers=alice)
    )
    assert done["state"] == "authorized" and done["telegram_user_id"]

    listed = await ok(await tg_api.get("/api/v1/sessions", headers=alice))
    assert [s["id"] for s in listed["sessions"]] == [sid]
    one = await ok(await tg_api.get(f"/api/v1/sessions/{sid}", headers=alice))
    assert one["state"] == "authorized" and one["phone"] == phone
    assert set(one) == {"id", "phone", "state", "state_reason", "telegram_user_id", "created_at"}
    # a step out of order is a 409 with its message
    late = await problem(
        await tg_api.post(f"/api/v1/sessions/{sid}/code", json={"code": code}, headers=alice),
        409,
    )
    assert late["title"] == "Login step out of order" and "phone number" in late["detail"]


async def test_two_step_login_over_http(tg_api: Client, sim_world: SimWorld) -> None:
    alice = await token(tg_api, "alice")
    phone = await new_phone(sim_world, password="hunter22")
    sid = (
        await ok(
            await tg_api.post("/api/v1/sessions/connect", json={"phone": phone}, headers=alice),
            201,
        )
    )["session_id"]
    code = await sim_world.login_code(phone)
    step = await ok(
        await tg_api.post(f"/api/v1/sessions/{sid}/code", json={"code": code}, headers=alice)
    )
    assert step["state"] == "password_needed"
    wrong = await problem(
        await tg_api.post(
            f"/api/v1/sessions/{sid}/password", json={"password": "nope"}, headers=alice
        ),
        422,
    )
    assert wrong["title"] == "Wrong two-step password"
    assert wrong["detail"] == "The password is wrong: try again."
    done = await ok(
        await tg_api.post(
            f"/api/v1/sessions/{sid}/password", json={"password": "hunter22"}, headers=alice
        )
    )
    assert done["state"] == "authorized"


async def test_an_unknown_phone_is_a_4xx_with_the_message(
    tg_api: Client, sim_world: SimWorld
) -> None:
    alice = await token(tg_api, "alice")
    response = await tg_api.post(
        "/api/v1/sessions/connect", json={"phone": "+10000000001"}, headers=alice
    )
    body = await problem(response, response.status)
    assert 400 <= response.status < 500
    assert body["detail"]
    invalid = await problem(
        await tg_api.post("/api/v1/sessions/connect", json={"phone": "call me"}, headers=alice),
        422,
    )
    assert invalid["errors"][0]["loc"] == "phone"


async def test_another_users_session_is_404(
    tg_api: Client, sim_world: SimWorld, pool: asyncpg.Pool
) -> None:
    alice = await token(tg_api, "alice")
    bob = await token(tg_api, "bob")
    phone = await new_phone(sim_world)
    sid = (
        await ok(
            await tg_api.post("/api/v1/sessions/connect", json={"phone": phone}, headers=alice),
            201,
        )
    )["session_id"]
    code = await sim_world.login_code(phone)
    for method, path, body in [
        ("GET", f"/api/v1/sessions/{sid}", None),
        ("DELETE", f"/api/v1/sessions/{sid}", None),
        ("POST", f"/api/v1/sessions/{sid}/code", {"code": code}),
        ("POST", f"/api/v1/sessions/{sid}/password", {"password": "x"}),
        ("GET", "/api/v1/sessions/99999999999", None),
        ("GET", "/api/v1/sessions/not-a-number", None),
    ]:
        await problem(await tg_api.request(method, path, json=body, headers=bob), 404)
    assert (await ok(await tg_api.get("/api/v1/sessions", headers=bob)))["sessions"] == []
    # Bob's attempt did not spend Alice's code; she finishes, then deletes the session
    await ok(await tg_api.post(f"/api/v1/sessions/{sid}/code", json={"code": code}, headers=alice))
    deleted = await tg_api.delete(f"/api/v1/sessions/{sid}", headers=alice)
    assert deleted.status == 204
    with pytest.raises(sessions.SessionNotFound):
        await sessions.get(pool, (await register_id(pool, "alice")), sid)
    await problem(await tg_api.get(f"/api/v1/sessions/{sid}", headers=alice), 404)


async def register_id(pool: asyncpg.Pool, username: str) -> int:
    """The id of user ``username``."""
    value = await pool.fetchval("SELECT id FROM users WHERE username = $1", username)
    assert isinstance(value, int)
    return value


async def test_without_a_login_factory_the_login_routes_answer_503(
    make_api: Any,
) -> None:
    api: Client = await make_api()
    alice = await token(api, "alice")
    body = await problem(
        await api.post("/api/v1/sessions/connect", json={"phone": "+15550100"}, headers=alice),
        503,
    )
    assert body["title"] == "Telegram is not configured"
    assert (await ok(await api.get("/api/v1/sessions", headers=alice)))["sessions"] == []


@pytest.fixture
async def qr_api(
    pool: asyncpg.Pool, keyring: Keyring, sim_world: SimWorld
) -> AsyncIterator[Client]:
    """The API with QR logins on the sim (the qr-logins child started as vibee run does)."""
    from vibee.telegram.qr import QrLogins

    def gateway(_id: int, cred: bytes | None) -> SimGateway:
        return SimGateway(sim_world.url, cred)

    def login(db: Executor) -> LoginFlow:
        return LoginFlow(db, SESSION_KEYS, gateway)

    qr = QrLogins(login, lambda: pool, gateway)
    await qr.start()
    settings = ApiSettings(
        user_cache_ttl_s=0.0, auth_per_minute_per_ip=10_000, token_per_minute_per_ip=10_000
    )
    app = build_api_app(
        settings, lambda: pool, keyring, LocalRateLimiter(), login=login, qr=lambda: qr
    )
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()
    await qr.stop(5)


async def test_qr_login_over_http_then_the_password(
    qr_api: Client, sim_world: SimWorld, pool: asyncpg.Pool
) -> None:
    from tests.integration.telegram.world import eventually

    alice = await token(qr_api, "alice")
    bob = await token(qr_api, "bob")
    account = await sim_world.account(password="qr-http-pw")
    started = await ok(await qr_api.post("/api/v1/sessions/connect/qr", headers=alice), 201)
    sid = started["session_id"]
    assert started["qr_url"].startswith("tg://login?token=")
    assert started["svg"].lstrip().startswith(("<?xml", "<svg"))
    shown = await ok(await qr_api.get(f"/api/v1/sessions/{sid}/qr", headers=alice))
    assert shown["qr_url"] == started["qr_url"]
    assert (await qr_api.get(f"/api/v1/sessions/{sid}/qr", headers=bob)).status == 404

    await sim_world.qr_accept(started["qr_url"], account)

    async def needs_password() -> bool:
        row = await sessions.get(pool, (await _user_id(pool, "alice")), sid)
        return row.state == "password_needed"

    await eventually(needs_password)
    done = await ok(
        await qr_api.post(
            f"/api/v1/sessions/{sid}/password", json={"password": "qr-http-pw"}, headers=alice
        )
    )
    assert done["state"] == "authorized"
    assert (await qr_api.get(f"/api/v1/sessions/{sid}/qr", headers=alice)).status == 404


async def _user_id(pool: asyncpg.Pool, name: str) -> int:
    value = await pool.fetchval("SELECT id FROM users WHERE username = $1", name)
    assert isinstance(value, int)
    return value


async def test_qr_routes_without_telegram_are_503(tg_api: Client) -> None:
    alice = await token(tg_api, "alice")
    answer = await problem(await tg_api.post("/api/v1/sessions/connect/qr", headers=alice), 503)
    assert answer["title"] == "Telegram is not configured"
