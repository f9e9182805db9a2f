"""Public, cheap routes: ``GET /health`` (the API answers) and ``GET /api/v1/openapi.json``.

Both answer precomputed bytes. ``/health`` says nothing about the database: that is the
admin endpoint's readiness; a load balancer asks ``/health`` whether this process serves.
"""

from __future__ import annotations

from aiohttp import web

from vibee.api.routing import Call, Route
from vibee.api.schemas import Health

OPENAPI_PATH = "/api/v1/openapi.json"
_HEALTH = b'{"status":"ok"}'


async def health(_: Call) -> web.Response:
    """200 {"status": "ok"}."""
    return web.Response(body=_HEALTH, content_type="application/json")


def routes() -> list[Route]:
    """The meta routes; the OpenAPI route's handler is set by the app (it needs the table)."""
    return [
        Route(
            "GET",
            "/health",
            health,
            "health",
            "200 while the API serves requests (no dependency is checked).",
            "meta",
            response=Health,
            auth=False,
            db=False,
        ),
    ]


def openapi_route(document: bytes) -> Route:
    """``GET /api/v1/openapi.json`` serving ``document``."""

    async def openapi(_: Call) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return Route(
        "GET",
        OPENAPI_PATH,
        openapi,
        "openapi",
        "This document (OpenAPI 3.1).",
        "meta",
        auth=False,
        db=False,
    )
