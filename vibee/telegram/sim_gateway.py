"""``SimGateway``: the :class:`~vibee.telegram.gateway.Gateway` Protocol against the sim.

Constructed from the sim URL and the account's stored credential (None for a new login):
``SimGateway("http://127.0.0.1:8090", credential)``. All gateways of one event loop share
one WebSocket per sim URL (``vibee.sim.telegram_client``); each is a logical connection
on it. Updates flow into a bounded buffer: the sim sends at most ``window`` updates ahead
of the consumer (credit, like HTTP/2 flow control), so a consumer that stops reading
stops this account's updates and nobody else's. After a drop (of the transport or of
this account's connection) the gateway re-attaches by itself with backoff, resuming after
:attr:`last_seq`; a revoked or duplicated credential ends :meth:`events` with
:class:`LoggedOut`, with no reconnect loop. Idle cost: one object, one empty deque.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from vibee.sim.telegram_client import SimTransport, backoff, transport_for
from vibee.sim.telegram_events import CHAT_TYPES, EventBuffer, date, update_from_wire, user
from vibee.sim.telegram_wire import DEFAULT_WINDOW, DISCONNECTED, MAX_WINDOW, log_task_failure
from vibee.telegram.gateway import (
    Authorized,
    Dialog,
    Disconnected,
    Event,
    GatewayError,
    LoggedOut,
    LoginResult,
    LoginState,
    Message,
    NetworkError,
    NotConnected,
    PasswordRequired,
    QrLogin,
    Reconnected,
    User,
    error_from_code,
)

log = logging.getLogger("vibee.telegram")


class SimGateway:
    """One account's connection to the simulated Telegram network."""

    def __init__(
        self,
        sim_url: str,
        credential: bytes | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        call_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be between 1 and {MAX_WINDOW}")
        self.sim_url = sim_url
        self.window = window
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self._credential = credential
        self._last_seq: int | None = None
        self._transport: SimTransport | None = None
        self._c: int | None = None
        self._buffer = EventBuffer(window)
        self._consumed = 0
        self._reconnector: asyncio.Task[None] | None = None
        self._dead: GatewayError | None = None
        self._announce = False
        self._connecting = False
        self.authorized = False

    @property
    def credential(self) -> bytes | None:
        """The key to store (encrypted); None until :meth:`connect` got one."""
        return self._credential

    @property
    def last_seq(self) -> int | None:
        """The seq of the last update put into :meth:`events`."""
        return self._last_seq

    @property
    def connected(self) -> bool:
        """Whether the logical connection is attached right now."""
        return self._c is not None

    # --- connection -------------------------------------------------------------------------

    async def connect(self, last_seq: int | None = None) -> User | None:
        """Attach to the sim; see :meth:`Gateway.connect`."""
        if self._dead is not None:
            raise self._dead
        if self._transport is not None:
            raise RuntimeError("connect() called twice without disconnect()")
        self._last_seq = last_seq
        if self._buffer.closed:
            self._buffer = EventBuffer(self.window)
        transport = self._transport = transport_for(self.sim_url)
        transport.acquire()
        self._connecting = True
        try:
            await transport.ensure_open(self.connect_timeout)
            if self._credential is None:
                reply = await transport.call("new_key", None, {}, self.call_timeout)
                self._credential = bytes.fromhex(reply["key"])
            return await self._attach(transport)
        except BaseException:
            await self._release()
            raise
        finally:
            self._connecting = False

    async def _attach(self, transport: SimTransport) -> User | None:
        assert self._credential is not None
        c = transport.register(self)
        # Free buffer slots are the sim's credit; slots freed from now on are granted later.
        window = max(0, self.window - self._buffer.updates)
        self._consumed = 0
        args = {"key": self._credential.hex(), "seq": self._last_seq, "window": window}
        try:
            reply = await transport.call("attach", c, args, self.call_timeout)
            if transport.channel(c) is not self:  # ended or dropped before we got here
                raise self._dead or NetworkError("The connection dropped while attaching.")
        except BaseException:
            transport.unregister(c)
            transport.notify("detach", c, {})  # in case the sim attached after a timeout
            raise
        self._c = c
        self._grant(force=True)
        if self._last_seq is None and reply["user"] is not None:
            self._last_seq = reply["seq"]
        self.authorized = reply["user"] is not None
        return user(reply["user"]) if reply["user"] is not None else None

    async def disconnect(self) -> None:
        """Detach and let go of the shared transport; :meth:`events` ends."""
        if self._reconnector is not None:
            self._reconnector.cancel()
            await asyncio.wait([self._reconnector])
            self._reconnector = None
        transport, c = self._transport, self._c
        self._c = None
        if transport is not None and c is not None:
            transport.unregister(c)
            try:
                await transport.call("detach", c, {}, min(self.call_timeout, 5.0))
            except GatewayError as exc:
                log.debug("detach failed (the sim forgets it with the transport): %r", exc)
        await self._release()
        self._buffer.close()

    async def _release(self) -> None:
        transport, self._transport = self._transport, None
        self._c = None
        if transport is not None:
            await transport.release()

    # --- what the transport tells this channel ----------------------------------------------

    def on_update(self, update: dict[str, Any]) -> None:
        """An update from the sim (see :class:`~vibee.sim.telegram_client.Channel`)."""
        seq = update["seq"]
        if self._dead is not None or (self._last_seq is not None and seq <= self._last_seq):
            return
        if self._announce:
            self._announce_reconnected()
        event = update_from_wire(update)
        if event is None:
            log.warning("sim gateway: unknown update %r skipped", update.get("type"))
        elif not self._buffer.push_update(event):
            log.error("sim gateway: the sim sent past the window; re-attaching")
            if self._transport is not None and self._c is not None:
                self._transport.unregister(self._c)
                self._transport.notify("detach", self._c, {})
            self.on_end(DISCONNECTED, "event buffer overflow")
            return
        self._last_seq = seq

    def on_end(self, code: str, message: str) -> None:
        """The sim ended this logical connection."""
        self._c = None
        error = error_from_code(code, message)
        if error.ends_session:
            self._logged_out(error)
        else:
            self._lost(message or code)

    def on_lost(self, reason: str) -> None:
        """The shared transport dropped."""
        self._c = None
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if self._transport is None or self._dead is not None or self._connecting:
            return  # (connect() itself fails when its attach was cut short)
        self._buffer.push_signal(Disconnected(reason))
        if self._reconnector is None:
            self._reconnector = asyncio.create_task(self._reconnect(), name="sim-gw-reconnect")
            self._reconnector.add_done_callback(log_task_failure)

    def _logged_out(self, error: GatewayError) -> None:
        log.info("sim gateway logged out: %s", error.code)
        self._dead = error
        self.authorized = False
        self._buffer.close(LoggedOut(error))

    async def _reconnect(self) -> None:
        attempt = 0
        try:
            while self._transport is not None:
                transport = self._transport
                try:
                    await transport.ensure_open(None)
                    self._announce = True
                    await self._attach(transport)
                except GatewayError as exc:
                    self._announce = False
                    if exc.ends_session:
                        self._logged_out(exc)
                        return
                    attempt += 1
                    await asyncio.sleep(backoff(attempt))
                    continue
                if self._announce:
                    self._announce_reconnected()
                return
        finally:
            self._reconnector = None

    def _announce_reconnected(self) -> None:
        """Reconnected goes before the first update after a re-attach."""
        self._announce = False
        self._buffer.push_signal(Reconnected(self._last_seq or 0))

    # --- events -----------------------------------------------------------------------------

    def events(self) -> SimEvents:
        """The account's events (one consumer at a time)."""
        return SimEvents(self)

    def _consumed_one(self) -> None:
        self._consumed += 1
        self._grant()

    def _grant(self, *, force: bool = False) -> None:
        """Give the sim credit for the slots consumed since the last grant."""
        n = self._consumed
        if n and (force or n >= max(1, self.window // 2)) and self._c is not None:
            assert self._transport is not None
            self._transport.notify("credit", self._c, {"n": n})
            self._consumed = 0

    # --- calls ------------------------------------------------------------------------------

    async def _call(self, method: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        if self._dead is not None:
            raise self._dead
        transport, c = self._transport, self._c
        if transport is None or c is None:
            raise NotConnected()
        return await transport.call(method, c, args, timeout or self.call_timeout)

    def _authorized(self, reply: dict[str, Any]) -> Authorized:
        self.authorized = True
        if self._last_seq is None:
            self._last_seq = reply["seq"]
        assert self._credential is not None
        return Authorized(user(reply["user"]), self._credential)

    def _login_result(self, reply: dict[str, Any]) -> LoginResult:
        if reply["status"] == "password_needed":
            return PasswordRequired(reply.get("hint", ""))
        return self._authorized(reply)

    async def send_code(self, phone: str) -> LoginState:
        """Ask for a login code."""
        reply = await self._call("send_code", {"phone": phone})
        return LoginState(phone, reply["phone_code_hash"], "code_sent", reply["code_length"])

    async def sign_in(self, phone: str, code: str, phone_code_hash: str) -> LoginResult:
        """The code step."""
        args = {"phone": phone, "code": code, "phone_code_hash": phone_code_hash}
        return self._login_result(await self._call("sign_in", args))

    async def check_password(self, password: str) -> Authorized:
        """The 2FA step."""
        return self._authorized(await self._call("check_password", {"password": password}))

    async def qr_start(self) -> QrLogin:
        """A new QR login token."""
        reply = await self._call("qr_start", {})
        return QrLogin(reply["url"], date(reply["expires_at"]))

    async def qr_wait(self, timeout: float) -> LoginResult | None:
        """Wait for the QR code to be scanned."""
        reply = await self._call("qr_wait", {"timeout": timeout}, timeout + self.call_timeout)
        return None if reply["status"] == "waiting" else self._login_result(reply)

    async def me(self) -> User:
        """The account's user."""
        return user(await self._call("me", {}))

    async def dialogs(self, *, limit: int = 100, offset: int = 0) -> list[Dialog]:
        """A page of the chat list."""
        page = await self._call("dialogs", {"limit": limit, "offset": offset})
        return [
            Dialog(
                d["chat_id"],
                CHAT_TYPES[d["chat_type"]],
                d["title"],
                d["top_message_id"],
                date(d["top_message_date"]) if d["top_message_date"] is not None else None,
            )
            for d in page
        ]

    async def history(
        self, chat_id: int, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        """A page of a chat's messages, newest first."""
        args = {"chat_id": chat_id, "limit": limit, "before_id": before_id}
        return [
            Message(
                m["chat_id"],
                m["message_id"],
                m["sender_id"],
                m["text"],
                date(m["date"]),
                m["outgoing"],
                m["reply_to"],
            )
            for m in await self._call("history", args)
        ]

    async def send_message(
        self, chat_id: int, text: str, *, random_id: int, reply_to: int | None = None
    ) -> int:
        """Send a message with our ``random_id``; returns its id."""
        args = {"chat_id": chat_id, "text": text, "random_id": random_id, "reply_to": reply_to}
        reply = await self._call("send_message", args)
        message_id: int = reply["message_id"]
        return message_id

    async def send_typing(self, chat_id: int) -> None:
        """Show "typing…"."""
        await self._call("send_typing", {"chat_id": chat_id})


class SimEvents:
    """The async iterator :meth:`SimGateway.events` returns."""

    __slots__ = ("_gateway",)

    def __init__(self, gateway: SimGateway) -> None:
        self._gateway = gateway

    def __aiter__(self) -> SimEvents:
        """Itself."""
        return self

    async def __anext__(self) -> Event:
        """The next event; StopAsyncIteration after disconnect() or LoggedOut."""
        gateway = self._gateway
        event = await gateway._buffer.get()
        if event is None:
            raise StopAsyncIteration
        if not isinstance(event, Disconnected | Reconnected | LoggedOut):
            gateway._consumed_one()
        return event
