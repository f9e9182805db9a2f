"""Every authenticated route refuses missing, expired, tampered, ``alg=none``, unknown-kid
and wrong-type tokens with 401 and a Bearer challenge, before it reads anything else."""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.integration.api.conftest import (
    Client,
    MakeApi,
    app_of,
    bearer,
    context,
    problem,
    register,
)
from vibee.api.access import AccessTokens
from vibee.api.app import ROUTES
from vibee.secrets import Keyring, new_keyring_text


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id: int, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(user_id),
        "typ": "access",
        "gen": 0,
        "iss": "vibee",
        "iat": now,
        "exp": now + 600,
        **changes,
    }


def sign(keyring: Keyring, payload: dict[str, Any], alg: str = "HS256") -> str:
    kid, key = keyring.keys[0]
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def bad_tokens(keyring: Keyring, user_id: int, good: str) -> dict[str, str]:
    """Name → a token that must be refused."""
    kid = keyring.primary_id
    header, payload, signature = good.split(".")
    other = Keyring.parse("jwt_keys", new_keyring_text())
    forged_payload = b64(claims(user_id + 1))
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return {
        "expired": AccessTokens(keyring, 60, clock=lambda: time.time() - 3600).issue(user_id, 0),
        "tampered payload": f"{header}.{forged_payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{flipped}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload}.",
        "alg none, no kid": jwt.encode(claims(user_id), "", algorithm="none"),
        "HS512 with the right key": sign(keyring, claims(user_id), "HS512"),
        "unknown kid": sign(other, claims(user_id)),
        "known kid, other key": jwt.encode(
            claims(user_id), other.keys[0][1], algorithm="HS256", headers={"kid": kid}
        ),
        "a refresh-typed JWT": sign(keyring, claims(user_id, typ="refresh")),
        "another issuer": sign(keyring, claims(user_id, iss="elsewhere")),
        "no expiry": sign(keyring, {k: v for k, v in claims(user_id).items() if k != "exp"}),
        "a user that does not exist": sign(keyring, claims(user_id + 1000)),
        "garbage": "not-a-jwt",
    }


def authenticated_routes(api: Client) -> list[tuple[str, str]]:
    routes = app_of(api)[ROUTES]
    found = [(r.method, r.path) for r in routes if r.auth]
    assert len(found) >= 4
    return found


@pytest.mark.filterwarnings("ignore:The HMAC key is 32 bytes long")
async def test_bad_tokens_are_refused_on_every_authenticated_route(
    api: Client, keyring: Keyring
) -> None:
    registered = await register(api, "alice")
    user_id, good = registered["user"]["id"], registered["tokens"]
    cases: dict[str, Callable[[], dict[str, str]]] = {
        "missing": dict,
        "empty bearer": lambda: {"Authorization": "Bearer "},
        "basic scheme": lambda: {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        "the refresh token": lambda: bearer(good["refresh_token"]),
    }
    for name, token in bad_tokens(keyring, user_id, good["access_token"]).items():
        cases[name] = functools.partial(bearer, token)
    for method, path in authenticated_routes(api):
        for name, headers in cases.items():
            response = await api.request(method, path, headers=headers(), json={"x": 1})
            body = await problem(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), (name, path)
            assert good["access_token"] not in json.dumps(body)
        ok = await api.request(method, path, headers=bearer(good["access_token"]))
        assert ok.status != 401, (method, path)


async def test_expired_token_says_so(api: Client, keyring: Keyring) -> None:
    user_id = (await register(api, "alice"))["user"]["id"]
    expired = AccessTokens(keyring, 60, clock=lambda: time.time() - 3600).issue(user_id, 0)
    response = await api.get("/api/v1/users/me", headers=bearer(expired))
    body = await problem(response, 401)
    assert body["detail"] == "the token has expired"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("still_in_ring", [True, False])
async def test_tokens_survive_a_key_rotation_while_the_old_key_stays_in_the_ring(
    make_api: MakeApi, keyring: Keyring, still_in_ring: bool
) -> None:
    before = await make_api()
    pair = (await register(before, "alice"))["tokens"]
    text = "\n".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keyring)
    rotated = Keyring.parse("jwt_keys", new_keyring_text(text if still_in_ring else ""))
    after = await make_api(keyring_=rotated)
    assert context(after).tokens.issue(1, 0).count(".") == 2
    response = await after.get("/api/v1/users/me", headers=bearer(pair["access_token"]))
    if still_in_ring:
        assert response.status == 200
    else:
        assert (await problem(response, 401))["detail"] == "unknown signing key"
    fresh = jwt.get_unverified_header(context(after).tokens.issue(1, 0))
    assert fresh["kid"] == rotated.primary_id != keyring.primary_id
