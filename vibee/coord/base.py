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


class CoordinationUnavailable(Exception):
    """Redis cannot be reached: what needs the other instances cannot be done now."""


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to run one Telegram session: held by one instance at a time.

    ``epoch`` grows with every new holder (a fencing token: Postgres writes for the session
    carry it and are refused once a newer holder exists); ``token`` is what Redis stores,
    so that only this holder can renew or release it.
    """

    session_id: int
    epoch: int
    token: str


class Leases(Protocol):
    """Session leases (``SET NX PX`` + an ``INCR`` epoch in Redis; trivial locally)."""

    async def acquire(self, session_id: int, floor_epoch: int) -> Lease | None:
        """The lease if nobody holds it (its epoch above ``floor_epoch``, the last one
        Postgres saw), else None. Also None during the grace period after Redis lost its
        data, when a holder may still be connected without Redis knowing it."""
        ...

    async def renew(self, leases: list[Lease]) -> list[bool]:
        """Extend each lease by the lease time; False for a lease another instance holds.
        Raises :class:`CoordinationUnavailable` when Redis cannot answer."""
        ...

    async def release(self, leases: list[Lease]) -> None:
        """Give the leases up (only those still ours) so that a peer takes over at once."""
        ...


class Membership(Protocol):
    """The live instances (heartbeat keys in Redis; just this one locally)."""

    @property
    def instance_id(self) -> str:
        """This instance's name among its peers."""
        ...

    async def heartbeat(self) -> list[str]:
        """Say this instance is alive; returns every live instance, this one included."""
        ...

    async def leave(self) -> None:
        """Stop being a member now (a graceful shutdown), so placement skips this one."""
        ...
