"""Which instances are alive, and which of them should run which session.

Membership in Redis (:class:`RedisMembership`) is one sorted set, ``<prefix>:members``:
each instance's score is the time (Redis's clock, ms) its heartbeat expires. One script
adds this instance with a fresh expiry, drops the expired ones and returns the rest, so
one round trip both says "alive" and learns who else is. A graceful shutdown removes the
instance at once (:meth:`RedisMembership.leave`); a killed one drops out when its
heartbeat expires (the lease time: its leases expire then too).

Placement (:func:`place`) is rendezvous hashing: every instance computes, for every
session, a weight per live member and picks the heaviest one with room left
(``telegram.max_sessions``). All instances compute the same answer from the same
members, and when a member leaves only its sessions move.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vibee.coord.base import CoordinationUnavailable

# KEYS = members, born; ARGV = instance, ttl_ms → live member names
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], now) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def default_instance_id() -> str:
    """``<hostname>-<pid>``: unique on one machine and readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisMembership:
    """Heartbeats in a Redis sorted set (see the module docstring)."""

    def __init__(self, client: Redis, instance_id: str, ttl_s: float, prefix: str) -> None:
        self._client = client
        self._id = instance_id
        self._ttl_ms = int(ttl_s * 1000)
        self._key = f"{prefix}:members"
        self._born = f"{prefix}:born"
        self._script = client.register_script(_HEARTBEAT)

    @property
    def instance_id(self) -> str:
        """This instance's name among its peers."""
        return self._id

    async def heartbeat(self) -> list[str]:
        """Renew this instance's membership; every live instance, sorted."""
        try:
            names: Any = await self._script(
                keys=[self._key, self._born], args=[self._id, self._ttl_ms]
            )
        except RedisError as exc:
            raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc
        return sorted(bytes(n).decode() for n in names)

    async def leave(self) -> None:
        """Remove this instance now."""
        try:
            await self._client.zrem(self._key, self._id)
        except RedisError as exc:
            raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc


class LocalMembership:
    """A single instance: the only member."""

    def __init__(self, instance_id: str) -> None:
        self._id = instance_id

    @property
    def instance_id(self) -> str:
        """This instance's name."""
        return self._id

    async def heartbeat(self) -> list[str]:
        """Just this one."""
        return [self._id]

    async def leave(self) -> None:
        """Nothing to leave."""


def weight(member: str, session_id: int) -> int:
    """The rendezvous weight of ``member`` for ``session_id`` (the same everywhere)."""
    digest = hashlib.blake2b(f"{member}\x00{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(session_ids: Iterable[int], members: Iterable[str], capacity: int) -> dict[int, str]:
    """Which member runs each session: the heaviest member with room left, sessions taken
    in id order. Sessions beyond every member's ``capacity`` are left out."""
    names = sorted(set(members))
    load = dict.fromkeys(names, 0)
    placed: dict[int, str] = {}
    if not names:
        return placed
    for session_id in sorted(session_ids):
        ranked = sorted(names, key=lambda m: weight(m, session_id), reverse=True)
        for member in ranked:
            if load[member] < capacity:
                load[member] += 1
                placed[session_id] = member
                break
    return placed
