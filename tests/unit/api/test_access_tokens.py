"""Access tokens without a server: issue, verify, the verified-token cache, rotation."""

from __future__ import annotations

import base64
from collections.abc import Callable

import jwt
import pytest

from vibee.api.access import AccessTokens, TokenRejected
from vibee.secrets import Keyring, new_keyring_text


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ring(extra: str = "") -> Keyring:
    return Keyring.parse("jwt_keys", new_keyring_text(extra))


def text_of(keyring: Keyring) -> str:
    return "\n".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keyring)


def test_issue_and_verify() -> None:
    keyring = ring()
    tokens = AccessTokens(keyring, 900)
    token = tokens.issue(42, 3)
    assert jwt.get_unverified_header(token) == {
        "alg": "HS256",
        "kid": keyring.primary_id,
        "typ": "JWT",
    }
    claims = tokens.verify(token)
    assert (claims.user_id, claims.generation) == (42, 3)
    assert tokens.verify(token) is claims  # the second time from the cache


def test_a_cached_token_still_expires() -> None:
    import time

    clock = Clock(time.time())
    tokens = AccessTokens(ring(), 60, clock=clock)
    token = tokens.issue(1, 0)
    tokens.verify(token)
    clock.now += 61
    with pytest.raises(TokenRejected, match="expired"):
        tokens.verify(token)


def test_verification_uses_the_kid_and_any_key_of_the_ring() -> None:
    old = ring()
    token = AccessTokens(old, 900).issue(7, 0)
    rotated = ring(text_of(old))
    assert AccessTokens(rotated, 900).verify(token).user_id == 7
    with pytest.raises(TokenRejected, match="unknown signing key"):
        AccessTokens(ring(), 900).verify(token)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:], "signature"),
        (lambda t: t.split(".")[0] + ".e30." + t.split(".")[2], "signature"),
        (lambda t: "x" * 5000, "malformed"),
        (lambda t: "a.b", "malformed"),
    ],
)
def test_mutated_tokens_are_rejected(mutate: Callable[[str], str], reason: str) -> None:
    tokens = AccessTokens(ring(), 900)
    good = tokens.issue(1, 0)
    with pytest.raises(TokenRejected, match=reason):
        tokens.verify(mutate(good))


def test_the_cache_is_bounded() -> None:
    tokens = AccessTokens(ring(), 900, cache_size=10)
    issued = [tokens.issue(i, 0) for i in range(50)]
    for token in issued:
        tokens.verify(token)
    assert len(tokens._cache) <= 10
    assert tokens.verify(issued[0]).user_id == 0  # evicted ones verify again


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        AccessTokens(ring(), 0)
