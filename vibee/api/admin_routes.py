"""Account administration on the admin endpoint (behind the admin token, not the public
API): ``PUT /admin/users/{username}/tier`` {tier} sets a user's subscription tier.

Answers 200 {id, username, subscription_tier}, 404 for an unknown user, 422 for a tier the
configuration does not define or an invalid body (problem+json, like the public API).
Mount with ``build_admin_app(..., admin_routes=tier_routes(...))``.
"""

from __future__ import annotations

from aiohttp import web

from vibee.api.auth import PoolSource, UserCache
from vibee.api.errors import ApiError, InvalidBody, NotFound
from vibee.api.routing import read_body
from vibee.api.schemas import TierChange
from vibee.api.tiers import Tiers
from vibee.store import users

_MAX_BODY = 4096


def tier_routes(
    pool: PoolSource, tiers: Tiers, cache: UserCache | None = None
) -> list[web.RouteDef]:
    """The admin routes; ``cache`` is the public API's user cache, forgotten on change."""

    async def set_tier(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, TierChange, _MAX_BODY)
            if body.tier not in tiers:
                raise InvalidBody(
                    422,
                    f"tier: not a configured tier (configured: {', '.join(tiers.names)})",
                    title="Unknown tier",
                )
            async with pool().acquire() as conn:
                user = await users.set_tier(conn, request.match_info["username"], body.tier)
        except users.UserNotFound:
            return NotFound("no such user").response()
        except ApiError as exc:
            return exc.response()
        if cache is not None:
            cache.invalidate(user.id)
        return web.json_response(
            {"id": user.id, "username": user.username, "subscription_tier": user.subscription_tier}
        )

    return [web.put("/admin/users/{username}/tier", set_tier)]
