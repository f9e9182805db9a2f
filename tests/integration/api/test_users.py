"""``/users/me``: the profile, its tier and limits, changes; one user never sees another's."""

from __future__ import annotations

import asyncpg

from tests.integration.api.conftest import Client, MakeApi, bearer, problem, register
from vibee.api.tiers import TierLimits, Tiers
from vibee.store import users


async def test_me_shows_the_user_and_its_tier_limits(make_api: MakeApi, pool: asyncpg.Pool) -> None:
    tiers = Tiers(
        TierLimits(api_per_minute=100, ai_requests_per_day=1000),
        {"pro": {"api_per_minute": 600, "ai_requests_per_day": 20_000}},
    )
    api = await make_api(tiers=tiers)
    pair = (await register(api, "alice"))["tokens"]
    me = await (await api.get("/api/v1/users/me", headers=bearer(pair["access_token"]))).json()
    assert set(me) == {
        "id",
        "username",
        "display_name",
        "subscription_tier",
        "limits",
        "created_at",
    }
    assert me["subscription_tier"] == "free"
    assert me["limits"] == {
        "api_per_minute": 100,
        "ai_requests_per_day": 1000,
        "ai_tokens_per_day": 1_000_000,
        "chat_messages_per_minute": 10,
    }
    await users.set_tier(pool, "alice", "pro")
    me = await (await api.get("/api/v1/users/me", headers=bearer(pair["access_token"]))).json()
    assert me["subscription_tier"] == "pro"
    assert me["limits"]["api_per_minute"] == 600
    assert me["limits"]["ai_requests_per_day"] == 20_000
    assert me["limits"]["ai_tokens_per_day"] == 1_000_000  # not overridden: the base value


async def test_patch_me_changes_the_display_name(api: Client) -> None:
    pair = (await register(api, "alice"))["tokens"]
    headers = bearer(pair["access_token"])
    response = await api.patch(
        "/api/v1/users/me", json={"display_name": "  Alice A.  "}, headers=headers
    )
    assert response.status == 200
    assert (await response.json())["display_name"] == "Alice A."
    me = await (await api.get("/api/v1/users/me", headers=headers)).json()
    assert me["display_name"] == "Alice A."


async def test_user_a_never_sees_user_b(api: Client) -> None:
    alice = await register(api, "alice")
    bob = await register(api, "bob")
    a, b = bearer(alice["tokens"]["access_token"]), bearer(bob["tokens"]["access_token"])
    await api.patch("/api/v1/users/me", json={"display_name": "Bob the builder"}, headers=b)
    me = await (await api.get("/api/v1/users/me", headers=a)).json()
    assert me["id"] == alice["user"]["id"] != bob["user"]["id"]
    assert me["username"] == "alice" and me["display_name"] == "alice"
    await api.patch("/api/v1/users/me", json={"display_name": "Alice"}, headers=a)
    other = await (await api.get("/api/v1/users/me", headers=b)).json()
    assert other["display_name"] == "Bob the builder"
    # there is no way to name another user: the routes take no user id at all
    assert (await api.get(f"/api/v1/users/{bob['user']['id']}", headers=a)).status == 404


async def test_the_user_cache_sees_changes_made_here_at_once(
    make_api: MakeApi, conn: asyncpg.Connection
) -> None:
    api = await make_api(user_cache_ttl_s=3600.0)
    pair = (await register(api, "alice"))["tokens"]
    headers = bearer(pair["access_token"])
    assert (await api.get("/api/v1/users/me", headers=headers)).status == 200
    await api.patch("/api/v1/users/me", json={"display_name": "Changed"}, headers=headers)
    me = await (await api.get("/api/v1/users/me", headers=headers)).json()
    assert me["display_name"] == "Changed"
    # a change made elsewhere waits for the TTL: the documented trade-off
    await users.set_disabled(conn, "alice", True)
    assert (await api.get("/api/v1/users/me", headers=headers)).status == 200


async def test_without_the_cache_a_disabled_user_is_refused_at_once(
    api: Client, conn: asyncpg.Connection
) -> None:
    pair = (await register(api, "alice"))["tokens"]
    headers = bearer(pair["access_token"])
    assert (await api.get("/api/v1/users/me", headers=headers)).status == 200
    await users.set_disabled(conn, "alice", True)
    await problem(await api.get("/api/v1/users/me", headers=headers), 403)
