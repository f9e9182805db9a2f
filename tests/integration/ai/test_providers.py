"""Each provider against the fake over real HTTP: answers, streams, and every error class."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from vibee.ai.base import (
    ChatRequest,
    Completion,
    Delta,
    Message,
    PermanentError,
    Provider,
    RetryableError,
    StreamBroken,
)
from vibee.ai.providers.anthropic import AnthropicProvider
from vibee.ai.providers.openai_compat import OpenAICompatProvider

REQUEST = ChatRequest(messages=(Message("user", "hello there, how are you?"),), system="Be brief.")


def make(kind: str, base: str, model: str = "m", key: str = "sk-test") -> Provider:
    if kind == "anthropic":
        return AnthropicProvider("anthropic", f"{base}/anthropic", model, key, timeout_s=5)
    if kind == "openrouter":
        return OpenAICompatProvider("openrouter", f"{base}/openrouter/api/v1", model, key, 5)
    return OpenAICompatProvider("openai", f"{base}/openai/v1", model, key, timeout_s=5)


KINDS = ["openai", "openrouter", "anthropic"]


@pytest.fixture(params=KINDS)
async def kind(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    yield str(request.param)


async def collect(provider: Provider) -> tuple[list[str], Completion]:
    pieces: list[str] = []
    final: Completion | None = None
    async for item in provider.stream(REQUEST):
        if isinstance(item, Delta):
            pieces.append(item.text)
        else:
            final = item
    assert final is not None
    return pieces, final


async def test_complete_and_stream_agree(sim_llm: str, kind: str) -> None:
    provider = make(kind, sim_llm)
    try:
        whole = await provider.complete(REQUEST)
        assert whole.text.startswith("Sim reply ") and "hello there" in whole.text
        assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
        assert not whole.usage.estimated
        pieces, final = await collect(provider)
        assert len(pieces) > 1 and "".join(pieces) == final.text == whole.text
        assert final.usage.completion_tokens == whole.usage.completion_tokens
        if kind == "openrouter":
            assert final.usage.cost is not None and final.usage.cost > 0
    finally:
        await provider.close()


async def test_keepalives_and_pings_are_skipped(sim_llm: str, kind: str) -> None:
    provider = make(kind, sim_llm, "sim:keepalive=1")
    try:
        pieces, final = await collect(provider)
        assert "".join(pieces) == final.text and "PROCESSING" not in final.text
    finally:
        await provider.close()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 529])
async def test_retryable_statuses(sim_llm: str, kind: str, status: int) -> None:
    provider = make(kind, sim_llm, f"sim:status={status}")
    try:
        with pytest.raises(RetryableError) as info:
            await provider.complete(REQUEST)
        assert info.value.status == status and not isinstance(info.value, PermanentError)
    finally:
        await provider.close()


@pytest.mark.parametrize("status", [400, 402, 403, 404])
async def test_permanent_statuses(sim_llm: str, kind: str, status: int) -> None:
    provider = make(kind, sim_llm, f"sim:status={status}")
    try:
        with pytest.raises(PermanentError) as info:
            await provider.complete(REQUEST)
        assert info.value.status == status and not info.value.retryable
    finally:
        await provider.close()


async def test_bad_key_is_permanent(sim_llm: str, kind: str) -> None:
    provider = make(kind, sim_llm, key="sk-invalid")
    try:
        with pytest.raises(PermanentError) as info:
            await provider.complete(REQUEST)
        assert info.value.status == 401
        assert "sk-invalid" not in str(info.value)
    finally:
        await provider.close()


async def test_insufficient_quota_429_is_permanent(sim_llm: str) -> None:
    provider = make("openai", sim_llm, "sim:status=429;code=insufficient_quota")
    try:
        with pytest.raises(PermanentError, match="insufficient_quota"):
            await provider.complete(REQUEST)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("script", "low", "high"),
    [
        ("retry_after=7", 7.0, 7.0),
        ("retry_after_ms=1500", 1.5, 1.5),
        ("retry_after_date=9", 6.5, 9.0),  # an HTTP date has one-second resolution
        ("retry_after=100000", 60.0, 60.0),  # capped
    ],
)
async def test_retry_after_is_read(sim_llm: str, script: str, low: float, high: float) -> None:
    provider = make("openai", sim_llm, f"sim:status=429;{script}")
    try:
        with pytest.raises(RetryableError) as info:
            await provider.complete(REQUEST)
        assert info.value.retry_after is not None and low <= info.value.retry_after <= high
    finally:
        await provider.close()


async def test_malformed_json_is_retryable(sim_llm: str, kind: str) -> None:
    provider = make(kind, sim_llm, "sim:malformed=1")
    try:
        with pytest.raises(RetryableError, match="malformed JSON"):
            await provider.complete(REQUEST)
    finally:
        await provider.close()


@pytest.mark.parametrize(("script", "chunks_before"), [("cut_after=0", 0), ("cut_after=2", 2)])
async def test_a_cut_stream_is_an_error_not_a_short_success(
    sim_llm: str, kind: str, script: str, chunks_before: int
) -> None:
    provider = make(kind, sim_llm, f"sim:{script}")
    pieces: list[str] = []
    try:
        with pytest.raises(StreamBroken, match="stream ended without") as info:
            async for item in provider.stream(REQUEST):
                assert isinstance(item, Delta), "a cut stream must not complete"
                pieces.append(item.text)
        assert len(pieces) == chunks_before and info.value.text == "".join(pieces)
    finally:
        await provider.close()


async def test_an_error_after_200_is_an_error(sim_llm: str, kind: str) -> None:
    provider = make(kind, sim_llm, "sim:error_after=1")
    try:
        with pytest.raises(StreamBroken, match="error mid-stream") as info:
            async for _ in provider.stream(REQUEST):
                pass
        assert info.value.retryable and info.value.text  # one chunk had arrived
    finally:
        await provider.close()


async def test_unreachable_and_slow_providers_are_retryable(sim_llm: str) -> None:
    dead = OpenAICompatProvider("dead", "http://127.0.0.1:1/v1", "m", "k", timeout_s=2)
    slow = OpenAICompatProvider(
        "slow", f"{sim_llm}/openai/v1", "sim:latency_ms=3000", "k", timeout_s=0.3
    )
    try:
        with pytest.raises(RetryableError, match="connection"):
            await dead.complete(REQUEST)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="timed out"):
            await slow.complete(REQUEST)
        assert time.monotonic() - started < 2.5
    finally:
        await dead.close()
        await slow.close()
