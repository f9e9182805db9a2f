"""Moderation, the local cache, predefined replies, Retry-After parsing."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from vibee.ai.base import ChatRequest, Message, estimate_tokens
from vibee.ai.moderation import LocalModeration
from vibee.ai.providers.canned import CannedProvider
from vibee.ai.providers.http import classify, parse_retry_after
from vibee.coord.local import LocalCache


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("Best CASINO deals", True),
        ("casino", True),
        ("casinos are fun", False),  # whole words only
        ("Приходи в казино", True),
        ("КАЗИНО!", True),
        ("café crème", True),  # accents folded: blocklist has "cafe creme"
        ("call me at card 1234", True),
        ("no problem here", False),
    ],
)
def test_local_moderation(text: str, flagged: bool) -> None:
    moderation = LocalModeration(
        blocklist=["casino", "казино", "cafe creme"], patterns=[r"card\s*\d{4}"]
    )
    assert (moderation.check_input(text) is not None) is flagged


def test_length_limits_and_empty_output() -> None:
    moderation = LocalModeration(max_input_chars=10, max_output_chars=5)
    assert moderation.check_input("x" * 11) == "longer than 10 characters"
    assert moderation.check_input("x" * 10) is None
    assert moderation.check_output("123456") == "longer than 5 characters"
    assert moderation.check_output("   ") == "empty reply"


async def test_local_cache_ttl_and_lru() -> None:
    now = [0.0]
    cache = LocalCache(max_entries=2, clock=lambda: now[0])
    await cache.set("a", b"1", 10)
    await cache.set("b", b"2", 10)
    assert await cache.get("a") == b"1"  # a is now the most recently used
    await cache.set("c", b"3", 10)
    assert await cache.get("b") is None and await cache.get("a") == b"1"
    now[0] = 10.0
    assert await cache.get("a") is None and len(cache) == 1
    await cache.set("d", b"4", 0)
    assert await cache.get("d") is None


async def test_canned_replies_never_empty_and_deterministic() -> None:
    canned = CannedProvider(replies={"en": {"digital_twin": ["", "  ", "Back soon"]}})
    request = ChatRequest(messages=(Message("user", "hi"),), language="de", mode="sniper")
    first = await canned.complete(request)
    assert first.text == "Back soon" and first.canned
    assert (await canned.complete(request)).text == first.text
    empty = CannedProvider(replies={"en": {"digital_twin": [""]}})
    assert (await empty.complete(request)).text.strip()


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    date = formatdate(1000.0 + 5, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1000.0) == 5.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    assert parse_retry_after({"retry-after": "9999"}) == 60.0


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (429, {"error": {"code": "rate_limit_exceeded"}}, True),
        (429, {"error": {"code": "insufficient_quota", "type": "insufficient_quota"}}, False),
        (409, None, True),
        (529, {"type": "error", "error": {"type": "overloaded_error"}}, True),
        (402, {"error": {"code": 402, "message": "credits"}}, False),
        (400, None, False),
        (503, None, True),
    ],
)
def test_classification(status: int, body: object, retryable: bool) -> None:
    assert classify("p", status, body, {}).retryable is retryable


def test_token_estimate_keeps_a_margin_for_russian() -> None:
    text = "Привет, как у тебя дела сегодня?"
    assert estimate_tokens(text) >= len(text) / 4 * 1.3
