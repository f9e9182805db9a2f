"""Register, login, refresh (rotation and reuse), logout and password change."""

from __future__ import annotations

import asyncpg

from tests.integration.api.conftest import (
    PASSWORD,
    Client,
    MakeApi,
    bearer,
    problem,
    register,
)
from vibee.store import tokens, users


async def test_register_answers_the_user_and_working_tokens(api: Client) -> None:
    response = await api.post(
        "/api/v1/auth/register",
        json={"username": "alice", "password": PASSWORD, "display_name": "Alice A."},
    )
    assert response.status == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["user"]["username"] == "alice"
    assert body["user"]["display_name"] == "Alice A."
    assert body["user"]["subscription_tier"] == "free"
    assert body["user"]["limits"]["api_per_minute"] == 100
    assert body["user"]["limits"]["ai_requests_per_day"] == 1000
    pair = body["tokens"]
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    me = await api.get("/api/v1/users/me", headers=bearer(pair["access_token"]))
    assert me.status == 200 and (await me.json())["id"] == body["user"]["id"]


async def test_a_taken_username_is_a_conflict_whatever_its_case(api: Client) -> None:
    await register(api, "alice")
    response = await api.post(
        "/api/v1/auth/register", json={"username": "ALICE", "password": PASSWORD}
    )
    body = await problem(response, 409)
    assert body["title"] == "Username taken"
    assert PASSWORD not in await response.text()


async def test_registration_can_be_closed(make_api: MakeApi) -> None:
    api = await make_api(allow_registration=False)
    response = await api.post(
        "/api/v1/auth/register", json={"username": "alice", "password": PASSWORD}
    )
    assert (await problem(response, 403))["title"] == "Registration closed"


async def test_login(api: Client) -> None:
    await register(api, "alice")
    response = await api.post(
        "/api/v1/auth/login", json={"username": "Alice", "password": PASSWORD}
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    pair = await response.json()
    me = await api.get("/api/v1/users/me", headers=bearer(pair["access_token"]))
    assert (await me.json())["username"] == "alice"


async def test_wrong_password_and_unknown_user_get_the_same_answer(api: Client) -> None:
    await register(api, "alice")
    wrong = await api.post("/api/v1/auth/login", json={"username": "alice", "password": "nope"})
    unknown = await api.post("/api/v1/auth/login", json={"username": "bob", "password": "nope"})
    first, second = await problem(wrong, 401), await problem(unknown, 401)
    assert first == second
    assert first["title"] == "Invalid credentials"
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_disabled_user_is_refused_everywhere(api: Client, conn: asyncpg.Connection) -> None:
    pair = (await register(api, "alice"))["tokens"]
    await users.set_disabled(conn, "alice", True)
    login = await api.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert (await problem(login, 403))["title"] == "Account disabled"
    me = await api.get("/api/v1/users/me", headers=bearer(pair["access_token"]))
    assert (await problem(me, 403))["title"] == "Account disabled"
    refreshed = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert (await problem(refreshed, 403))["title"] == "Account disabled"


async def test_refresh_rotates_and_reuse_revokes_the_family(
    api: Client, pool: asyncpg.Pool
) -> None:
    registered = await register(api, "alice")
    user_id, first = registered["user"]["id"], registered["tokens"]
    response = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status == 200
    second = await response.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = await api.get("/api/v1/users/me", headers=bearer(second["access_token"]))
    assert me.status == 200

    # the thief replays the spent token: refused, and the legitimate successor dies with it
    replay = await api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert (await problem(replay, 401))["title"] == "Refresh token reused"
    successor = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert (await problem(successor, 401))["title"] == "Invalid refresh token"
    assert await tokens.live_families(pool, user_id) == 0
    # tokens are stored as digests only
    stored = await pool.fetch("SELECT token_hash FROM refresh_tokens")
    raw = {first["refresh_token"].encode(), second["refresh_token"].encode()}
    assert stored and not any(bytes(r["token_hash"]) in raw for r in stored)


async def test_an_unknown_refresh_token_is_refused(api: Client) -> None:
    response = await api.post("/api/v1/auth/refresh", json={"refresh_token": "A" * 43})
    assert (await problem(response, 401))["title"] == "Invalid refresh token"


async def test_an_access_token_is_not_a_refresh_token(api: Client) -> None:
    pair = (await register(api, "alice"))["tokens"]
    response = await api.post("/api/v1/auth/refresh", json={"refresh_token": pair["access_token"]})
    await problem(response, 422)  # not even shaped like one


async def test_logout_revokes_the_family_only(api: Client, pool: asyncpg.Pool) -> None:
    registered = await register(api, "alice")
    user_id, phone = registered["user"]["id"], registered["tokens"]
    login = await api.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    laptop = await login.json()
    assert await tokens.live_families(pool, user_id) == 2

    response = await api.post("/api/v1/auth/logout", json={"refresh_token": phone["refresh_token"]})
    assert response.status == 204
    again = await api.post("/api/v1/auth/logout", json={"refresh_token": phone["refresh_token"]})
    assert again.status == 204
    refused = await api.post("/api/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    await problem(refused, 401)
    still = await api.post("/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    assert still.status == 200
    assert await tokens.live_families(pool, user_id) == 1


async def test_password_change_revokes_every_token(api: Client, pool: asyncpg.Pool) -> None:
    registered = await register(api, "alice")
    user_id, old = registered["user"]["id"], registered["tokens"]
    wrong = await api.post(
        "/api/v1/users/me/password",
        json={"current_password": "not it at all", "new_password": "battery staple 2"},
        headers=bearer(old["access_token"]),
    )
    assert (await problem(wrong, 403))["title"] == "Wrong password"

    response = await api.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "battery staple 2"},
        headers=bearer(old["access_token"]),
    )
    assert response.status == 200
    new = await response.json()
    assert await tokens.live_families(pool, user_id) == 1  # only the new login's

    stale = await api.get("/api/v1/users/me", headers=bearer(old["access_token"]))
    assert "password changed" in (await problem(stale, 401))["detail"]
    refresh = await api.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]})
    await problem(refresh, 401)
    fresh = await api.get("/api/v1/users/me", headers=bearer(new["access_token"]))
    assert fresh.status == 200
    old_login = await api.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    await problem(old_login, 401)
    new_login = await api.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "battery staple 2"}
    )
    assert new_login.status == 200
