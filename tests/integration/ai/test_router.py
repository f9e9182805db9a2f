"""The router against the fake providers over real HTTP, and the quota in real Postgres."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY

from vibee.ai.base import ChatRequest, Completion, Delta, Message
from vibee.ai.moderation import LocalModeration
from vibee.ai.providers.anthropic import AnthropicProvider
from vibee.ai.providers.canned import CannedProvider
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Refusal, Router
from vibee.ai.service import database_quota
from vibee.coord.local import LocalCache
from vibee.runtime.breaker import CircuitBreaker, CircuitState


def ask(text: str = "hello", scope: str = "u1") -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), scope=scope)


def slot(provider: object, name: str, threshold: int = 5, reset: float = 30.0) -> ProviderSlot:
    breaker = CircuitBreaker(
        f"test:{name}:{id(provider)}", threshold=threshold, reset_timeout=reset
    )
    return ProviderSlot(provider, breaker)  # type: ignore[arg-type]


def state_of(guarded: ProviderSlot) -> CircuitState:
    return guarded.breaker.state


def openai(base: str, model: str, name: str = "openai", key: str = "k") -> OpenAICompatProvider:
    return OpenAICompatProvider(name, f"{base}/openai/v1", model, key, timeout_s=5)


async def stats(base: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/stats") as response:
        body = await response.json()
    return dict(body["requests"])


@pytest.fixture
async def base(sim_llm: str) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{sim_llm}/reset")
    yield sim_llm


def fast_router(*slots: ProviderSlot, **kwargs: object) -> Router:
    options: dict[str, object] = {"base_delay_s": 0.001, "max_delay_s": 0.01, "timeout_s": 10}
    options.update(kwargs)
    return Router(slots, **options)  # type: ignore[arg-type]


async def test_fallback_order_and_reasons(base: str) -> None:
    router = fast_router(
        slot(openai(base, "sim:status=503", "openrouter"), "openrouter"),
        slot(AnthropicProvider("anthropic", f"{base}/anthropic", "sim:status=401", "k"), "a"),
        slot(openai(base, "gpt"), "openai"),
        slot(CannedProvider(), "canned"),
    )
    try:
        answer = await router.complete(ask())
        assert isinstance(answer, Completion) and answer.provider == "openai"
        assert answer.fallbacks == (
            "openrouter: HTTP 503 api_error",
            "anthropic: HTTP 401 authentication_error",
        )
        # 503 retried three times, 401 asked once, openai once
        assert await stats(base) == {"openai": 4, "anthropic": 1}
    finally:
        await router.close()


async def test_predefined_reply_when_everything_is_down(base: str) -> None:
    router = fast_router(
        slot(openai(base, "sim:status=500"), "openai"),
        slot(OpenAICompatProvider("dead", "http://127.0.0.1:1/v1", "m", "k", 2), "dead"),
        slot(CannedProvider(), "canned"),
    )
    try:
        answer = await router.complete(
            ChatRequest(messages=(Message("user", "привет"),), language="ru")
        )
        assert isinstance(answer, Completion) and answer.canned and answer.text.strip()
        assert answer.provider == "canned" and len(answer.fallbacks) == 2
        assert any(ch in answer.text for ch in "аеиоу")  # the Russian replies
    finally:
        await router.close()


async def test_no_provider_is_a_typed_refusal(base: str) -> None:
    router = fast_router(slot(openai(base, "sim:status=402"), "openai"))
    try:
        answer = await router.complete(ask())
        assert isinstance(answer, Refusal) and answer.reason == "no_provider"
        assert answer.fallbacks == ("openai: HTTP 402 api_error",)
    finally:
        await router.close()


async def test_retry_after_is_honoured(base: str) -> None:
    provider = openai(base, "sim:status=429;retry_after=1;fail_first=1;key=ra")
    router = fast_router(slot(provider, "openai"))
    try:
        started = time.monotonic()
        answer = await router.complete(ask())
        waited = time.monotonic() - started
        assert isinstance(answer, Completion) and answer.fallbacks == ()
        assert waited >= 0.95  # the jittered backoff alone would have been ~0.001 s
    finally:
        await router.close()


async def test_breaker_opens_then_recovers_through_half_open(base: str) -> None:
    failing = openai(base, "sim:status=500;fail_first=5;key=brk")
    guarded = slot(failing, "flaky", threshold=5, reset=0.3)
    router = fast_router(guarded, slot(CannedProvider(), "canned"), retry_attempts=1)
    try:
        for _ in range(5):
            answer = await router.complete(ask(f"q{_}"))
            assert isinstance(answer, Completion) and answer.canned
        assert state_of(guarded) is CircuitState.OPEN
        before = await stats(base)
        answer = await router.complete(ask("while open"))
        assert isinstance(answer, Completion) and answer.canned
        assert answer.fallbacks == ("openai: circuit open",)
        assert await stats(base) == before  # open: not even tried
        await asyncio.sleep(0.35)
        assert state_of(guarded) is CircuitState.HALF_OPEN
        answer = await router.complete(ask("probe"))  # fail_first is used up: the probe works
        assert isinstance(answer, Completion) and answer.provider == "openai"
        assert state_of(guarded) is CircuitState.CLOSED
    finally:
        await router.close()


async def test_cache_hit_makes_no_provider_call(base: str) -> None:
    router = fast_router(slot(openai(base, "gpt"), "openai"), cache=LocalCache(100))
    try:
        first = await router.complete(ask("same question"))
        hits = REGISTRY.get_sample_value("vibee_ai_cache_hits_total") or 0.0
        second = await router.complete(ask("  same question  "))
        assert isinstance(first, Completion) and isinstance(second, Completion)
        assert second.cached and second.text == first.text
        assert await stats(base) == {"openai": 1}
        assert REGISTRY.get_sample_value("vibee_ai_cache_hits_total") == hits + 1
        other_user = await router.complete(ask("same question", scope="u2"))
        assert isinstance(other_user, Completion) and not other_user.cached
        streamed = [item async for item in router.stream(ask("same question"))]
        assert streamed[0] == Delta(first.text) and isinstance(streamed[-1], Completion)
        assert streamed[-1].cached
    finally:
        await router.close()


async def test_moderation_blocks_input_and_output(base: str) -> None:
    moderation = LocalModeration(blocklist=["казино", "scam"], patterns=[r"\bcard\s*\d{4}"])
    router = fast_router(slot(openai(base, "gpt"), "openai"), moderation=moderation)
    try:
        blocked = await router.complete(ask("Join our КАЗИНО today"))
        assert isinstance(blocked, Refusal) and blocked.reason == "input_flagged"
        fine = await router.complete(ask("scampi recipe?"))  # word-aware: no match
        assert isinstance(fine, Completion)
        assert await stats(base) == {"openai": 1}
        router_out = fast_router(
            slot(openai(base, "sim:text=send your card 1234 now"), "openai"), moderation=moderation
        )
        flagged = await router_out.complete(ask("hi"))
        assert isinstance(flagged, Refusal) and flagged.reason == "output_flagged"
        await router_out.close()
    finally:
        await router.close()


async def test_stream_falls_back_before_text_and_keeps_partial_after(base: str) -> None:
    early = fast_router(
        slot(openai(base, "sim:cut_after=0"), "first"),
        slot(AnthropicProvider("anthropic", f"{base}/anthropic", "m", "k"), "second"),
    )
    late = fast_router(
        slot(openai(base, "sim:error_after=1"), "first"),
        slot(AnthropicProvider("anthropic", f"{base}/anthropic", "m", "k"), "second"),
    )
    try:
        items = [item async for item in early.stream(ask("tell me"))]
        final = items[-1]
        assert isinstance(final, Completion) and final.provider == "anthropic"
        assert (
            not final.partial
            and "".join(i.text for i in items if isinstance(i, Delta)) == final.text
        )

        items = [item async for item in late.stream(ask("tell me"))]
        final = items[-1]
        assert isinstance(final, Completion) and final.provider == "openai" and final.partial
        assert final.text == "".join(i.text for i in items if isinstance(i, Delta))
        assert (await stats(base)).get("anthropic") == 1  # only the early case asked it
    finally:
        await early.close()
        await late.close()


async def test_quota_race_exactly_one_passes(
    base: str, conn: asyncpg.Connection, db_url: str
) -> None:
    user = await conn.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ('q', 'x') RETURNING id"
    )
    limit = 10
    await conn.execute(
        "INSERT INTO usage_daily (user_id, day, requests, tokens) "
        "VALUES ($1, (now() AT TIME ZONE 'utc')::date, $2, 0)",
        user,
        limit - 1,
    )
    pool = await asyncpg.create_pool(db_url, min_size=10, max_size=20)
    assert pool is not None
    router = fast_router(
        slot(openai(base, "gpt"), "openai"), quota=database_quota(pool, limit, 10_000_000)
    )
    try:
        answers = await asyncio.gather(
            *(router.complete(ask(f"question {i}"), user_id=user) for i in range(50))
        )
        passed = [a for a in answers if isinstance(a, Completion)]
        refused = [a for a in answers if isinstance(a, Refusal)]
        assert len(passed) == 1 and len(refused) == 49
        assert {r.reason for r in refused} == {"quota"}
        row = await conn.fetchrow(
            "SELECT requests, tokens FROM usage_daily WHERE user_id = $1", user
        )
        assert row is not None and row["requests"] == limit
        assert row["tokens"] == passed[0].usage.total_tokens  # reconciled to the real usage
    finally:
        await router.close()
        await pool.close()


async def test_no_leaked_task_or_connection_after_10000_requests(base: str) -> None:
    provider = openai(base, "gpt")
    router = fast_router(slot(provider, "openai"))
    tasks_before = len(asyncio.all_tasks())
    semaphore = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with semaphore:
            answer = await router.complete(ask(f"q{i % 500}", scope=str(i)))
            assert isinstance(answer, Completion)

    try:
        await asyncio.gather(*(one(i) for i in range(10_000)))
        session = provider._http._session
        assert session is not None
        connector = session.connector
        assert connector is not None
        assert len(connector._conns) <= 1 or sum(len(v) for v in connector._conns.values()) <= 64
        assert len(connector._acquired) == 0
    finally:
        await router.close()
    gc.collect()
    assert len(asyncio.all_tasks()) == tasks_before
    assert provider._http._session is None


async def test_remote_moderation_endpoint(base: str) -> None:
    from vibee.ai.moderation import RemoteModeration

    remote = RemoteModeration(f"{base}/openai/v1", "k")
    router = fast_router(
        slot(openai(base, "gpt"), "openai"),
        moderation=LocalModeration(),
        remote_moderation=remote,
    )
    try:
        refused = await router.complete(ask("this is Forbidden content"))
        assert isinstance(refused, Refusal) and refused.reason == "input_flagged"
        assert refused.detail == "flagged by the moderation endpoint"
        answer = await router.complete(ask("a fine question"))
        assert isinstance(answer, Completion)
        assert (await stats(base)) == {"moderations": 3, "openai": 1}  # in, in, out
    finally:
        await router.close()
        await remote.close()


async def test_quota_follows_the_users_tier(
    base: str, conn: asyncpg.Connection, db_url: str
) -> None:
    from vibee.ai.service import tiered_quota
    from vibee.api.tiers import TierLimits, Tiers

    free = await conn.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ('free1', 'x') RETURNING id"
    )
    pro = await conn.fetchval(
        "INSERT INTO users (username, password_hash, subscription_tier) "
        "VALUES ('pro1', 'x', 'pro') RETURNING id"
    )
    base_limits = TierLimits(ai_requests_per_day=2)
    tiers = Tiers(base_limits, {"pro": {"ai_requests_per_day": 5}})
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert pool is not None
    router = fast_router(slot(openai(base, "gpt"), "openai"), quota=tiered_quota(pool, tiers))
    try:
        free_ok = [
            isinstance(await router.complete(ask(f"f{i}"), user_id=free), Completion)
            for i in range(4)
        ]
        pro_ok = [
            isinstance(await router.complete(ask(f"p{i}"), user_id=pro), Completion)
            for i in range(7)
        ]
        assert free_ok == [True, True, False, False]
        assert pro_ok == [True] * 5 + [False, False]
    finally:
        await router.close()
        await pool.close()
