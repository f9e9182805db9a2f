"""The admin endpoint over real HTTP on loopback: liveness, readiness, metrics, token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from vibee.admin.health import Readiness
from vibee.admin.server import build_admin_app, json_response


@pytest.fixture
async def setup() -> AsyncIterator[
    tuple[TestClient[web.Request, web.Application], dict[str, bool]]
]:
    state = {"db": True}
    readiness = Readiness(timeout_s=0.2)

    async def database() -> None:
        if not state["db"]:
            raise ConnectionError("database does not answer")

    async def slow() -> None:
        if state.get("slow"):
            await asyncio.sleep(5)

    readiness.add("database", database)
    readiness.add("slow", slow)
    registry = CollectorRegistry()
    Counter("vibee_things", "Things.", registry=registry).inc(3)

    async def sessions(_: web.Request) -> web.Response:
        return json_response({"sessions": []})

    app = build_admin_app(readiness, "tok-123456", registry, [web.get("/admin/sessions", sessions)])
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, state
    await client.close()


async def test_live_and_ready(
    setup: tuple[TestClient[web.Request, web.Application], dict[str, bool]],
) -> None:
    client, state = setup
    assert (await client.get("/health/live")).status == 200
    response = await client.get("/health/ready")
    assert response.status == 200
    assert (await response.json())["checks"] == {"database": "ok", "slow": "ok"}

    state["db"] = False
    state["slow"] = True
    response = await client.get("/health/ready")
    assert response.status == 503
    body = await response.json()
    assert body["failing"] == ["database", "slow"]
    assert body["checks"]["database"] == "database does not answer"
    assert body["checks"]["slow"] == "no answer within 0.2 s"


async def test_metrics_text(
    setup: tuple[TestClient[web.Request, web.Application], dict[str, bool]],
) -> None:
    client, _ = setup
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "vibee_things_total 3.0" in await response.text()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "tok-123456", "Bearer tok-1234567"])
async def test_admin_routes_need_the_token(
    setup: tuple[TestClient[web.Request, web.Application], dict[str, bool]], header: str | None
) -> None:
    client, _ = setup
    headers = {"Authorization": header} if header else {}
    response = await client.get("/admin/sessions", headers=headers)
    assert response.status == 401
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert (await response.json())["title"] == "Unauthorized"


async def test_admin_route_with_token(
    setup: tuple[TestClient[web.Request, web.Application], dict[str, bool]],
) -> None:
    client, _ = setup
    response = await client.get("/admin/sessions", headers={"Authorization": "Bearer tok-123456"})
    assert response.status == 200 and await response.json() == {"sessions": []}
