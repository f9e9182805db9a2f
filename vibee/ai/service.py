"""Builds the router from the configuration: providers, breakers, cache, quota, moderation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from vibee.ai.base import Provider
from vibee.ai.embeddings import EmbeddingsClient
from vibee.ai.moderation import LocalModeration, RemoteModeration
from vibee.ai.providers.anthropic import AnthropicProvider
from vibee.ai.providers.canned import DEFAULT_REPLIES, CannedProvider
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Quota, Router
from vibee.api.app import settings_from_config
from vibee.api.tiers import TierLimits, Tiers
from vibee.config import AIProviderConfig, Config
from vibee.coord.base import Cache
from vibee.coord.local import LocalCache
from vibee.runtime.breaker import CircuitBreaker
from vibee.secrets import SecretStore
from vibee.store import usage, users

BREAKER_RESET_S = 30.0
OPENROUTER_HEADERS = {"HTTP-Referer": "https://github.com/vibee", "X-Title": "VIBEE"}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A provider of the chain that was left out, and why."""

    name: str
    reason: str


def build_provider(name: str, spec: AIProviderConfig, api_key: str | None) -> Provider:
    """One provider from its configuration table."""
    timeout_s = spec.timeout_ms / 1000
    if spec.kind == "canned":
        return CannedProvider(name)
    if spec.kind == "anthropic":
        return AnthropicProvider(
            name, spec.base_url, spec.model, api_key, timeout_s, spec.max_concurrency
        )
    headers = OPENROUTER_HEADERS if "openrouter.ai" in spec.base_url else None
    return OpenAICompatProvider(
        name,
        spec.base_url,
        spec.model,
        api_key,
        timeout_s,
        spec.max_concurrency,
        models=spec.models,
        extra_headers=headers,
    )


def build_slots(
    config: Config, secrets: SecretStore, threshold: int = 5
) -> tuple[list[ProviderSlot], list[Skipped]]:
    """The chain's providers, each with a breaker and a concurrency limit."""
    slots: list[ProviderSlot] = []
    skipped: list[Skipped] = []
    for name in config.ai.chain:
        spec = config.ai.providers[name]
        key = None
        if spec.kind != "canned":
            secret = secrets.get(f"ai_{name}_api_key")
            if secret is None:
                skipped.append(Skipped(name, f"no API key (secret ai_{name}_api_key)"))
                continue
            key = secret.value
        provider = build_provider(name, spec, key)
        if isinstance(provider, CannedProvider) and config.ai.canned_replies:
            replies: dict[str, dict[str, list[str]]] = {
                lang: {mode: list(texts) for mode, texts in modes.items()}
                for lang, modes in DEFAULT_REPLIES.items()
            }
            for lang, modes in config.ai.canned_replies.items():
                replies.setdefault(lang, {}).update(modes)
            provider = CannedProvider(name, replies)
        breaker = CircuitBreaker(f"ai:{name}", threshold=threshold, reset_timeout=BREAKER_RESET_S)
        limit = asyncio.Semaphore(spec.max_concurrency)
        slots.append(ProviderSlot(provider, breaker, limit, spec.timeout_ms / 1000))
    return slots, skipped


def database_quota(pool: asyncpg.Pool, max_requests: int, max_tokens: int) -> Quota:
    """The daily quota enforced in Postgres (``usage_daily``)."""

    async def reserve(user_id: int, tokens: int) -> bool:
        return await usage.reserve(pool, user_id, tokens, max_requests, max_tokens)

    async def reconcile(user_id: int, estimated: int, actual: int, cost: float | None) -> None:
        await usage.reconcile(pool, user_id, estimated, actual, cost)

    async def release(user_id: int, estimated: int) -> None:
        await usage.release(pool, user_id, estimated)

    return Quota(reserve, reconcile, release)


def build_embeddings(config: Config, secrets: SecretStore) -> EmbeddingsClient | None:
    """The embeddings client for ``ai.embeddings_provider`` (None: retrieval is off)."""
    name = config.ai.embeddings_provider
    if not name:
        return None
    spec = config.ai.providers[name]
    key = secrets.get(f"ai_{name}_api_key")
    return EmbeddingsClient(
        spec.base_url, config.ai.embeddings_model, key.value if key else "", timeout_s=10.0
    )


TIER_TTL_S = 30.0
MAX_CACHED_TIERS = 100_000


def tiered_quota(pool: asyncpg.Pool, tiers: Tiers) -> Quota:
    """The daily quota of each user's subscription tier (``[limits.tiers]``), enforced in
    Postgres. A user's tier is cached for ``TIER_TTL_S`` (a change applies within it)."""
    cache: dict[int, tuple[float, TierLimits]] = {}

    async def limits_of(user_id: int) -> TierLimits:
        now = time.monotonic()
        found = cache.get(user_id)
        if found is not None and found[0] > now:
            return found[1]
        state = await users.get_auth_state(pool, user_id)
        limits = tiers.limits(state.user.subscription_tier if state is not None else "")
        if len(cache) >= MAX_CACHED_TIERS:
            cache.clear()
        cache[user_id] = (now + TIER_TTL_S, limits)
        return limits

    async def reserve(user_id: int, tokens: int) -> bool:
        limits = await limits_of(user_id)
        return await usage.reserve(
            pool, user_id, tokens, limits.ai_requests_per_day, limits.ai_tokens_per_day
        )

    async def reconcile(user_id: int, estimated: int, actual: int, cost: float | None) -> None:
        await usage.reconcile(pool, user_id, estimated, actual, cost)

    async def release(user_id: int, estimated: int) -> None:
        await usage.release(pool, user_id, estimated)

    return Quota(reserve, reconcile, release)


def build_router(
    config: Config,
    secrets: SecretStore,
    *,
    pool: asyncpg.Pool | None = None,
    cache: Cache | None = None,
) -> tuple[Router, list[Skipped]]:
    """The router for this configuration, and the providers left out (the caller reports
    them). Without ``pool`` there is no quota."""
    slots, skipped = build_slots(config, secrets)
    if not slots:
        slots = [
            ProviderSlot(
                CannedProvider("canned"), CircuitBreaker("ai:canned"), asyncio.Semaphore(1)
            )
        ]
    ai = config.ai
    moderation = LocalModeration(
        ai.moderation_blocklist, ai.moderation_patterns, ai.max_input_chars, ai.max_output_chars
    )
    remote = None
    if ai.moderation_provider:
        spec = ai.providers[ai.moderation_provider]
        key = secrets.get(f"ai_{ai.moderation_provider}_api_key")
        remote = RemoteModeration(spec.base_url, key.value if key else None, spec.timeout_ms / 1000)
    quota = tiered_quota(pool, settings_from_config(config).tiers) if pool is not None else None
    router = Router(
        slots,
        cache=cache if cache is not None else LocalCache(ai.cache_max_entries),
        cache_ttl_s=ai.cache_ttl_s,
        moderation=moderation,
        remote_moderation=remote,
        quota=quota,
        timeout_s=ai.timeout_ms / 1000,
        retry_attempts=ai.retry_attempts,
    )
    return router, skipped
