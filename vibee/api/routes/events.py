"""``GET /api/v1/events``: the caller's real-time events over a WebSocket.

Browsers cannot set headers on a WebSocket, so the access token comes in the
``access_token`` query parameter or as the subprotocol ``bearer.<token>`` of
``Sec-WebSocket-Protocol`` (the chosen subprotocol is echoed back). A missing, invalid or
expired token is refused with a 401 problem+json before the upgrade; a request that is
not a WebSocket upgrade gets 426.

Each event (see :mod:`vibee.automation.events`) is one JSON text frame. Messages from the
client are read and ignored (the socket stays open until either side closes it). A client
that reads too slowly is dropped by the bus and its socket closed with code 4008
("too slow").
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import WSMsgType, web

from vibee.api.errors import ApiError, Unauthorized
from vibee.api.routes.params import Params
from vibee.api.routing import Call, Route
from vibee.automation.events import Subscription

EVENTS_PATH = "/api/v1/events"
SUBPROTOCOL_PREFIX = "bearer."
TOO_SLOW = 4008
HEARTBEAT_S = 30.0
_ASK = (
    "send the access token as ?access_token=<token> or as the WebSocket subprotocol bearer.<token>"
)


PARAMS: Params = {
    ("GET", EVENTS_PATH): [
        {
            "name": "access_token",
            "in": "query",
            "required": False,
            "description": "The access token (or send the subprotocol bearer.<token>).",
            "schema": {"type": "string"},
        }
    ]
}


class UpgradeRequired(ApiError):
    """426: the request is not a WebSocket upgrade."""

    status = 426
    slug = "upgrade-required"
    title = "Upgrade required"


def token_of(request: web.Request) -> tuple[str | None, str | None]:
    """The access token of ``request`` and the subprotocol that carried it (if any)."""
    for header in request.headers.getall("Sec-WebSocket-Protocol", ()):
        for offered in header.split(","):
            offered = offered.strip()
            if offered.startswith(SUBPROTOCOL_PREFIX) and len(offered) > len(SUBPROTOCOL_PREFIX):
                return offered[len(SUBPROTOCOL_PREFIX) :], offered
    token = request.query.get("access_token", "").strip()
    return (token or None), None


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until the socket closes."""
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            return


async def _forward(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    """Send the subscription's events until it is dropped or the socket closes."""
    while not ws.closed:
        found = await subscription.next()
        if found is None:
            await ws.close(code=TOO_SLOW, message=b"too slow")
            return
        await ws.send_str(orjson.dumps(found).decode())


async def events(call: Call) -> web.StreamResponse:
    """Upgrade to a WebSocket and stream the caller's events."""
    request = call.request
    token, protocol = token_of(request)
    if token is None:
        raise Unauthorized(_ASK)
    state = await call.ctx.auth.authenticate_token(token)
    ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), heartbeat=HEARTBEAT_S)
    if not ws.can_prepare(request).ok:
        raise UpgradeRequired("connect with a WebSocket upgrade (Upgrade: websocket)")
    bus = call.ctx.events
    subscription = bus.subscribe(state.user.id)
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(_until_closed(ws), name="events-ws-reader")
        writer = asyncio.create_task(_forward(ws, subscription), name="events-ws-writer")
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.wait((reader, writer))
        for task in (reader, writer):
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
        if not ws.closed:
            await ws.close()
    finally:
        bus.unsubscribe(subscription)
    return ws


def routes() -> list[Route]:
    """The events route (authenticated by its own token parameters, not the header)."""
    return [
        Route(
            "GET",
            EVENTS_PATH,
            events,
            "events",
            "Real-time events over a WebSocket (101 Switching Protocols). Send the access "
            "token as the `access_token` query parameter or as the subprotocol "
            "`bearer.<token>`; each event is a JSON text frame with `type` "
            "(message.received, reply.sent, lead, session.state, quota.exhausted, "
            "history.progress, history.done, history.failed), `ts` "
            "and its fields. A client that reads too slowly is closed with code 4008.",
            "events",
            ok=101,
            auth=False,
            errors=(401, 403, 426),
        ),
    ]
