"""Retry with exponential backoff and full jitter, bounded by attempts and a deadline.

:func:`retry` awaits ``fn()`` until it returns, at most ``policy.max_attempts`` times.
Between attempts it sleeps ``random() * min(max_delay, base_delay * 2**(attempt-1))``
("full jitter"), or exactly the ``retry_after`` seconds an error carries (an attribute
``retry_after: float | None``, e.g. from an HTTP ``Retry-After`` header, a Telegram
FloodWait or :class:`~vibee.runtime.breaker.CircuitOpenError`). It never sleeps past the
overall ``deadline`` (seconds from the first attempt): a jittered delay is cut to the time
left, and when no time is left, or the error's ``retry_after`` reaches past the deadline,
the last error is raised at once. Only ``Exception`` subclasses are retried,
and never those for which ``policy.permanent`` is true (401, 402, "insufficient quota"…);
``CancelledError`` always propagates. When ``retry`` gives up it re-raises the last error
itself (with a note saying so), so callers' ``except`` clauses keep working. The attempt
itself is not interrupted at the deadline: give ``fn`` its own timeout.

Exceptions: none of its own; it raises what ``fn`` raised.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["HasRetryAfter", "RetryPolicy", "retry", "retry_after_of"]

log = logging.getLogger("vibee.runtime")

T = TypeVar("T")


@runtime_checkable
class HasRetryAfter(Protocol):
    """An error that says how long to wait before trying again (seconds, or None)."""

    retry_after: float | None


def _never(_: BaseException) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How :func:`retry` retries. ``deadline`` is in seconds from the first attempt."""

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 10.0
    deadline: float | None = None
    permanent: Callable[[BaseException], bool] = _never

    def __post_init__(self) -> None:
        """Reject policies that cannot work."""
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def backoff_cap(self, attempt: int) -> float:
        """The upper bound of the jittered delay after failed attempt number ``attempt``."""
        return min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 60))


def retry_after_of(error: BaseException) -> float | None:
    """The ``retry_after`` an error carries, if it is a usable number of seconds."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


async def retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``fn()`` until it succeeds or ``policy`` says stop; see the module docstring.

    ``on_retry(attempt, error, delay)`` is called before each sleep (for logs and metrics).
    ``sleep``, ``rand`` and ``clock`` are injectable for tests.
    """
    deadline = None if policy.deadline is None else clock() + policy.deadline
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            if policy.permanent(exc):
                raise
            if attempt >= policy.max_attempts:
                exc.add_note(f"retry: gave up after {attempt} attempts")
                raise
            hinted = retry_after_of(exc)
            delay = hinted if hinted is not None else rand() * policy.backoff_cap(attempt)
            if deadline is not None:
                remaining = deadline - clock()
                if remaining <= 0 or (hinted is not None and hinted > remaining):
                    exc.add_note(f"retry: gave up after {attempt} attempts (deadline)")
                    raise
                delay = min(delay, remaining)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            log.debug(
                "retrying",
                extra={"attempt": attempt, "delay": delay, "error": type(exc).__name__},
            )
        await sleep(delay)
