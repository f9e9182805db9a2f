"""What the rest of VIBEE needs from the coordinator (one Protocol per concern)."""

from __future__ import annotations

from typing import Protocol


class Cache(Protocol):
    """A shared byte cache with per-entry TTL (the AI response cache lives here)."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds."""
        ...
