"""The API's rate limits, enforced through the coordinator's :class:`RateLimiter`.

Limits (all per minute)::

    api        per user; the user's tier's ``api_per_minute`` (100 on the free tier)
    auth_ip    per client address, on register and login (brute force)
    token_ip   per client address, on refresh and logout
    password   per user, on password change (brute force of the current password)

A client address is the peer's IP; an IPv6 client is keyed by its /64 (one host usually
owns a whole /64). Behind a reverse proxy every client shares the proxy's address: set the
per-address limits accordingly (trusting ``X-Forwarded-For`` is not implemented).

A refused request gets 429 with ``Retry-After`` (whole seconds) and, like every answer of
a limited route, ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``
(seconds until the limit is fully replenished), and counts in
``vibee_rate_limited_total{limit}``.
"""

from __future__ import annotations

import ipaddress
import math
from enum import StrEnum

from aiohttp import web

from vibee.api.errors import RateLimited, Unavailable
from vibee.api.metrics import RATE_LIMITED
from vibee.api.tiers import Tiers
from vibee.coord.base import CoordinationUnavailable, Decision, RateLimiter
from vibee.store.users import AuthState

PERIOD_S = 60.0


class Limit(StrEnum):
    """The rate limits a route can be subject to."""

    API = "api"
    AUTH_IP = "auth_ip"
    TOKEN_IP = "token_ip"  # noqa: S105 - a limit name, not a secret
    PASSWORD = "password"  # noqa: S105 - a limit name, not a secret


_PREFIX = {limit: f"{limit.value}:" for limit in Limit}


def client_address(request: web.Request) -> str:
    """The key of the calling host: its IPv4 address, or the /64 of its IPv6 address."""
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return remote


def headers(decision: Decision) -> dict[str, str]:
    """The ``RateLimit-*`` headers (and ``Retry-After`` when refused) for ``decision``."""
    result = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }
    if not decision.allowed:
        result["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
    return result


class RateLimits:
    """Checks one request against one limit."""

    def __init__(
        self,
        limiter: RateLimiter,
        tiers: Tiers,
        auth_per_minute_per_ip: int = 10,
        token_per_minute_per_ip: int = 60,
    ) -> None:
        """Limits through ``limiter``; per-user limits come from ``tiers``."""
        self._limiter = limiter
        self._tiers = tiers
        self._per_ip = {
            Limit.AUTH_IP: auth_per_minute_per_ip,
            Limit.TOKEN_IP: token_per_minute_per_ip,
        }
        self._password = auth_per_minute_per_ip

    async def check(
        self, limit: Limit, request: web.Request, state: AuthState | None
    ) -> dict[str, str]:
        """Count the request; its ``RateLimit-*`` headers. Raises RateLimited (429)."""
        if limit is Limit.API or limit is Limit.PASSWORD:
            if state is None:
                raise ValueError(f"the {limit} limit needs an authenticated user")
            if limit is Limit.API:
                per_minute = self._tiers.limits(state.user.subscription_tier).api_per_minute
            else:
                per_minute = self._password
            key = _PREFIX[limit] + str(state.user.id)
        else:
            per_minute = self._per_ip[limit]
            key = _PREFIX[limit] + client_address(request)
        try:
            decision = await self._limiter.hit(key, per_minute, PERIOD_S)
        except CoordinationUnavailable:
            # the limit is shared by every instance: none may decide it alone
            raise Unavailable(
                "the instances cannot share rate limits now (Redis does not answer); retry shortly",
                title="Coordination unavailable",
            ) from None
        found = headers(decision)
        if not decision.allowed:
            RATE_LIMITED.labels(limit.value).inc()
            raise RateLimited(
                f"the {limit.value} limit allows {per_minute} requests per minute; "
                f"retry in {found['Retry-After']} s",
                headers=found,
            )
        return found
