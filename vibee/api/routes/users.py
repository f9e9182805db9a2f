"""The authenticated user: profile and password.

``GET   /api/v1/users/me``            → the user, its tier and the tier's limits
``PATCH /api/v1/users/me``            {display_name} → the updated user
``POST  /api/v1/users/me/password``   {current_password, new_password} → a new token pair;
                                      every refresh token and access token of the user
                                      issued before is revoked

Every query takes the authenticated user's id; there is no way to name another user.
"""

from __future__ import annotations

from aiohttp import web

from vibee.api.errors import Forbidden, InvalidBody, NotFound
from vibee.api.ratelimit import Limit
from vibee.api.routes.views import NO_STORE, issue_pair, user_out
from vibee.api.routing import Call, Route, json_response
from vibee.api.schemas import PasswordChange, ProfileUpdate, TokenPair, UserOut
from vibee.store import tokens, users


async def get_me(call: Call) -> web.Response:
    """The caller's profile (served from the authenticated row: no extra query)."""
    return json_response(user_out(call.ctx, call.user))


async def patch_me(call: Call) -> web.Response:
    """Change the caller's display name."""
    ctx = call.ctx
    body = call.body_as(ProfileUpdate)
    user_id = call.user.id
    try:
        user = await users.set_display_name(ctx.pool(), user_id, body.display_name)
    except users.UserNotFound:
        raise NotFound("the account no longer exists") from None
    finally:
        ctx.users.invalidate(user_id)
    return json_response(user_out(ctx, user))


async def change_password(call: Call) -> web.Response:
    """Change the caller's password; revokes every token issued before."""
    ctx = call.ctx
    body = call.body_as(PasswordChange)
    user_id = call.user.id
    try:
        async with ctx.hashing.slot(), ctx.pool().acquire() as conn, conn.transaction():
            state = await users.change_password(
                conn, user_id, body.current_password, body.new_password
            )
            await tokens.revoke_all(conn, user_id, "password changed")
    except users.WrongPassword:
        raise Forbidden(
            "current_password: does not match", title="Wrong password", slug="wrong-password"
        ) from None
    except users.UserNotFound:
        raise NotFound("the account no longer exists") from None
    except users.UserError as exc:
        raise InvalidBody(422, str(exc)) from None
    finally:
        ctx.users.invalidate(user_id)
    ctx.users.put(state)
    return json_response(await issue_pair(ctx, state), 200, NO_STORE)


def routes() -> list[Route]:
    """The user routes."""
    tag = "users"
    return [
        Route(
            "GET",
            "/api/v1/users/me",
            get_me,
            "get_me",
            "The authenticated user, its subscription tier and the tier's limits.",
            tag,
            response=UserOut,
            limits=(Limit.API,),
        ),
        Route(
            "PATCH",
            "/api/v1/users/me",
            patch_me,
            "update_me",
            "Change the display name.",
            tag,
            response=UserOut,
            body=ProfileUpdate,
            limits=(Limit.API,),
            errors=(404,),
        ),
        Route(
            "POST",
            "/api/v1/users/me/password",
            change_password,
            "change_password",
            "Change the password; revokes every token issued before and answers new ones.",
            tag,
            response=TokenPair,
            body=PasswordChange,
            limits=(Limit.API, Limit.PASSWORD),
            errors=(404,),
        ),
    ]
