"""Accounts and tokens: register, login, refresh, logout.

``POST /api/v1/auth/register``  {username, password, display_name?} → 201 {user, tokens}
``POST /api/v1/auth/login``     {username, password} → 200 tokens
``POST /api/v1/auth/refresh``   {refresh_token} → 200 a new pair (the old token is spent)
``POST /api/v1/auth/logout``    {refresh_token} → 204, its family revoked

Login and register are limited per client address (``auth_ip``), refresh and logout too
(``token_ip``). Token responses carry ``Cache-Control: no-store``.
"""

from __future__ import annotations

from aiohttp import web

from vibee.api.auth import new_refresh_token
from vibee.api.errors import Conflict, Forbidden, InvalidBody, Unauthorized
from vibee.api.ratelimit import Limit
from vibee.api.routes.views import NO_STORE, issue_pair, pair, user_out
from vibee.api.routing import Call, Route, json_response
from vibee.api.schemas import LoginRequest, RefreshRequest, Registered, RegisterRequest, TokenPair
from vibee.store import tokens, users


async def register(call: Call) -> web.Response:
    """Create an account and log it in."""
    ctx = call.ctx
    if not ctx.settings.allow_registration:
        raise Forbidden(
            "this server does not accept new accounts",
            title="Registration closed",
            slug="registration-closed",
        )
    body = call.body_as(RegisterRequest)
    try:
        async with ctx.hashing.slot():
            state = await users.register(
                ctx.pool(), body.username, body.password, body.display_name or ""
            )
    except users.UserExists:
        raise Conflict(
            f"the username {body.username!r} is taken",
            title="Username taken",
            slug="username-taken",
        ) from None
    except users.UserError as exc:
        raise InvalidBody(422, str(exc)) from None
    out = Registered(user=user_out(ctx, state.user), tokens=await issue_pair(ctx, state))
    return json_response(out, 201, NO_STORE)


async def login(call: Call) -> web.Response:
    """Exchange a username and password for tokens."""
    ctx = call.ctx
    body = call.body_as(LoginRequest)
    async with ctx.hashing.slot():
        state = await users.authenticate(ctx.pool(), body.username, body.password)
    if state is None:
        raise Unauthorized(
            "wrong username or password", title="Invalid credentials", slug="invalid-credentials"
        )
    if state.user.disabled:
        raise Forbidden(
            "this account is disabled", title="Account disabled", slug="account-disabled"
        )
    ctx.users.put(state)
    return json_response(await issue_pair(ctx, state), 200, NO_STORE)


async def refresh(call: Call) -> web.Response:
    """Rotate a refresh token: spend it and get a new pair."""
    ctx = call.ctx
    body = call.body_as(RefreshRequest)
    new = new_refresh_token()
    try:
        async with ctx.pool().acquire() as conn:
            rotation = await tokens.rotate(
                conn, body.refresh_token, new, ctx.settings.refresh_token_ttl_s
            )
    except tokens.TokenReused as exc:
        raise Unauthorized(
            str(exc), title="Refresh token reused", slug="refresh-token-reused"
        ) from None
    except tokens.TokenOwnerDisabled:
        raise Forbidden(
            "this account is disabled", title="Account disabled", slug="account-disabled"
        ) from None
    except tokens.TokenInvalid as exc:
        raise Unauthorized(
            str(exc), title="Invalid refresh token", slug="invalid-refresh-token"
        ) from None
    return json_response(pair(ctx, rotation.user_id, rotation.generation, new), 200, NO_STORE)


async def logout(call: Call) -> web.Response:
    """Revoke the refresh token's family (idempotent: an unknown token is no error)."""
    body = call.body_as(RefreshRequest)
    await tokens.revoke_family(call.ctx.pool(), body.refresh_token, "logout")
    return web.Response(status=204)


def routes() -> list[Route]:
    """The auth routes."""
    tag = "auth"
    return [
        Route(
            "POST",
            "/api/v1/auth/register",
            register,
            "register",
            "Create an account; answers its first tokens.",
            tag,
            ok=201,
            response=Registered,
            body=RegisterRequest,
            auth=False,
            limits=(Limit.AUTH_IP,),
            errors=(403, 409),
        ),
        Route(
            "POST",
            "/api/v1/auth/login",
            login,
            "login",
            "Exchange a username and password for tokens.",
            tag,
            response=TokenPair,
            body=LoginRequest,
            auth=False,
            limits=(Limit.AUTH_IP,),
            errors=(401, 403),
        ),
        Route(
            "POST",
            "/api/v1/auth/refresh",
            refresh,
            "refresh",
            "Spend a refresh token for a new pair. Reusing a spent one revokes its family.",
            tag,
            response=TokenPair,
            body=RefreshRequest,
            auth=False,
            limits=(Limit.TOKEN_IP,),
            errors=(401, 403),
        ),
        Route(
            "POST",
            "/api/v1/auth/logout",
            logout,
            "logout",
            "Revoke a refresh token and every token rotated from the same login.",
            tag,
            ok=204,
            body=RefreshRequest,
            auth=False,
            limits=(Limit.TOKEN_IP,),
        ),
    ]
