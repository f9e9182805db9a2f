"""ApiService binds its port on start and serves; the token purge; the admin tier route."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.api.conftest import Client, app_of, bearer, context, problem, register
from vibee.admin.daemon_routes import daemon_routes
from vibee.admin.health import Readiness
from vibee.admin.server import build_admin_app
from vibee.api.admin_routes import tier_routes
from vibee.api.app import ApiService, build_api_app
from vibee.api.context import ApiSettings
from vibee.api.tiers import TierLimits, Tiers
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring
from vibee.store import tokens


async def test_the_service_listens_on_start_and_stops(
    pool: asyncpg.Pool, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_api_app(ApiSettings(), lambda: pool, keyring, LocalRateLimiter())
    for _ in range(2):  # a restarted service serves the same application again
        service = ApiService("127.0.0.1", 0, app, lambda: pool)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="vibee.http"):
            await service.start()
        try:
            assert service.bound_port > 0
            record = next(r for r in caplog.records if r.getMessage() == "api listening")
            assert record.__dict__["port"] == service.bound_port
            assert record.__dict__["host"] == "127.0.0.1"
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{service.bound_port}/health"
                async with session.get(url) as response:
                    assert response.status == 200
        finally:
            await service.stop(5)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{service.bound_port}/health")


async def test_purge_deletes_long_expired_tokens_only(
    api: Client, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    user_id = (await register(api, "alice"))["user"]["id"]
    await tokens.issue(pool, user_id, "a" * 43, ttl_s=1)
    await pool.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '2 days' WHERE token_hash = $1",
        tokens.digest("a" * 43),
    )
    service = ApiService("127.0.0.1", 0, app_of(api), lambda: pool)
    assert await service.purge() == 1
    assert await tokens.live_families(pool, user_id) == 1  # the registration's stays
    assert await tokens.purge_expired(pool, datetime.now(UTC) - timedelta(days=1)) == 0


async def test_admin_sets_a_tier(api: Client, pool: asyncpg.Pool) -> None:
    tiers = Tiers(TierLimits(), {"pro": {"api_per_minute": 600}})
    headers = bearer((await register(api, "alice"))["tokens"]["access_token"])
    cache = context(api).users
    admin_app = build_admin_app(
        Readiness(), "admin-secret", admin_routes=tier_routes(lambda: pool, tiers, cache)
    )
    async with TestClient(TestServer(admin_app)) as admin:
        auth = {"Authorization": "Bearer admin-secret"}
        unauthorized = await admin.put("/admin/users/alice/tier", json={"tier": "pro"})
        assert unauthorized.status == 401
        ok = await admin.put("/admin/users/Alice/tier", json={"tier": "pro"}, headers=auth)
        assert ok.status == 200
        assert (await ok.json())["subscription_tier"] == "pro"
        unknown = await admin.put("/admin/users/alice/tier", json={"tier": "gold"}, headers=auth)
        assert "not a configured tier" in (await problem(unknown, 422))["detail"]
        nobody = await admin.put("/admin/users/nobody/tier", json={"tier": "pro"}, headers=auth)
        await problem(nobody, 404)
        bad = await admin.put("/admin/users/alice/tier", json={"tier": 1}, headers=auth)
        assert (await problem(bad, 422))["errors"][0]["loc"] == "tier"
    me = await (await api.get("/api/v1/users/me", headers=headers)).json()
    assert me["subscription_tier"] == "pro"


async def test_admin_dead_letter_ids_out_of_range_are_not_found(pool: asyncpg.Pool) -> None:
    replays: list[None] = []

    async def replayed() -> None:
        replays.append(None)

    routes = daemon_routes(lambda: None, lambda: pool, replayed)
    async with TestClient(
        TestServer(build_admin_app(Readiness(), "t0k-admin", admin_routes=routes))
    ) as admin:
        auth = {"Authorization": "Bearer t0k-admin"}
        for bad in ("99999999999999999999", "0", "-5"):
            found = await admin.post(f"/admin/dlq/{bad}/replay", headers=auth)
            assert f"no dead letter {bad}" in (await problem(found, 404))["detail"]
        missing = await admin.post("/admin/dlq/424242/drop", headers=auth)
        await problem(missing, 404)
        word = await admin.post("/admin/dlq/abc/replay", headers=auth)
        assert (await problem(word, 400))["detail"] == "the id is an integer"
        listed = await admin.get("/admin/dlq", headers=auth)
        assert listed.status == 200 and (await listed.json()) == {"dead_letters": []}
    assert replays == []
