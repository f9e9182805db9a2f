"""What several routes answer: the public view of a user, and a freshly issued token pair."""

from __future__ import annotations

from vibee.api.auth import new_refresh_token
from vibee.api.context import ApiContext
from vibee.api.schemas import TokenPair, UserOut
from vibee.store import tokens, users

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def user_out(ctx: ApiContext, user: users.User) -> UserOut:
    """The public view of ``user``, with its tier's limits."""
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        subscription_tier=user.subscription_tier,
        limits=ctx.tiers.limits(user.subscription_tier),
        created_at=user.created_at,
    )


def pair(ctx: ApiContext, user_id: int, generation: int, refresh: str) -> TokenPair:
    """A token pair for ``user_id`` with an already stored ``refresh`` token."""
    return TokenPair(
        access_token=ctx.tokens.issue(user_id, generation),
        expires_in=ctx.tokens.ttl_s,
        refresh_token=refresh,
        refresh_expires_in=ctx.settings.refresh_token_ttl_s,
    )


async def issue_pair(ctx: ApiContext, state: users.AuthState) -> TokenPair:
    """A new access token and the first refresh token of a new family (a new login)."""
    refresh = new_refresh_token()
    await tokens.issue(ctx.pool(), state.user.id, refresh, ctx.settings.refresh_token_ttl_s)
    return pair(ctx, state.user.id, state.generation, refresh)
