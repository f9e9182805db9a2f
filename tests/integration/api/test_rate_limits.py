"""Rate limits: per user (the tier's api_per_minute), per address on login/register and on
refresh/logout, per user on password change; 429 with Retry-After and RateLimit-*."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.integration.api.conftest import PASSWORD, MakeApi, bearer, problem, register
from vibee.api.tiers import TierLimits, Tiers


def limited(limit: str) -> float:
    return REGISTRY.get_sample_value("vibee_rate_limited_total", {"limit": limit}) or 0.0


async def test_per_user_limit_from_the_tier(make_api: MakeApi) -> None:
    api = await make_api(tiers=Tiers(TierLimits(api_per_minute=3)))
    alice = bearer((await register(api, "alice"))["tokens"]["access_token"])
    bob = bearer((await register(api, "bob"))["tokens"]["access_token"])
    before = limited("api")
    for remaining in (2, 1, 0):
        response = await api.get("/api/v1/users/me", headers=alice)
        assert response.status == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == str(remaining)
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 60
    refused = await api.get("/api/v1/usage", headers=alice)  # the limit is per user, not route
    body = await problem(refused, 429)
    assert "3 requests per minute" in body["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Limit"] == "3"
    assert limited("api") == before + 1
    # bob has his own allowance
    assert (await api.get("/api/v1/users/me", headers=bob)).status == 200


async def test_login_and_register_are_limited_per_address(make_api: MakeApi) -> None:
    api = await make_api(auth_per_minute_per_ip=3)
    await register(api, "alice")
    before = limited("auth_ip")
    wrong = {"username": "alice", "password": "guess guess"}
    for _ in range(2):
        await problem(await api.post("/api/v1/auth/login", json=wrong), 401)
    refused = await api.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    await problem(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    again = await api.post("/api/v1/auth/register", json={"username": "bob", "password": PASSWORD})
    await problem(again, 429)
    assert limited("auth_ip") == before + 2


async def test_refresh_and_logout_are_limited_per_address(make_api: MakeApi) -> None:
    api = await make_api(token_per_minute_per_ip=2)
    pair = (await register(api, "alice"))["tokens"]
    first = await api.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert first.status == 200
    logout = await api.post("/api/v1/auth/logout", json={"refresh_token": "B" * 43})
    assert logout.status == 204
    assert logout.headers["RateLimit-Remaining"] == "0"
    refused = await api.post("/api/v1/auth/refresh", json={"refresh_token": "C" * 43})
    await problem(refused, 429)


async def test_password_change_is_limited_per_user(make_api: MakeApi) -> None:
    api = await make_api(auth_per_minute_per_ip=2)
    headers = bearer((await register(api, "alice"))["tokens"]["access_token"])
    before = limited("password")
    guess = {"current_password": "guess guess", "new_password": "whatever long"}
    for _ in range(2):
        response = await api.post("/api/v1/users/me/password", json=guess, headers=headers)
        await problem(response, 403)
        assert "RateLimit-Remaining" in response.headers
    refused = await api.post("/api/v1/users/me/password", json=guess, headers=headers)
    await problem(refused, 429)
    assert limited("password") == before + 1
