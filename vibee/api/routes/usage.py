"""AI usage: ``GET /api/v1/usage`` → today's requests and tokens against the tier's daily
quota, and the last 30 days (UTC days with any usage, newest first)."""

from __future__ import annotations

from aiohttp import web

from vibee.api.ratelimit import Limit
from vibee.api.routing import Call, Route, json_response
from vibee.api.schemas import Quota, Remaining, UsageDay, UsageOut
from vibee.store import usage

DAYS = 30


def _day(row: usage.DailyUsage) -> UsageDay:
    return UsageDay(day=row.day, requests=row.requests, tokens=row.tokens, cost=str(row.cost))


async def get_usage(call: Call) -> web.Response:
    """The caller's AI usage against its quota."""
    user = call.user
    limits = call.ctx.tiers.limits(user.subscription_tier)
    today = usage.today()
    rows = await usage.recent(call.ctx.pool(), user.id, DAYS)
    days = [_day(row) for row in rows]
    current = next(
        (d for d in days if d.day == today),
        UsageDay(day=today, requests=0, tokens=0, cost="0"),
    )
    out = UsageOut(
        day=today,
        tier=user.subscription_tier,
        today=current,
        quota=Quota(
            requests_per_day=limits.ai_requests_per_day, tokens_per_day=limits.ai_tokens_per_day
        ),
        remaining=Remaining(
            requests=max(0, limits.ai_requests_per_day - current.requests),
            tokens=max(0, limits.ai_tokens_per_day - current.tokens),
        ),
        days=days,
    )
    return json_response(out)


def routes() -> list[Route]:
    """The usage route."""
    return [
        Route(
            "GET",
            "/api/v1/usage",
            get_usage,
            "get_usage",
            "Today's AI requests and tokens against the daily quota, and the last 30 days.",
            "usage",
            response=UsageOut,
            limits=(Limit.API,),
        )
    ]
