"""The admin endpoint: liveness, readiness, Prometheus metrics, and ``/admin`` behind a token.

Routes (DESIGN 6.3)::

    GET /health/live    200 while the event loop runs
    GET /health/ready   200 when every readiness check passes, else 503 naming the failing
    GET /metrics        Prometheus text format (VIBEE's metrics plus process metrics)
    GET /admin/...      ``Authorization: Bearer <admin_token>``; 401 problem+json otherwise
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from vibee.admin.health import Readiness

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    body: Any, status: int = 200, content_type: str = "application/json"
) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type=content_type)


def problem(status: int, title: str, detail: str = "") -> web.Response:
    """An RFC 9457 problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return json_response(body, status, "application/problem+json")


def build_admin_app(
    readiness: Readiness,
    admin_token: str | None,
    registry: CollectorRegistry = REGISTRY,
    admin_routes: list[web.RouteDef] | None = None,
) -> web.Application:
    """The admin aiohttp application. ``admin_routes`` are mounted under the token check."""

    async def live(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        report = await readiness.probe()
        if report.ready:
            return json_response({"status": "ready", "checks": report.checks})
        return json_response(
            {"status": "unavailable", "failing": report.failing, "checks": report.checks}, 503
        )

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/admin"):
            return await handler(request)
        supplied = request.headers.get("Authorization", "")
        expected = f"Bearer {admin_token}" if admin_token else None
        if expected is None or not hmac.compare_digest(supplied.encode(), expected.encode()):
            response = problem(401, "Unauthorized", "send Authorization: Bearer <admin token>")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    if admin_routes:
        app.router.add_routes(admin_routes)
    return app
