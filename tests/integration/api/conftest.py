"""The public API over real HTTP on loopback, on this test's fresh embedded-Postgres
database: fixtures to build it with chosen settings, and small client helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from vibee.api.app import CONTEXT, build_api_app
from vibee.api.context import ApiContext, ApiSettings
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring, new_keyring_text

Client = TestClient[web.Request, web.Application]
MakeApi = Callable[..., Awaitable[Client]]
PASSWORD = "correct horse battery"


@pytest.fixture
def keyring() -> Keyring:
    """A fresh jwt keyring with one key."""
    return Keyring.parse("jwt_keys", new_keyring_text())


@pytest.fixture
async def make_api(pool: asyncpg.Pool, keyring: Keyring) -> AsyncIterator[MakeApi]:
    """Start an API on loopback: ``await make_api(**settings)``; ``keyring=`` and
    ``clock=`` may be given too. Defaults: the user cache off (rows read every request) and
    per-address limits out of the way (the rate-limit tests set their own)."""
    clients: list[Client] = []

    async def make(
        keyring_: Keyring | None = None, clock: Callable[[], float] | None = None, **changes: Any
    ) -> Client:
        base = ApiSettings(
            user_cache_ttl_s=0.0, auth_per_minute_per_ip=10_000, token_per_minute_per_ip=10_000
        )
        settings = dataclasses.replace(base, **changes)
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        app = build_api_app(
            settings, lambda: pool, keyring_ or keyring, LocalRateLimiter(), **extra
        )
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Client:
    """An API with the default settings."""
    return await make_api()


def app_of(client: Client) -> web.Application:
    """The application ``client`` talks to."""
    assert isinstance(client.server, TestServer)
    return client.server.app


def context(client: Client) -> ApiContext:
    """The API's shared parts (to reach its token issuer and caches)."""
    return app_of(client)[CONTEXT]


async def register(client: Client, username: str, password: str = PASSWORD) -> dict[str, Any]:
    """Register ``username``; the response body ({user, tokens})."""
    response = await client.post(
        "/api/v1/auth/register", json={"username": username, "password": password}
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def problem(response: Any, status: int) -> dict[str, Any]:
    """Assert ``response`` is a problem+json with ``status``; its body."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/problem+json", text
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["status"] == status and body["title"] and body["type"], body
    assert "Traceback" not in text
    return body
