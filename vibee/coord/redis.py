"""The many-instance coordinator's shared parts over Redis: the cache and rate limits.

* :class:`RedisCache` — the AI response cache shared by every instance (``SET … PX``).
* :class:`RedisRateLimiter` — GCRA in one Lua script on Redis's own clock (``TIME``), so
  instances with skewed clocks still share one exact limit and a refused hit costs
  nothing. One key per limit holds the theoretical arrival time in microseconds and
  expires once the limit has fully replenished.

Both satisfy the Protocols of :mod:`vibee.coord.base` and pass the same contract tests as
the local implementations. Leases, membership and command routing (issue "Many
instances") are not here yet.

Exceptions: Redis errors (``redis.exceptions.RedisError``) propagate; the caller decides
(the API answers 503 when coordination is down).
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import Redis

from vibee.coord.base import Decision

# KEYS[1] = the limit's key; ARGV = interval_us, period_us, cost.
# Returns {allowed, tat_ahead_us, retry_after_us} (all integers; Lua has no floats out).
_GCRA = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, new_tat - now, 0}
"""


class RedisCache:
    """A byte cache in Redis with per-entry TTL, keys under ``prefix``."""

    def __init__(self, client: Redis, prefix: str = "vibee:cache:") -> None:
        self._redis = client
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        value: Any = await self._redis.get(self._prefix + key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds (nothing for a TTL of 0 or less)."""
        ttl_ms = int(ttl_s * 1000)
        if ttl_ms <= 0:
            return
        await self._redis.set(self._prefix + key, value, px=ttl_ms)


class RedisRateLimiter:
    """GCRA rate limits shared by every instance (see the module docstring)."""

    def __init__(self, client: Redis, prefix: str = "vibee:rl:") -> None:
        self._redis = client
        self._prefix = prefix
        self._script = client.register_script(_GCRA)

    async def hit(self, key: str, limit: int, period_s: float, cost: int = 1) -> Decision:
        """Count ``cost`` hits on ``key`` if the limit allows them; a refused hit is not
        counted."""
        if limit < 1 or period_s <= 0 or cost < 1:
            raise ValueError("limit and cost must be at least 1 and period_s positive")
        period_us = int(period_s * 1_000_000)
        interval_us = period_us / limit
        result = await self._script(keys=[self._prefix + key], args=[interval_us, period_us, cost])
        allowed, ahead_us, retry_us = (int(v) for v in result)
        remaining = max(0, math.floor((period_us - ahead_us) / interval_us + 1e-9))
        return Decision(
            allowed=bool(allowed),
            limit=limit,
            remaining=remaining,
            retry_after_s=retry_us / 1_000_000,
            reset_s=ahead_us / 1_000_000,
        )
