"""AI usage per user per UTC day, and the quota check that cannot be raced.

:func:`reserve` counts one request and a token estimate in a single conditional upsert:
the row is only changed when the result stays within the limits, so fifty concurrent
calls at ``limit - 1`` let exactly one through. :func:`reconcile` replaces the estimate
with what the provider reported once the call is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from vibee.store import Executor


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One user's usage on one UTC day."""

    day: date
    requests: int
    tokens: int
    cost: Decimal


def today() -> date:
    """The current UTC day (quotas reset at 00:00 UTC)."""
    return datetime.now(UTC).date()


async def reserve(
    db: Executor,
    user_id: int,
    tokens: int,
    max_requests: int,
    max_tokens: int,
    day: date | None = None,
) -> bool:
    """Count one request and ``tokens`` if both stay within the limits. True when counted."""
    row = await db.fetchrow(
        """
        INSERT INTO usage_daily AS u (user_id, day, requests, tokens)
        SELECT $1::bigint, $2::date, 1, $3::bigint WHERE 1 <= $4::int AND $3::bigint <= $5::bigint
        ON CONFLICT (user_id, day) DO UPDATE
            SET requests = u.requests + 1, tokens = u.tokens + $3::bigint, updated_at = now()
            WHERE u.requests + 1 <= $4::int AND u.tokens + $3::bigint <= $5::bigint
        RETURNING requests
        """,
        user_id,
        day or today(),
        tokens,
        max_requests,
        max_tokens,
    )
    return row is not None


async def reconcile(
    db: Executor,
    user_id: int,
    estimated: int,
    actual: int,
    cost: float | None = None,
    day: date | None = None,
) -> None:
    """Replace a reserved estimate by the provider's count (and add the cost)."""
    await db.execute(
        """
        UPDATE usage_daily
           SET tokens = greatest(0, tokens - $3 + $4), cost = cost + $5, updated_at = now()
         WHERE user_id = $1 AND day = $2
        """,
        user_id,
        day or today(),
        estimated,
        actual,
        Decimal(str(cost or 0)),
    )


async def release(db: Executor, user_id: int, estimated: int, day: date | None = None) -> None:
    """Give back a reservation whose call produced nothing (every provider failed)."""
    await db.execute(
        """
        UPDATE usage_daily
           SET requests = greatest(0, requests - 1), tokens = greatest(0, tokens - $3),
               updated_at = now()
         WHERE user_id = $1 AND day = $2
        """,
        user_id,
        day or today(),
        estimated,
    )


async def recent(db: Executor, user_id: int, days: int = 30) -> list[DailyUsage]:
    """The last ``days`` days with any usage, newest first."""
    rows = await db.fetch(
        "SELECT day, requests, tokens, cost FROM usage_daily "
        "WHERE user_id = $1 AND day > $2::date - $3::int ORDER BY day DESC",
        user_id,
        today(),
        days,
    )
    return [DailyUsage(r["day"], r["requests"], r["tokens"], r["cost"]) for r in rows]
