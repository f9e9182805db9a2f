"""The single-instance coordinator: an in-process LRU cache with TTLs and a size bound, and
an in-process GCRA rate limiter."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from vibee.coord.base import Decision


class LocalCache:
    """An LRU of at most ``max_entries`` values; expired entries are dropped when read."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds, evicting the least recently used."""
        if ttl_s <= 0:
            return
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class LocalRateLimiter:
    """GCRA (the generic cell rate algorithm) in this process: one float per key.

    A key's state is its *theoretical arrival time* (TAT). Each hit moves it forward by
    ``period_s / limit``; a hit is refused while the TAT would end up more than
    ``period_s`` ahead of now. That allows bursts of ``limit`` and a steady ``limit`` per
    ``period_s``, with no timers and no per-hit history.

    At most ``max_keys`` keys are held: when full, keys whose limit has fully replenished
    are dropped, then (if still full) the oldest tenth. Dropping a key forgets its past
    hits, so under a flood of distinct keys a few may get a fresh allowance.
    """

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._tat: dict[str, float] = {}
        self._max = max_keys
        self._clock = clock

    def __len__(self) -> int:
        return len(self._tat)

    async def hit(self, key: str, limit: int, period_s: float, cost: int = 1) -> Decision:
        """Count ``cost`` hits on ``key`` if the limit allows them (see the class)."""
        return self.hit_now(key, limit, period_s, cost)

    def hit_now(self, key: str, limit: int, period_s: float, cost: int = 1) -> Decision:
        """:meth:`hit` without the coroutine (the same process can call it directly)."""
        if limit < 1 or period_s <= 0 or cost < 1:
            raise ValueError("limit and cost must be at least 1 and period_s positive")
        now = self._clock()
        interval = period_s / limit
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        new_tat = tat + cost * interval
        allow_at = new_tat - period_s
        if allow_at > now:
            return Decision(
                False, limit, _remaining(tat - now, period_s, interval), allow_at - now, tat - now
            )
        if key not in self._tat and len(self._tat) >= self._max:
            self._make_room(now)
        self._tat[key] = new_tat
        return Decision(
            True, limit, _remaining(new_tat - now, period_s, interval), 0.0, new_tat - now
        )

    def _make_room(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        if len(self._tat) >= self._max:
            for key in list(self._tat)[: max(1, self._max // 10)]:
                del self._tat[key]


def _remaining(ahead_s: float, period_s: float, interval: float) -> int:
    """Hits still allowed when the TAT is ``ahead_s`` seconds ahead of now."""
    return max(0, math.floor((period_s - ahead_s) / interval + 1e-9))
