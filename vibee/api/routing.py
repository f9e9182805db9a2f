"""The route table and what runs around every handler.

A :class:`Route` declares everything the server does with a request before the handler
sees it — authenticate, rate-limit, read and validate the body — and what it answers;
:mod:`vibee.api.openapi` builds the document from the same declarations, so the two
cannot drift apart.

:func:`edge` is the one middleware: it turns every exception into problem+json (an
unexpected one into a 500 that is logged with its traceback and shows none) and records
the HTTP metrics under the route's path template.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import pydantic_core
from aiohttp import web
from pydantic import BaseModel, ValidationError

from vibee.api.context import ApiContext
from vibee.api.errors import ApiError, InvalidBody, Unavailable, from_http_exception
from vibee.api.metrics import UNMATCHED, HttpMetrics
from vibee.api.ratelimit import Limit
from vibee.store.db import DatabaseError
from vibee.store.users import AuthState, User

log = logging.getLogger("vibee.api")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[["Call"], Awaitable[web.StreamResponse]]
JSON = "application/json"
_DB_DOWN = (
    DatabaseError,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: method, path template, handler, and what it reads and answers.

    ``errors`` lists the statuses the handler itself may answer besides ``ok``; the ones
    that follow from the declaration (401/403 for ``auth``, 429 for ``limits``, 400, 413,
    415 and 422 for ``body``, 503 for ``db``) are added by :meth:`statuses`. With
    ``body_required`` False, a request without a body gets the ``body`` model's defaults.
    """

    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    tag: str
    ok: int = 200
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    auth: bool = True
    limits: tuple[Limit, ...] = ()
    errors: tuple[int, ...] = ()
    db: bool = True
    content_type: str = JSON
    body_required: bool = True

    def statuses(self) -> list[int]:
        """Every status this route can answer, sorted."""
        found = {self.ok, *self.errors}
        if self.auth:
            found |= {401, 403}
        if self.limits:
            found.add(429)
        if self.body is not None:
            found |= {400, 413, 415, 422}
        if self.db:
            found.add(503)
        return sorted(found)


@dataclass(slots=True)
class Call:
    """A request as a handler sees it: authenticated, limited, its body validated."""

    request: web.Request
    ctx: ApiContext
    state: AuthState | None
    body: BaseModel | None

    @property
    def user(self) -> User:
        """The authenticated user (only on routes with ``auth``)."""
        if self.state is None:
            raise RuntimeError("this route is not authenticated")
        return self.state.user

    def body_as(self, model: type[M]) -> M:
        """The validated body as ``model`` (the route's ``body``)."""
        if not isinstance(self.body, model):
            raise RuntimeError(f"this route's body is not a {model.__name__}")
        return self.body


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``model`` as a JSON response."""
    return web.Response(
        body=pydantic_core.to_json(model), status=status, content_type=JSON, headers=headers
    )


def _describe(errors: list[pydantic_core.ErrorDetails]) -> list[dict[str, str]]:
    described = []
    for error in errors:
        loc = ".".join(str(part) for part in error["loc"]) or "body"
        kind = error["type"]
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = error["msg"]
        described.append({"loc": loc, "msg": msg, "type": kind})
    return described


async def read_body(
    request: web.Request, model: type[M], max_bytes: int, *, required: bool = True
) -> M:
    """The request body validated as ``model``. Raises InvalidBody (400/413/415/422). Not
    ``required``: no body at all (or only whitespace) is ``model``'s defaults."""
    if not required and not request.body_exists:
        return model()
    ctype = request.content_type
    if ctype != JSON and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise InvalidBody(415, "send the body as application/json", title="Unsupported media type")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise InvalidBody(413, f"the body may hold at most {max_bytes} bytes", title="Too large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise InvalidBody(
            413, f"the body may hold at most {max_bytes} bytes", title="Too large"
        ) from None
    if not raw.strip():
        if not required:
            return model()
        raise InvalidBody(400, "the request body is empty", title="Malformed JSON")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise InvalidBody(
                400, "the body is not valid JSON (UTF-8)", title="Malformed JSON"
            ) from None
        described = _describe(errors)
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in described)
        raise InvalidBody(422, detail, title="Invalid request body", errors=described) from None


def wrap(route: Route, ctx: ApiContext) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for ``route``: auth, limits, body, then the route's handler."""
    max_bytes = ctx.settings.max_body_bytes

    async def handler(request: web.Request) -> web.StreamResponse:
        state = await ctx.auth.authenticate(request) if route.auth else None
        limit_headers: dict[str, str] | None = None
        for limit in route.limits:
            found = await ctx.limits.check(limit, request, state)
            if limit_headers is None:
                limit_headers = found
        try:
            body = (
                await read_body(request, route.body, max_bytes, required=route.body_required)
                if route.body
                else None
            )
            response = await route.handler(Call(request, ctx, state, body))
        except ApiError as exc:
            if limit_headers:
                for name, value in limit_headers.items():
                    exc.headers.setdefault(name, value)
            raise
        if limit_headers:
            response.headers.update(limit_headers)
        return response

    handler.__name__ = route.name
    return handler


def route_label(request: web.Request) -> str:
    """The metrics label of the request's route: its path template, or ``unmatched``."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def edge(metrics: HttpMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware: problem+json for every error, and the HTTP metrics."""

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = from_http_exception(exc)
        except asyncio.CancelledError:
            raise
        except _DB_DOWN as exc:
            log.warning(
                "database unavailable",
                extra={"route": route_label(request), "error": exc.__class__.__name__},
            )
            response = Unavailable("the database does not answer; retry shortly").response()
        except Exception:
            log.exception(
                "unhandled error in the API",
                extra={"route": route_label(request), "method": request.method},
            )
            response = ApiError("the server failed; the error was logged").response()
        metrics.observe(
            route_label(request), request.method, response.status, time.perf_counter() - started
        )
        return response

    return middleware
