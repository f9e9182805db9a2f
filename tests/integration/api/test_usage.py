"""``GET /api/v1/usage``: today against the tier's quota, the last 30 days, own rows only."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from tests.integration.api.conftest import Client, bearer, register
from vibee.store import usage


async def test_usage_today_and_the_last_30_days(api: Client, pool: asyncpg.Pool) -> None:
    alice = await register(api, "alice")
    bob = await register(api, "bob")
    alice_id = alice["user"]["id"]
    today = usage.today()
    for _ in range(3):
        assert await usage.reserve(pool, alice_id, 100, 1000, 1_000_000)
    await usage.reconcile(pool, alice_id, 100, 250, cost=0.002)
    assert await usage.reserve(pool, alice_id, 40, 1000, 1_000_000, day=today - timedelta(days=2))
    assert await usage.reserve(pool, alice_id, 9, 1000, 1_000_000, day=today - timedelta(days=45))
    assert await usage.reserve(pool, bob["user"]["id"], 7777, 1000, 1_000_000)

    response = await api.get("/api/v1/usage", headers=bearer(alice["tokens"]["access_token"]))
    assert response.status == 200
    body = await response.json()
    assert body["day"] == today.isoformat() and body["tier"] == "free"
    assert body["today"] == {
        "day": today.isoformat(),
        "requests": 3,
        "tokens": 450,
        "cost": body["today"]["cost"],
    }
    assert float(body["today"]["cost"]) == 0.002
    assert body["quota"] == {"requests_per_day": 1000, "tokens_per_day": 1_000_000}
    assert body["remaining"] == {"requests": 997, "tokens": 1_000_000 - 450}
    assert [d["day"] for d in body["days"]] == [
        today.isoformat(),
        (today - timedelta(days=2)).isoformat(),
    ]  # newest first; 45 days ago is out of the window; bob's row is not alice's


async def test_no_usage_yet(api: Client) -> None:
    alice = await register(api, "alice")
    body = await (
        await api.get("/api/v1/usage", headers=bearer(alice["tokens"]["access_token"]))
    ).json()
    assert body["today"]["requests"] == 0 and body["days"] == []
    assert body["remaining"] == {"requests": 1000, "tokens": 1_000_000}
