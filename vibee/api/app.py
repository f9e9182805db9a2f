"""The public REST API: the aiohttp application and the service that serves it.

:func:`build_api_app` assembles the route table (:mod:`vibee.api.routes`), the OpenAPI
document generated from it, and the parts every handler shares (:class:`ApiContext`).
:class:`ApiService` binds ``server.host:server.port`` in ``on_start`` (so the tree is
ready only once the API listens) and, while it runs, deletes refresh tokens that expired
more than a day ago, once an hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web

from vibee import __version__
from vibee.admin.listener import HttpListener
from vibee.api import openapi
from vibee.api.access import AccessTokens
from vibee.api.auth import Authenticator, HashGate, PoolSource, UserCache
from vibee.api.context import ApiContext, ApiSettings
from vibee.api.metrics import HttpMetrics
from vibee.api.ratelimit import RateLimits
from vibee.api.routes import all_routes, chats, params, telegram
from vibee.api.routes import events as event_routes
from vibee.api.routes import history as history_routes
from vibee.api.routes.meta import openapi_route
from vibee.api.routing import Route, edge, wrap
from vibee.api.tiers import TierLimits, Tiers
from vibee.automation.events import EventBus
from vibee.config import Config
from vibee.coord.base import RateLimiter
from vibee.coord.notices import NoNotices, Notices
from vibee.secrets import Keyring
from vibee.store import DB_ERRORS, tokens
from vibee.store.db import DatabaseError

log = logging.getLogger("vibee.api")

CONTEXT = web.AppKey("vibee.api.context", ApiContext)
ROUTES = web.AppKey("vibee.api.routes", list[Route])
PURGE_EVERY_S = 3600.0
PURGE_GRACE = timedelta(days=1)
_DB_FAILURES = (DatabaseError, *DB_ERRORS)


def settings_from_config(config: Config) -> ApiSettings:
    """The API settings from the configuration (keys the config does not have yet keep the
    defaults of :class:`ApiSettings`)."""
    limits = config.limits
    base = TierLimits(
        api_per_minute=limits.api_per_minute,
        ai_requests_per_day=limits.ai_requests_per_day,
        ai_tokens_per_day=limits.ai_tokens_per_day,
        chat_messages_per_minute=limits.chat_messages_per_minute,
    )
    return ApiSettings(
        access_token_ttl_s=config.security.access_token_ttl_s,
        refresh_token_ttl_s=config.security.refresh_token_ttl_s,
        tiers=Tiers(base, {n: t.model_dump(exclude_none=True) for n, t in limits.tiers.items()}),
        auth_per_minute_per_ip=limits.auth_per_minute_per_ip,
        token_per_minute_per_ip=limits.token_per_minute_per_ip,
        max_body_bytes=config.server.max_body_bytes,
        user_cache_ttl_s=config.server.user_cache_ttl_s,
        allow_registration=config.server.allow_registration,
    )


def build_api_app(
    settings: ApiSettings,
    pool: PoolSource,
    keyring: Keyring,
    limiter: RateLimiter,
    *,
    clock: Callable[[], float] = time.time,
    login: telegram.LoginFlowFactory | None = None,
    qr: telegram.QrSource = lambda: None,
    events: EventBus | None = None,
    history: history_routes.Wake = history_routes.no_wake,
    notices: Notices | None = None,
) -> web.Application:
    """The public API application. ``pool`` returns the open asyncpg pool when called (it
    is called per request, so the pool may be opened after the app is built). ``login``
    builds the Telegram login flow (None: the login routes answer 503); ``qr`` gives the
    pending QR logins of this instance (None: the QR routes answer 503). ``events`` is the bus
    the WebSocket of ``GET /api/v1/events`` subscribes to (None: a bus of its own, which
    nothing else publishes to). ``history`` is awaited when a history import was queued, to wake
    the history-jobs children (the default does nothing: their poll finds the job). ``notices``
    tell the instances what the API changed (None: nobody, their sweeps find it)."""
    access = AccessTokens(keyring, settings.access_token_ttl_s, clock=clock)
    cache = UserCache(settings.user_cache_ttl_s)
    ctx = ApiContext(
        settings=settings,
        pool=pool,
        tokens=access,
        users=cache,
        auth=Authenticator(access, pool, cache),
        limits=RateLimits(
            limiter,
            settings.tiers,
            settings.auth_per_minute_per_ip,
            settings.token_per_minute_per_ip,
        ),
        hashing=HashGate(settings.hash_slots, settings.hash_queue),
        events=events if events is not None else EventBus(),
        notices=notices if notices is not None else NoNotices(),
    )
    table = [
        *all_routes(),
        *telegram.routes(login, qr),
        *history_routes.routes(history),
        *chats.routes(),
        *event_routes.routes(),
    ]
    document = openapi.document([*table, openapi_route(b"")], __version__)
    params.annotate(
        document, (telegram.PARAMS, history_routes.PARAMS, chats.PARAMS, event_routes.PARAMS)
    )
    table.append(openapi_route(orjson.dumps(document)))
    app = web.Application(
        middlewares=[edge(HttpMetrics())], client_max_size=settings.max_body_bytes
    )
    for route in table:
        path = params.aiohttp_path(route.path)
        app.router.add_route(route.method, path, wrap(route, ctx), name=route.name)
    app[CONTEXT] = ctx
    app[ROUTES] = table
    return app


class ApiService(HttpListener):
    """The public API listener, and the hourly purge of long-expired refresh tokens."""

    def __init__(self, host: str, port: int, app: web.Application, pool: PoolSource) -> None:
        """Serve ``app`` on ``host:port``; ``pool`` is the database for the purge."""
        super().__init__("api", host, port, app)
        self._pool = pool

    async def run(self) -> None:
        """Serve until stopped; purge expired refresh tokens every hour."""
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            await self.purge()

    async def purge(self) -> int:
        """Delete refresh tokens that expired more than a day ago; how many were deleted.
        A database failure is logged and skipped (the next hour tries again)."""
        try:
            deleted = await tokens.purge_expired(self._pool(), datetime.now(UTC) - PURGE_GRACE)
        except _DB_FAILURES as exc:
            log.warning("refresh token purge failed", extra={"error": exc.__class__.__name__})
            return 0
        if deleted:
            log.info("expired refresh tokens purged", extra={"count": deleted})
        return deleted
