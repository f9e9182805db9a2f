"""What the rest of VIBEE needs from the coordinator (one Protocol per concern)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Cache(Protocol):
    """A shared byte cache with per-entry TTL (the AI response cache lives here)."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a rate limiter for one hit.

    ``remaining`` is how many more hits would be allowed right now, ``retry_after_s`` how
    long to wait before the next hit is allowed (0 when this one was), and ``reset_s`` how
    long until the limit is fully replenished.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_s: float


class RateLimiter(Protocol):
    """Rate limits shared by every instance (GCRA: ``limit`` hits per ``period_s``, bursts
    of up to ``limit``)."""

    async def hit(self, key: str, limit: int, period_s: float, cost: int = 1) -> Decision:
        """Count ``cost`` hits on ``key`` if the limit allows them; a refused hit is not
        counted."""
        ...
