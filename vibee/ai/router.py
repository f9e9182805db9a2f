"""The fallback chain: moderation, cache, quota, then each provider in order.

For one request the router:

1. refuses input the moderation filter flags (``Refusal("input_flagged")``);
2. answers from the response cache when it can (key: sha256 of the normalized request and
   the user's scope; canned and partial answers are never cached);
3. reserves one request and a token estimate against the user's daily quota, atomically
   in Postgres (``Refusal("quota")`` when exhausted), and reconciles with the provider's
   usage afterwards;
4. tries each provider of the chain in order. An open circuit breaker is skipped at once.
   Retryable failures are retried with backoff and full jitter (honouring Retry-After)
   up to ``retry_attempts`` times while the request's deadline allows, then the next
   provider is asked; permanent failures (bad key, no credits, 4xx) go straight to the
   next. Predefined replies (the ``canned`` provider) are the last resort;
5. refuses output the moderation filter flags (``Refusal("output_flagged")``): it is
   never sent.

Streaming: a provider failing before any text was shown is retried, then replaced by
the next provider, exactly as above. Once text has been shown, nothing is asked again:
the stream finishes with what arrived and the Completion is marked ``partial``.

Tracing (:mod:`vibee.obs.tracing`, when on): :meth:`Router.complete` is the span
``ai.complete`` (outcome, provider, fallbacks), with one ``ai.attempt`` child per provider
attempt (provider, attempt number, outcome as in ``vibee_ai_requests_total``, model,
tokens). :meth:`Router.stream` is not traced: a span current across an async generator's
``yield`` would leak into the consumer's context.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import orjson

from vibee.ai import metrics
from vibee.ai.base import (
    ChatRequest,
    Completion,
    Delta,
    Provider,
    ProviderError,
    RetryableError,
    StreamBroken,
    Usage,
    estimate_tokens,
)
from vibee.ai.moderation import LocalModeration, RemoteModeration
from vibee.coord.base import Cache
from vibee.obs import tracing
from vibee.runtime.breaker import CircuitBreaker, CircuitOpenError
from vibee.runtime.retry import RetryPolicy, retry, retry_after_of

log = logging.getLogger("vibee.ai.router")

RefusalReason = Literal["input_flagged", "output_flagged", "quota", "no_provider"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """No reply for this request, and why. ``fallbacks`` lists what was tried."""

    reason: RefusalReason
    detail: str
    fallbacks: tuple[str, ...] = ()


Answer = Completion | Refusal


class Quota:
    """Reserve before a call, reconcile after it (see :mod:`vibee.store.usage`)."""

    def __init__(
        self,
        reserve: Callable[[int, int], Awaitable[bool]],
        reconcile: Callable[[int, int, int, float | None], Awaitable[None]],
        release: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self.reserve = reserve
        self.reconcile = reconcile
        self.release = release


class _Counters:
    """One provider's metric children, resolved once (``labels()`` is not free)."""

    def __init__(self, provider: str, model: str) -> None:
        self.ok = metrics.AI_REQUESTS.labels(provider, "ok")
        self.duration = metrics.AI_DURATION.labels(provider)
        self.prompt_tokens = metrics.AI_TOKENS.labels(provider, model, "prompt")
        self.completion_tokens = metrics.AI_TOKENS.labels(provider, model, "completion")
        self.cost = metrics.AI_COST.labels(provider)


@dataclass(slots=True)
class ProviderSlot:
    """A provider with its own circuit breaker and concurrency limit."""

    provider: Provider
    breaker: CircuitBreaker
    limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(64))
    timeout_s: float = math.inf
    """The provider's own timeout per attempt; the router adds one only when the request's
    deadline is nearer."""
    counters: _Counters = field(init=False)

    def __post_init__(self) -> None:
        self.counters = _Counters(self.provider.name, self.provider.model)

    @property
    def name(self) -> str:
        """The provider's name in the chain."""
        return self.provider.name


def counts_against_breaker(error: BaseException) -> bool:
    """Retryable failures, timeouts and bad credentials open the breaker; a 400 does not."""
    if isinstance(error, ProviderError):
        return error.retryable or error.status in (401, 402, 403)
    return isinstance(error, TimeoutError | OSError)


def _permanent(error: BaseException) -> bool:
    if isinstance(error, CircuitOpenError):
        return True
    return isinstance(error, ProviderError) and not error.retryable


def _outcome(error: BaseException) -> str:
    if isinstance(error, CircuitOpenError):
        return "open"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ProviderError):
        return "retryable" if error.retryable else "permanent"
    return "error"


class Router:
    """The fallback chain with cache, quota and moderation around it."""

    def __init__(
        self,
        slots: Sequence[ProviderSlot],
        *,
        cache: Cache | None = None,
        cache_ttl_s: float = 3600,
        moderation: LocalModeration | None = None,
        remote_moderation: RemoteModeration | None = None,
        quota: Quota | None = None,
        timeout_s: float = 30.0,
        retry_attempts: int = 3,
        base_delay_s: float = 0.5,
        max_delay_s: float = 8.0,
    ) -> None:
        if not slots:
            raise ValueError("the chain needs at least one provider")
        self.slots = list(slots)
        self._cache = cache
        self._cache_ttl = cache_ttl_s
        self._moderation = moderation
        self._remote = remote_moderation
        self._quota = quota
        self._timeout = timeout_s
        self._attempts = max(1, retry_attempts)
        self._base_delay = base_delay_s
        self._max_delay = max_delay_s
        signature = "|".join(f"{s.name}={s.provider.model}" for s in self.slots)
        self._signature = signature.encode()

    def cache_key(self, request: ChatRequest) -> str:
        """sha256 of the normalized request, the chain and the user's scope."""
        normalized = orjson.dumps(
            [
                request.scope,
                request.system.strip(),
                [(m.role, m.content.strip()) for m in request.messages],
                round(request.temperature, 3),
                request.max_tokens,
            ]
        )
        return "ai:" + hashlib.sha256(self._signature + b"\0" + normalized).hexdigest()

    @property
    def _caching(self) -> bool:
        return self._cache is not None and self._cache_ttl > 0

    async def _cached(self, key: str) -> Completion | None:
        if self._cache is None or not key:
            return None
        raw = await self._cache.get(key)
        if raw is None:
            return None
        text, provider, model, prompt, completion = orjson.loads(raw)
        metrics.AI_CACHE_HITS.inc()
        return Completion(text, provider, model, Usage(prompt, completion), cached=True)

    async def _remember(self, key: str, answer: Completion) -> None:
        if self._cache is None or not key or answer.canned or answer.partial:
            return
        usage = answer.usage
        value = (answer.text, answer.provider, answer.model)
        counts = (usage.prompt_tokens, usage.completion_tokens)
        await self._cache.set(key, orjson.dumps(value + counts), self._cache_ttl)

    def _estimate(self, request: ChatRequest) -> int:
        prompt = request.system + "".join(m.content for m in request.messages)
        return estimate_tokens(prompt) + request.max_tokens

    async def _flagged_remotely(self, text: str) -> str | None:
        if self._remote is None:
            return None
        try:
            flagged = await self._remote.flagged(text)
        except ProviderError as exc:  # fail open: the local filter has already run
            log.warning("remote moderation unavailable", extra={"reason": exc.reason})
            return None
        return "flagged by the moderation endpoint" if flagged else None

    async def _admit(self, request: ChatRequest, user_id: int | None) -> Refusal | None:
        if self._moderation is not None and request.messages:
            last = request.messages[-1].content
            reason = self._moderation.check_input(last) or await self._flagged_remotely(last)
            if reason:
                metrics.AI_REFUSALS.labels("input_flagged").inc()
                return Refusal("input_flagged", reason)
        if (
            self._quota is not None
            and user_id is not None
            and not await self._quota.reserve(user_id, self._estimate(request))
        ):
            metrics.AI_REFUSALS.labels("quota").inc()
            return Refusal("quota", "the daily AI quota is used up")
        return None

    async def _finish(
        self, request: ChatRequest, user_id: int | None, answer: Completion | None, key: str
    ) -> Answer | None:
        """Account, moderate and cache a finished answer (None: nothing answered)."""
        if self._quota is not None and user_id is not None:
            estimate = self._estimate(request)
            if answer is None:
                await self._quota.release(user_id, estimate)
            else:
                actual = answer.usage.total_tokens
                await self._quota.reconcile(user_id, estimate, actual, answer.usage.cost)
        if answer is None:
            return None
        if self._moderation is not None:
            reason = self._moderation.check_output(answer.text)
            if not reason and not answer.canned:
                reason = await self._flagged_remotely(answer.text)
            if reason:
                metrics.AI_REFUSALS.labels("output_flagged").inc()
                return Refusal("output_flagged", reason, answer.fallbacks)
        await self._remember(key, answer)
        return answer

    def _account(self, slot: ProviderSlot, answer: Completion, started: float) -> None:
        counters = slot.counters
        counters.ok.inc()
        counters.duration.observe(time.monotonic() - started)
        usage = answer.usage
        counters.prompt_tokens.inc(usage.prompt_tokens)
        counters.completion_tokens.inc(usage.completion_tokens)
        if usage.cost:
            counters.cost.inc(usage.cost)

    async def complete(self, request: ChatRequest, user_id: int | None = None) -> Answer:
        """One answer through the chain (see the module docstring); traced as
        ``ai.complete`` with one ``ai.attempt`` child per provider attempt."""
        with tracing.span("ai.complete") as span:
            answer = await self._complete(request, user_id)
            if span.recording:
                if isinstance(answer, Completion):
                    span.set(outcome="cached" if answer.cached else "ok", provider=answer.provider)
                else:
                    span.set(outcome=answer.reason)
                span.set(fallbacks=len(answer.fallbacks))
            return answer

    async def _complete(self, request: ChatRequest, user_id: int | None) -> Answer:
        key = ""
        if self._caching:
            key = self.cache_key(request)
            hit = await self._cached(key)
            if hit is not None:
                return hit
        if self._moderation is not None or self._quota is not None:
            refused = await self._admit(request, user_id)
            if refused is not None:
                return refused
        deadline = time.monotonic() + self._timeout
        fallbacks: list[str] = []
        answer: Completion | None = None
        try:
            for slot in self.slots:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    fallbacks.append(f"{slot.name}: no time left")
                    continue
                try:
                    answer = await self._ask(slot, request, deadline)
                except (ProviderError, CircuitOpenError, TimeoutError) as exc:
                    metrics.AI_REQUESTS.labels(slot.name, _outcome(exc)).inc()
                    fallbacks.append(f"{slot.name}: {_reason(exc)}")
                    continue
                if fallbacks:
                    answer = replace(answer, fallbacks=tuple(fallbacks))
                break
        finally:
            plain = not key and self._quota is None and self._moderation is None
            finished = answer if plain else await self._finish(request, user_id, answer, key)
        if finished is None:
            metrics.AI_REFUSALS.labels("no_provider").inc()
            return Refusal("no_provider", "no provider answered", tuple(fallbacks))
        return finished

    async def _ask(self, slot: ProviderSlot, request: ChatRequest, deadline: float) -> Completion:
        number = 0

        async def attempt() -> Completion:
            nonlocal number
            number += 1
            with tracing.span("ai.attempt", provider=slot.name, attempt=number) as span:
                started = time.monotonic()
                try:
                    with slot.breaker.guard(is_failure=counts_against_breaker):
                        async with slot.limit:
                            if deadline - time.monotonic() >= slot.timeout_s:
                                answer = await slot.provider.complete(request)
                            else:
                                async with asyncio.timeout_at(_loop_deadline(deadline)):
                                    answer = await slot.provider.complete(request)
                except BaseException as exc:
                    if span.recording:
                        span.set(outcome=_span_outcome(exc))
                    raise
                self._account(slot, answer, started)
                if span.recording:
                    span.set(outcome="ok", model=answer.model, tokens=answer.usage.total_tokens)
                return answer

        def on_retry(number: int, error: BaseException, delay: float) -> None:
            metrics.AI_REQUESTS.labels(slot.name, _outcome(error)).inc()

        policy = RetryPolicy(
            max_attempts=self._attempts,
            base_delay=self._base_delay,
            max_delay=self._max_delay,
            deadline=max(0.0, deadline - time.monotonic()),
            permanent=_permanent,
        )
        return await retry(attempt, policy, on_retry=on_retry)

    async def stream(
        self, request: ChatRequest, user_id: int | None = None
    ) -> AsyncIterator[Delta | Answer]:
        """Deltas as they are written, then one Answer (see the module docstring)."""
        key = self.cache_key(request) if self._caching else ""
        hit = await self._cached(key)
        if hit is not None:
            yield Delta(hit.text)
            yield hit
            return
        refused = await self._admit(request, user_id)
        if refused is not None:
            yield refused
            return
        deadline = time.monotonic() + self._timeout
        fallbacks: list[str] = []
        answer: Completion | None = None
        try:
            for slot in self.slots:
                shown: list[str] = []
                for number in range(1, self._attempts + 1):
                    started = time.monotonic()
                    try:
                        with slot.breaker.guard(is_failure=counts_against_breaker):
                            async with slot.limit:
                                async with asyncio.timeout_at(_loop_deadline(deadline)):
                                    async for item in slot.provider.stream(request):
                                        if isinstance(item, Delta):
                                            shown.append(item.text)
                                            yield item
                                        else:
                                            answer = item
                    except (ProviderError, CircuitOpenError, TimeoutError) as exc:
                        metrics.AI_REQUESTS.labels(slot.name, _outcome(exc)).inc()
                        if shown:  # the user saw text: finish with it, ask nobody else
                            fallbacks.append(f"{slot.name}: {_reason(exc)} (partial)")
                            usage = Usage(0, estimate_tokens("".join(shown)), estimated=True)
                            answer = Completion(
                                "".join(shown), slot.name, slot.provider.model, usage, partial=True
                            )
                            break
                        delay = self._delay(number, exc, deadline)
                        if delay is None:
                            fallbacks.append(f"{slot.name}: {_reason(exc)}")
                            break
                        await asyncio.sleep(delay)
                        continue
                    if answer is not None:
                        self._account(slot, answer, started)
                    break
                if answer is not None:
                    answer = replace(answer, fallbacks=tuple(fallbacks))
                    break
        finally:
            finished = await self._finish(request, user_id, answer, key)
        if finished is None:
            metrics.AI_REFUSALS.labels("no_provider").inc()
            yield Refusal("no_provider", "no provider answered", tuple(fallbacks))
        else:
            yield finished

    def _delay(self, attempt: int, error: BaseException, deadline: float) -> float | None:
        """Seconds before the next attempt at the same provider, or None to move on."""
        if _permanent(error) or attempt >= self._attempts:
            return None
        hinted = retry_after_of(error)
        cap = min(self._max_delay, self._base_delay * 2 ** (attempt - 1))
        delay = hinted if hinted is not None else random.random() * cap
        return delay if time.monotonic() + delay < deadline else None

    async def close(self) -> None:
        """Close every provider's connections."""
        for slot in self.slots:
            await slot.provider.close()


def _span_outcome(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return _outcome(error)


def _loop_deadline(deadline: float) -> float:
    """Convert a ``time.monotonic`` deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _reason(error: BaseException) -> str:
    if isinstance(error, CircuitOpenError):
        return "circuit open"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, StreamBroken | RetryableError | ProviderError):
        return error.reason
    return error.__class__.__name__
