"""What wraps every route: problem+json for unknown routes and methods, 503 when the
database is gone, the HTTP metrics under the route template, and /health."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from tests.integration.api.conftest import Client, bearer, problem, register
from vibee.api.app import build_api_app
from vibee.api.context import ApiSettings
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring
from vibee.store.db import DatabaseError


def requests(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("vibee_http_requests_total", labels) or 0.0


async def test_health(api: Client) -> None:
    response = await api.get("/health")
    assert response.status == 200 and await response.json() == {"status": "ok"}


async def test_unknown_route_and_method_are_problems(api: Client) -> None:
    body = await problem(await api.get("/api/v1/nothing/here"), 404)
    assert body["detail"] == "no such route"
    wrong = await api.delete("/api/v1/users/me")
    await problem(wrong, 405)
    assert "GET" in wrong.headers["Allow"] and "PATCH" in wrong.headers["Allow"]


async def test_metrics_use_the_route_template_never_the_raw_path(api: Client) -> None:
    pair = (await register(api, "alice"))["tokens"]
    before_me = requests("/api/v1/users/me", "GET", "200")
    before_unmatched = requests("unmatched", "GET", "404")
    before_other = requests("unmatched", "OTHER", "405")
    await api.get("/api/v1/users/me", headers=bearer(pair["access_token"]))
    await api.get("/api/v1/users/me?x=1", headers=bearer(pair["access_token"]))
    await api.get("/api/v1/users/12345")
    await api.request("PROPFIND", "/api/v1/users/me")
    assert requests("/api/v1/users/me", "GET", "200") == before_me + 2
    assert requests("unmatched", "GET", "404") == before_unmatched + 1
    assert requests("unmatched", "OTHER", "405") == before_other + 1
    labels = {
        sample.labels.get("route")
        for metric in REGISTRY.collect()
        if metric.name.startswith("vibee_http_request")
        for sample in metric.samples
    }
    assert "/api/v1/users/12345" not in labels
    assert REGISTRY.get_sample_value(
        "vibee_http_request_duration_seconds_count", {"route": "/api/v1/users/me"}
    )


@pytest.mark.parametrize("failure", ["closed pool", "no pool"])
async def test_a_missing_database_is_503_not_500(
    api: Client, keyring: Keyring, db_url: str, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = (await register(api, "alice"))["tokens"]
    closed = await asyncpg.create_pool(db_url, min_size=0, max_size=1)
    await closed.close()

    def pool() -> asyncpg.Pool:
        if failure == "no pool":
            raise DatabaseError("the database is not open")
        return closed

    app = build_api_app(ApiSettings(user_cache_ttl_s=0), pool, keyring, LocalRateLimiter())
    async with TestClient(TestServer(app)) as down:
        with caplog.at_level(logging.WARNING, logger="vibee.api"):
            me = await down.get("/api/v1/users/me", headers=bearer(pair["access_token"]))
            login = await down.post("/api/v1/auth/login", json={"username": "a", "password": "b"})
        for response in (me, login):
            body = await problem(response, 503)
            assert response.headers["Retry-After"] == "1"
            assert body["title"] == "Service unavailable"
        assert "unhandled" not in caplog.text
        assert (await down.get("/health")).status == 200
