"""The sim's WebSocket side: transports, logical connections, credit, update pumping.

One WebSocket (a *transport*) carries many *logical connections* (``c``), one per account
session, each attached with a key. An attached, authorized connection receives its
account's update log from its cursor on, as far as its credit (the client's free buffer
space) allows; the transport's outbox stops pumping while it is congested and resumes when
it drains, so nothing in the sim grows without bound. Wire format: ``docs/sim.md``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web

from vibee.sim.telegram_auth import Key
from vibee.sim.telegram_calls import ASYNC_CALLS, CALLS, Core, arg_int, arg_opt_int, arg_str
from vibee.sim.telegram_state import Account
from vibee.sim.telegram_wire import (
    DISCONNECTED,
    MAX_MESSAGE,
    MAX_WINDOW,
    Outbox,
    OutboxFull,
    decode,
    log_task_failure,
)
from vibee.telegram.gateway import BadRequest, GatewayError, NotConnected

log = logging.getLogger("vibee.sim")


class Attachment:
    """One logical connection: its key, the account it is bound to, cursor and credit."""

    __slots__ = ("account", "c", "conn", "credit", "cursor", "key", "prefix")

    def __init__(self, conn: Connection, c: int, key: Key, credit: int) -> None:
        self.conn = conn
        self.c = c
        self.key = key
        self.credit = credit
        self.account: Account | None = None
        self.cursor = 0
        self.prefix = b'{"c":%d,"u":' % c

    def pump(self) -> None:
        """Send updates after the cursor while there is credit and the outbox has room."""
        account = self.account
        if account is None or self.credit <= 0:
            return
        conn = self.conn
        outbox = conn.outbox
        log_ = account.log
        while self.credit > 0 and self.cursor < len(log_):
            if outbox.congested:
                conn.stalled.add(self)
                return
            outbox.put(self.prefix + log_[self.cursor] + b"}")
            self.cursor += 1
            self.credit -= 1
            conn.hub.delivered += 1

    def end(self, code: str, message: str) -> None:
        """The sim ends this logical connection; the client gets an ``x`` frame."""
        self.conn.end(self, code, message)


class Connection:
    """One WebSocket transport from one client process."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.hub = hub
        self.core = hub.core
        self.ws = ws
        self.request = request
        self.attachments: dict[int, Attachment] = {}
        self.stalled: set[Attachment] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.outbox = Outbox(ws.send_bytes, on_drained=self._drained)

    async def serve(self) -> None:
        """Read requests until the WebSocket closes, then release everything it held."""
        writer = asyncio.create_task(self.outbox.run(), name="sim-ws-writer")
        writer.add_done_callback(self._writer_done)
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    break
                try:
                    objs = decode(msg.data)
                except ValueError as exc:
                    log.warning("closing a sim transport that sent a bad frame: %s", exc)
                    break
                for obj in objs:
                    try:
                        self.handle(obj)
                    except OutboxFull:
                        raise
                    except Exception:
                        log.exception("sim: request %r failed", obj)
                        self.fail(obj.get("id"), BadRequest("The simulator failed.", "INTERNAL"))
        except OutboxFull:
            log.warning("closing a sim transport whose client does not read its answers")
        finally:
            self.release()
            pending = [writer, *self.tasks]
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    def release(self) -> None:
        """Detach every logical connection (they stop counting as connections)."""
        for att in self.attachments.values():
            self.core.auth.detach(att, att.key)
        self.attachments.clear()
        self.stalled.clear()

    def abort(self) -> None:
        """Drop the transport like a network failure (no close handshake)."""
        self.release()
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def end(self, att: Attachment, code: str, message: str) -> None:
        """Detach ``att`` and tell the client why."""
        if self.attachments.get(att.c) is att:
            del self.attachments[att.c]
        self.stalled.discard(att)
        self.core.auth.detach(att, att.key)
        try:
            self.outbox.put_obj({"c": att.c, "x": {"code": code, "message": message}})
        except OutboxFull:
            self.abort()

    def _drained(self) -> None:
        if self.stalled:
            stalled = list(self.stalled)
            self.stalled.clear()
            for att in stalled:
                att.pump()

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.debug("sim transport writer stopped: %r", task.exception())
            self.abort()

    # --- requests ---------------------------------------------------------------------------

    def handle(self, obj: dict[str, Any]) -> None:
        """Dispatch one request or notification."""
        method = obj.get("m")
        rid = obj.get("id")
        c = obj.get("c")
        args = obj.get("a") or {}
        try:
            if not isinstance(args, dict):
                raise BadRequest("a: an object is required", "INPUT_INVALID")
            if method == "credit":
                att = self.attachments.get(c) if isinstance(c, int) else None
                if att is not None:
                    att.credit = min(att.credit + arg_int(args, "n", low=0), MAX_WINDOW)
                    att.pump()
                return
            if method == "new_key":
                self.reply(rid, {"key": self.core.auth.new_key().key})
            elif method == "attach":
                self.attach(rid, c, args)
            elif method == "detach":
                att = self.attachments.pop(c, None) if isinstance(c, int) else None
                if att is not None:
                    self.stalled.discard(att)
                    self.core.auth.detach(att, att.key)
                self.reply(rid, {})
            else:
                self.call(rid, c, str(method), args)
        except GatewayError as exc:
            self.fail(rid, exc)

    def attach(self, rid: Any, c: Any, args: dict[str, Any]) -> None:
        """Attach logical connection ``c`` with a key, resuming after ``seq``."""
        if not isinstance(c, int) or c in self.attachments:
            raise BadRequest("c: a new integer connection id is required", "INPUT_INVALID")
        key = self.core.auth.key(arg_str(args, "key"))
        last_seq = arg_opt_int(args, "seq", low=0)
        att = Attachment(self, c, key, arg_int(args, "window", low=0, high=MAX_WINDOW))
        account = self.core.auth.attach(att, key, last_seq)
        self.attachments[c] = att
        user = account.user.wire() if account is not None else None
        self.reply(rid, {"user": user, "seq": account.seq if account is not None else 0})
        att.pump()

    def call(self, rid: Any, c: Any, method: str, args: dict[str, Any]) -> None:
        """An account call on logical connection ``c`` (maybe delayed by a latency fault)."""
        att = self.attachments.get(c) if isinstance(c, int) else None
        if att is None:
            raise NotConnected("This connection is not attached.")
        if method not in CALLS and method not in ASYNC_CALLS:
            raise BadRequest(f"m: unknown method {method!r}", "METHOD_INVALID")
        account = att.key.account
        delay = self.core.faults.delay_for(account.account_id if account else None)
        if delay <= 0 and method in CALLS:
            self.reply(rid, CALLS[method](self.core, att.key, args))
            return
        task = asyncio.create_task(self._call_later(rid, att.key, method, args, delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(log_task_failure)

    async def _call_later(
        self, rid: Any, key: Key, method: str, args: dict[str, Any], delay: float
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if method in CALLS:
                result = CALLS[method](self.core, key, args)
            else:
                result = await ASYNC_CALLS[method](self.core, key, args)
        except GatewayError as exc:
            self.fail(rid, exc)
        else:
            self.reply(rid, result)

    def reply(self, rid: Any, result: Any) -> None:
        """Answer request ``rid`` (notifications have no id and get no answer)."""
        if rid is not None:
            self.outbox.put_obj({"id": rid, "r": result})

    def fail(self, rid: Any, exc: GatewayError) -> None:
        """Answer request ``rid`` with an error."""
        if rid is not None:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            seconds = getattr(exc, "seconds", None)
            if seconds is not None:
                error["seconds"] = seconds
            self.outbox.put_obj({"id": rid, "e": error})


class Hub:
    """Every open transport; the WebSocket endpoint."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.connections: set[Connection] = set()
        self.delivered = 0
        self.transports_total = 0

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws``: one transport until it closes."""
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30.0, compress=False)
        await ws.prepare(request)
        conn = Connection(self, ws, request)
        self.connections.add(conn)
        self.transports_total += 1
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
        return ws

    def drop_all(self) -> int:
        """Cut every transport; returns how many there were."""
        conns = list(self.connections)
        for conn in conns:
            conn.abort()
        return len(conns)

    def drop_account(self, account: Account) -> int:
        """End the account's logical connections (clients see a disconnect)."""
        listeners = list(account.listeners)
        for listener in listeners:
            listener.end(DISCONNECTED, "The connection to Telegram was lost.")
        return len(listeners)
