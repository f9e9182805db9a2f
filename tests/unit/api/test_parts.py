"""Small parts of the API: tiers, client address keys, rate-limit headers, problems."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from pydantic import ValidationError

from vibee.api.errors import InvalidBody, RateLimited, Unauthorized
from vibee.api.ratelimit import client_address, headers
from vibee.api.schemas import ProfileUpdate, RegisterRequest
from vibee.api.tiers import DEFAULT_TIER, TierLimits, Tiers
from vibee.coord.base import Decision


def test_tiers_override_the_base_key_by_key() -> None:
    tiers = Tiers(TierLimits(api_per_minute=100), {"pro": {"api_per_minute": 600}})
    assert tiers.names == [DEFAULT_TIER, "pro"]
    assert tiers.limits("pro").api_per_minute == 600
    assert tiers.limits("pro").ai_requests_per_day == 1000
    assert tiers.limits("removed-tier") == tiers.limits(DEFAULT_TIER)
    assert "pro" in tiers and "gold" not in tiers
    with pytest.raises(ValidationError):
        Tiers(overrides={"pro": {"api_per_minuet": 5}})
    with pytest.raises(ValidationError):
        Tiers(overrides={"pro": {"api_per_minute": 0}})


class Transport:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("203.0.113.9", 5000), "203.0.113.9"),
        (("2001:db8:1:2:3:4:5:6", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:198.51.100.7", 5000, 0, 0), "198.51.100.7"),
    ],
)
def test_client_address(peer: Any, key: str) -> None:
    request = make_mocked_request("GET", "/", transport=Transport(peer))
    assert client_address(request) == key


def test_rate_limit_headers() -> None:
    allowed = headers(Decision(True, 100, 99, 0.0, 0.6))
    assert allowed == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "99",
        "RateLimit-Reset": "1",
    }
    refused = headers(Decision(False, 100, 0, 0.2, 60.0))
    assert refused["Retry-After"] == "1" and refused["RateLimit-Reset"] == "60"


def test_problem_documents() -> None:
    error = Unauthorized("send a token")
    body = orjson.loads(error.response().body)  # type: ignore[arg-type]
    assert body == {
        "type": "urn:vibee:problem:unauthorized",
        "title": "Authentication required",
        "status": 401,
        "detail": "send a token",
    }
    assert error.response().headers["WWW-Authenticate"] == 'Bearer realm="vibee"'
    assert error.response().content_type == "application/problem+json"
    assert RateLimited("x", headers={"Retry-After": "3"}).response().headers["Retry-After"] == "3"
    assert InvalidBody(415, "json please").response().status == 415


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "", "   ", "x" * 65])
def test_display_names_that_postgres_or_people_would_regret(name: str) -> None:
    with pytest.raises(ValidationError):
        ProfileUpdate.model_validate_json(orjson.dumps({"display_name": name}))


def test_requests_are_strict() -> None:
    with pytest.raises(ValidationError):  # no coercion of numbers to strings
        RegisterRequest.model_validate_json(b'{"username": 12345, "password": "long enough"}')
    with pytest.raises(ValidationError):
        RegisterRequest.model_validate_json(
            b'{"username": "a", "password": "long enough", "is_admin": true}'
        )
