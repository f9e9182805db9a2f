"""Session leases: at most one instance runs a Telegram session at a time.

Telegram destroys a session used by two connections at once (``AUTH_KEY_DUPLICATED``),
so every instance connects a session only while it holds that session's lease.

In Redis (:class:`RedisLeases`) a lease is a key ``<prefix>:lease:<id>`` holding
``<instance>/<epoch>``, set with ``NX PX`` (REFERENCE.md, "Coordination"):

* **acquire** succeeds only when the key is absent; the epoch comes from ``INCR
  <prefix>:epoch:<id>``, raised above the epoch Postgres last saw (Redis may have lost
  its counters), and is the fencing token Postgres checks;
* **renew** extends the keys still holding our value, in one script for all of an
  instance's leases; a key that vanished (Redis restarted empty) is written again — its
  holder never stopped holding it — while a key holding another value is lost;
* **release** deletes only keys still holding our value (a graceful shutdown).

Redis restarted without its data forgets every lease while their holders are still
connected. The scripts therefore keep a *birth* key (``<prefix>:born``, Redis's clock in
ms when this Redis's data began); for one lease time after it, ``acquire`` refuses: a
holder renews (re-creating its key) within that time or has disconnected by its renew
deadline. That is "a new owner waits out the full lease".

:class:`LocalLeases` is the single-instance version: every lease is granted, the epoch
one above Postgres's.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vibee.coord.base import CoordinationUnavailable, Lease

# Every script starts with this: Redis's clock in ms, and the birth of its data.
_BORN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local born = tonumber(redis.call('GET', KEYS[1]) or '-1')
if born < 0 then
  born = now
  redis.call('SET', KEYS[1], now)
end
"""

# KEYS = born, lease, epoch; ARGV = instance, lease_ms, floor_epoch
# → {1, epoch} acquired | {0, pttl} held by someone | {-1, ms} in the grace period
_ACQUIRE = (
    _BORN
    + """
local lease_ms = tonumber(ARGV[2])
if now < born + lease_ms then return {-1, born + lease_ms - now} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, redis.call('PTTL', KEYS[2])} end
local epoch = redis.call('INCR', KEYS[3])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[3], epoch)
end
redis.call('SET', KEYS[2], ARGV[1] .. '/' .. epoch, 'PX', lease_ms)
return {1, epoch}
"""
)

# KEYS = born, lease…; ARGV = lease_ms, token… → one 1/0 per lease
_RENEW = (
    _BORN
    + """
local out = {}
for i = 2, #KEYS do
  local current = redis.call('GET', KEYS[i])
  if current == ARGV[i] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i - 1] = 1
  elseif not current then
    redis.call('SET', KEYS[i], ARGV[i], 'PX', ARGV[1])
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""
)

# KEYS = lease…; ARGV = token…
_RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 0
"""


class RedisLeases:
    """Session leases in Redis (see the module docstring)."""

    def __init__(self, client: Redis, instance_id: str, lease_s: float, prefix: str) -> None:
        self._client = client
        self._instance = instance_id
        self._lease_ms = int(lease_s * 1000)
        self._prefix = prefix
        self._born = f"{prefix}:born"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _key(self, session_id: int) -> str:
        return f"{self._prefix}:lease:{session_id}"

    async def acquire(self, session_id: int, floor_epoch: int) -> Lease | None:
        """The lease if nobody holds it and Redis is past its grace period, else None."""
        keys = [self._born, self._key(session_id), f"{self._prefix}:epoch:{session_id}"]
        result = await _call(self._acquire, keys, [self._instance, self._lease_ms, floor_epoch])
        status, value = (int(v) for v in result)
        if status != 1:
            return None
        return Lease(session_id, value, f"{self._instance}/{value}")

    async def renew(self, leases: list[Lease]) -> list[bool]:
        """Extend each lease; False for one another instance holds now."""
        if not leases:
            return []
        keys = [self._born, *(self._key(lease.session_id) for lease in leases)]
        result = await _call(self._renew, keys, [self._lease_ms, *(x.token for x in leases)])
        return [int(v) == 1 for v in result]

    async def release(self, leases: list[Lease]) -> None:
        """Delete the keys still holding our tokens."""
        if leases:
            keys = [self._key(lease.session_id) for lease in leases]
            await _call(self._release, keys, [lease.token for lease in leases])

    async def holder(self, session_id: int) -> str | None:
        """The instance holding the session's lease now, if any."""
        value: Any = await _call_plain(self._client, self._key(session_id))
        if value is None:
            return None
        return bytes(value).decode().rpartition("/")[0]


class LocalLeases:
    """One instance: every lease is granted, one epoch above what Postgres saw."""

    def __init__(self, instance_id: str) -> None:
        self._instance = instance_id

    async def acquire(self, session_id: int, floor_epoch: int) -> Lease:
        """Always granted."""
        epoch = floor_epoch + 1
        return Lease(session_id, epoch, f"{self._instance}/{epoch}")

    async def renew(self, leases: list[Lease]) -> list[bool]:
        """Always still ours."""
        return [True] * len(leases)

    async def release(self, leases: list[Lease]) -> None:
        """Nothing to give up."""

    async def holder(self, session_id: int) -> str | None:
        """This instance runs every session."""
        return self._instance


async def _call(script: Any, keys: list[str], args: list[Any]) -> Any:
    try:
        return await script(keys=keys, args=args)
    except RedisError as exc:
        raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc


async def _call_plain(client: Redis, key: str) -> Any:
    try:
        return await client.get(key)
    except RedisError as exc:
        raise CoordinationUnavailable(f"Redis: {type(exc).__name__}") from exc
