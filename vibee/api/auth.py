"""Who is calling: the bearer token → the user, and the limits on password hashing.

:class:`Authenticator` turns ``Authorization: Bearer <access token>`` into the user's
:class:`~vibee.store.users.AuthState`, refusing a missing or bad token (401), a token of an
older generation (401: the password changed since), a deleted user (401) and a disabled
one (403).

The user row comes from :class:`UserCache`: at most ``ttl_s`` seconds old, invalidated
in this process whenever the API changes the user. A change made elsewhere (another
instance, ``vibee user disable``, the admin endpoint of another process) is seen within
``ttl_s`` seconds; ``ttl_s = 0`` reads the row on every request. A token of a newer
generation than the cached row means the cache is stale and is re-read at once.

:class:`HashGate` bounds how many argon2 hashes run at once (each takes tens of ms of CPU
and 64 MiB) and how many requests may wait for one; beyond that the API answers 503.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web

from vibee.api.access import AccessTokens, TokenRejected
from vibee.api.errors import Forbidden, Unauthorized, Unavailable
from vibee.store import users
from vibee.store.users import AuthState

PoolSource = Callable[[], asyncpg.Pool]


def new_refresh_token() -> str:
    """A fresh opaque refresh token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class UserCache:
    """User rows by id, each kept at most ``ttl_s`` seconds; at most ``max_entries``."""

    def __init__(
        self,
        ttl_s: float = 2.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """An empty cache; ``ttl_s = 0`` caches nothing."""
        self._ttl = ttl_s
        self._max = max(1, max_entries)
        self._clock = clock
        self._entries: dict[int, tuple[float, AuthState]] = {}

    def get(self, user_id: int) -> AuthState | None:
        """The cached row, or None when absent or too old."""
        found = self._entries.get(user_id)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[user_id]
            return None
        return found[1]

    def put(self, state: AuthState) -> None:
        """Remember ``state`` for ``ttl_s`` seconds."""
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max and state.user.id not in self._entries:
            now = self._clock()
            for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
                del self._entries[key]
            if len(self._entries) >= self._max:
                for key in list(self._entries)[: max(1, self._max // 10)]:
                    del self._entries[key]
        self._entries[state.user.id] = (self._clock() + self._ttl, state)

    def invalidate(self, user_id: int) -> None:
        """Forget the user (after changing it)."""
        self._entries.pop(user_id, None)


class Authenticator:
    """Bearer access token → the enabled user it belongs to."""

    def __init__(self, tokens: AccessTokens, pool: PoolSource, cache: UserCache) -> None:
        """Verifies with ``tokens``, reads users through ``cache`` then ``pool``."""
        self._tokens = tokens
        self._pool = pool
        self._cache = cache

    async def authenticate(self, request: web.Request) -> AuthState:
        """The caller's user. Raises Unauthorized (401) or Forbidden (403)."""
        header = request.headers.get("Authorization")
        if not header:
            raise Unauthorized("send Authorization: Bearer <access token>")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send Authorization: Bearer <access token>")
        return await self.authenticate_token(token)

    async def authenticate_token(self, token: str) -> AuthState:
        """The user of access token ``token`` (however it was sent). Raises Unauthorized
        (401) or Forbidden (403)."""
        try:
            claims = self._tokens.verify(token)
        except TokenRejected as exc:
            raise Unauthorized(exc.reason, title="Invalid token", invalid_token=True) from None
        state = self._cache.get(claims.user_id)
        if state is None or state.generation < claims.generation:
            state = await users.get_auth_state(self._pool(), claims.user_id)
            if state is None:
                raise Unauthorized(
                    "the token's user no longer exists", title="Invalid token", invalid_token=True
                )
            self._cache.put(state)
        if claims.generation != state.generation:
            raise Unauthorized(
                "the token was revoked (the password changed); log in again",
                title="Invalid token",
                invalid_token=True,
            )
        if state.user.disabled:
            raise Forbidden(
                "this account is disabled", title="Account disabled", slug="account-disabled"
            )
        return state


class HashGate:
    """At most ``slots`` password hashes at once and ``max_waiting`` requests queued."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        """A gate with ``slots`` concurrent hashes and a queue of ``max_waiting``."""
        self._slots = asyncio.Semaphore(max(1, slots))
        self._max_waiting = max(0, max_waiting)
        self._waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one hashing slot; raises Unavailable (503) when the queue is full."""
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise Unavailable("too many logins at once; retry in a second", title="Busy")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
