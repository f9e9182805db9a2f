"""The coordinator: what an instance shares with its peers, in one object.

``redis.url`` empty → one instance: an in-process cache and rate limiter, every session
lease granted, a bus that loops back. ``redis.url`` set → many instances: the AI cache and
the rate limits live in Redis (GCRA on Redis's clock), sessions are placed by rendezvous
hashing over the live members and run under leases, and instances tell each other about
work through pub/sub. Quotas stay in Postgres.

The ``coordinator`` child (:class:`CoordinatorService`, under ``infra``) keeps the
heartbeat going and listens on the bus. When Redis is down: the cache misses, the API's
rate-limited calls answer 503 (the per-user limits are shared, so no instance can decide
alone), leases stop being renewed and the session manager disconnects its sessions before
they can expire; all of it resumes by itself when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from vibee.config import RedisConfig
from vibee.coord.base import Cache, CoordinationUnavailable, Decision, RateLimiter
from vibee.coord.bus import LocalBus, RedisBus
from vibee.coord.leases import LocalLeases, RedisLeases
from vibee.coord.local import LocalCache, LocalRateLimiter
from vibee.coord.membership import LocalMembership, RedisMembership, default_instance_id
from vibee.coord.redis import RedisCache, RedisRateLimiter
from vibee.runtime import Service
from vibee.store.db import with_password

log = logging.getLogger("vibee.coord")

MEMBERS = Gauge("vibee_cluster_members", "Live VIBEE instances, as this instance sees them.")
REDIS_UP = Gauge("vibee_redis_up", "1 when Redis answered the last heartbeat (many instances).")


@dataclass(slots=True)
class Coordinator:
    """Everything shared with the other instances (see the module docstring)."""

    mode: Literal["local", "redis"]
    instance_id: str
    cache: Cache
    limiter: RateLimiter
    leases: LocalLeases | RedisLeases
    membership: LocalMembership | RedisMembership
    bus: LocalBus | RedisBus
    lease_s: float
    renew_deadline_s: float
    retry_s: float
    client: Redis | None = None
    shared: Cache | None = None
    """Small state every instance must see (a pending QR login's code); None with one
    instance. Raises :class:`CoordinationUnavailable` when Redis is down."""
    members: list[str] = field(default_factory=list)
    up: bool = True
    on_members_changed: Callable[[], None] = lambda: None

    @classmethod
    def from_config(
        cls, config: RedisConfig, cache_entries: int = 10_000, password: str | None = None
    ) -> Coordinator:
        """Local without ``url``, Redis with it (the client connects lazily); ``password``
        (the secret ``redis_password``) unless the URL carries one."""
        instance = config.instance_id or default_instance_id()
        timings = (config.lease_s, config.renew_deadline_s, config.retry_s)
        if not config.url:
            return cls(
                "local",
                instance,
                LocalCache(cache_entries),
                LocalRateLimiter(),
                LocalLeases(instance),
                LocalMembership(instance),
                LocalBus(),
                *timings,
                members=[instance],
            )
        client = Redis.from_url(
            with_password(config.url, password),
            socket_timeout=config.retry_s,
            socket_connect_timeout=config.retry_s,
            health_check_interval=30,
            # once, at once: a pooled connection left over from before a Redis restart
            # fails its first command; every command here may run twice harmlessly
            retry=Retry(NoBackoff(), 1),
        )
        prefix = config.key_prefix
        return cls(
            "redis",
            instance,
            TolerantCache(RedisCache(client, f"{prefix}:cache:")),
            StrictLimiter(RedisRateLimiter(client, f"{prefix}:rl:")),
            RedisLeases(client, instance, config.lease_s, prefix),
            RedisMembership(client, instance, config.lease_s, prefix),
            RedisBus(client, instance, prefix),
            *timings,
            client=client,
            shared=StrictCache(RedisCache(client, f"{prefix}:shared:")),
        )

    async def heartbeat(self) -> None:
        """One heartbeat: renew membership, learn the live members."""
        try:
            members = await self.membership.heartbeat()
        except CoordinationUnavailable:
            if self.up:
                log.warning("Redis is unreachable: coordination is down")
            self.up = False
            REDIS_UP.set(0)
            return
        if not self.up:
            log.info("Redis is reachable again")
        self.up = True
        REDIS_UP.set(1)
        MEMBERS.set(len(members))
        if members != self.members:
            log.info("instances changed", extra={"members": members})
            self.members = members
            self.on_members_changed()

    async def ping(self) -> None:
        """Raise unless Redis answers (readiness); nothing to check for one instance."""
        if self.client is None:
            return
        try:
            await self.client.ping()
        except RedisError as exc:
            raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Close the Redis connections."""
        if self.client is not None:
            await self.client.aclose()


class CoordinatorService(Service):
    """The ``coordinator`` child: heartbeats every ``retry_s`` and the bus listener."""

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__("coordinator")
        self._coord = coordinator

    async def on_start(self) -> None:
        """Join at once (so the first placement sees this instance), Redis permitting."""
        await self._coord.heartbeat()

    async def run(self) -> None:
        """Heartbeat and listen until stopped."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._coord.bus.run(), name="coordinator:bus")
            while True:
                await asyncio.sleep(self._coord.retry_s)
                await self._coord.heartbeat()

    async def on_stop(self) -> None:
        """Leave the membership (peers take this instance's sessions at once)."""
        with contextlib.suppress(CoordinationUnavailable):
            await self._coord.membership.leave()


class TolerantCache:
    """A shared cache whose outage is a miss: the AI answers, just uncached."""

    def __init__(self, inner: RedisCache) -> None:
        self._inner = inner

    async def get(self, key: str) -> bytes | None:
        """The value, or None (also when Redis is down)."""
        try:
            return await self._inner.get(key)
        except RedisError:
            return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store it if Redis answers."""
        with contextlib.suppress(RedisError):
            await self._inner.set(key, value, ttl_s)


class StrictCache:
    """Shared state that must be right or absent: Redis down is
    :class:`CoordinationUnavailable`."""

    def __init__(self, inner: RedisCache) -> None:
        self._inner = inner

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent."""
        try:
            return await self._inner.get(key)
        except RedisError as exc:
            raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store it for ``ttl_s`` seconds."""
        try:
            await self._inner.set(key, value, ttl_s)
        except RedisError as exc:
            raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc


class StrictLimiter:
    """A shared limit that no instance may decide alone: Redis down is
    :class:`CoordinationUnavailable` (the API answers 503)."""

    def __init__(self, inner: RedisRateLimiter) -> None:
        self._inner = inner

    async def hit(self, key: str, limit: int, period_s: float, cost: int = 1) -> Decision:
        """Count the hit in Redis."""
        try:
            return await self._inner.hit(key, limit, period_s, cost)
        except RedisError as exc:
            raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc
