"""JSON over HTTP for the sim's control API: input checks that name the bad field.

A handler raises :class:`BadInput` (field, message, status); the :func:`json_errors`
middleware turns it into ``{"error": "...", "field": "..."}`` with a 400 (or 404), and
aiohttp's own 404/405 into JSON too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

Body = dict[str, Any]


class BadInput(Exception):
    """A request the control API refuses: ``field`` names what is wrong."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """BadInput → 400/404 JSON; aiohttp's own 404/405 as JSON too."""
    try:
        return await handler(request)
    except BadInput as exc:
        return reply({"error": str(exc), "field": exc.field}, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return reply({"error": exc.reason, "field": None}, exc.status)


async def body_of(request: web.Request) -> Body:
    """The request's JSON object."""
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadInput("body", "not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadInput("body", "a JSON object is required")
    return body


def req_int(body: Body, name: str, *, low: int | None = None, prefix: str = "") -> int:
    """A required integer field (>= ``low``)."""
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(prefix + name, "an integer is required")
    if low is not None and value < low:
        raise BadInput(prefix + name, f"must be at least {low}")
    return value


def opt_int(body: Body, name: str, *, low: int | None = None, prefix: str = "") -> int | None:
    """An optional integer field."""
    return None if body.get(name) is None else req_int(body, name, low=low, prefix=prefix)


def req_str(body: Body, name: str, *, prefix: str = "") -> str:
    """A required, non-empty string field."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(prefix + name, "a non-empty string is required")
    return value


def opt_str(body: Body, name: str) -> str | None:
    """An optional non-empty string field."""
    return None if body.get(name) is None else req_str(body, name)


def opt_bool(body: Body, name: str) -> bool:
    """An optional boolean field (default false)."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadInput(name, "true or false is required")
    return value


def path_int(request: web.Request, name: str) -> int:
    """An integer path parameter."""
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise BadInput(name, "an integer is required") from exc
