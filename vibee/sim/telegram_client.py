"""The client side of the sim's wire protocol: one multiplexed WebSocket per sim URL.

Every ``SimGateway`` of one event loop that talks to the same sim shares one
:class:`SimTransport` (:func:`transport_for`): each gateway is a *channel*, a logical
connection with its own id ``c``. The transport is opened lazily by the first gateway that
connects, reopened with exponential backoff (shared: one attempt at a time however many
gateways wait) and closed when the last gateway lets go. When it drops, every pending call
fails with :class:`NetworkError` and every channel hears ``on_lost``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import weakref
from typing import Any, Protocol

import aiohttp

from vibee.sim.telegram_wire import (
    MAX_MESSAGE,
    WS_PATH,
    Outbox,
    OutboxFull,
    decode,
    dumps,
    log_task_failure,
)
from vibee.telegram.gateway import NetworkError, NotConnected, error_from_code

log = logging.getLogger("vibee.telegram")

BACKOFF_BASE = 0.05
BACKOFF_MAX = 5.0


class Channel(Protocol):
    """What a transport tells one logical connection (a gateway)."""

    def on_update(self, update: dict[str, Any]) -> None:
        """An update for this channel's account."""

    def on_end(self, code: str, message: str) -> None:
        """The sim ended this logical connection (``code``: DISCONNECTED, SESSION_REVOKED…)."""

    def on_lost(self, reason: str) -> None:
        """The whole transport dropped."""


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry (1-based)."""
    delay: float = min(cap, base * 2.0 ** min(attempt, 30)) * random.uniform(0.5, 1.0)
    return delay


class SimTransport:
    """One WebSocket to a sim, multiplexing many channels."""

    def __init__(self, sim_url: str) -> None:
        self.sim_url = sim_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outbox: Outbox | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._opener: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._channels: dict[int, Channel] = {}
        self._request_ids = itertools.count(1)
        self._channel_ids = itertools.count(1)
        self._users = 0
        self.opened = 0

    @property
    def is_open(self) -> bool:
        """Whether the WebSocket is up."""
        return self._outbox is not None

    # --- lifetime ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """One more gateway uses this transport."""
        self._users += 1

    async def release(self) -> None:
        """One gateway less; the last one closes the transport."""
        self._users -= 1
        if self._users <= 0:
            await self.close()

    async def ensure_open(self, timeout: float | None) -> None:
        """Wait until the WebSocket is up (NetworkError after ``timeout`` seconds)."""
        if self._outbox is not None:
            return
        if self._opener is None or self._opener.done():
            self._opener = asyncio.create_task(self._open_loop(), name="sim-transport-open")
            self._opener.add_done_callback(log_task_failure)
        try:
            await asyncio.wait_for(asyncio.shield(self._opener), timeout)
        except TimeoutError:
            raise NetworkError(
                f"The Telegram simulator at {self.sim_url} is unreachable."
            ) from None

    async def _open_loop(self) -> None:
        attempt = 0
        while True:
            try:
                await self._open_once()
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                attempt += 1
                delay = backoff(attempt)
                log.warning("sim transport %s: %r; retrying in %.2f s", self.sim_url, exc, delay)
                await asyncio.sleep(delay)

    async def _open_once(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(
            self.sim_url + WS_PATH,
            heartbeat=20.0,
            max_msg_size=MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
        )
        self._ws = ws
        self._outbox = Outbox(ws.send_bytes, high=1 << 30, limit=1 << 20)
        self.opened += 1
        reader = asyncio.create_task(self._read(ws), name="sim-transport-read")
        writer = asyncio.create_task(self._write(self._outbox, reader), name="sim-transport-write")
        for task in (reader, writer):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(log_task_failure)
        log.debug("sim transport %s open", self.sim_url)

    async def close(self) -> None:
        """Close the WebSocket and stop every task (channels are not told)."""
        _REGISTRY.get(asyncio.get_running_loop(), {}).pop(self.sim_url, None)
        tasks = [t for t in (self._opener, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._opener = None
        self._drop(None, "transport closed", tell=False)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- traffic ----------------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        reason = "the connection to the Telegram simulator closed"
        try:
            async for msg in ws:
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    self._dispatch(decode(msg.data))
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"the connection to the Telegram simulator failed: {ws.exception()!r}"
                    break
        except ValueError as exc:
            reason = f"the Telegram simulator sent a bad frame: {exc}"
        finally:
            self._drop(ws, reason, tell=True)
            if not ws.closed:
                await ws.close()

    async def _write(self, outbox: Outbox, reader: asyncio.Task[None]) -> None:
        try:
            await outbox.run()
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            log.debug("sim transport write failed: %r", exc)
            reader.cancel()

    def _dispatch(self, objs: list[dict[str, Any]]) -> None:
        channels = self._channels
        for obj in objs:
            try:
                c = obj.get("c")
                if "u" in obj:
                    channel = channels.get(c)  # type: ignore[arg-type]
                    if channel is not None:
                        channel.on_update(obj["u"])
                elif "id" in obj:
                    fut = self._pending.pop(obj["id"], None)
                    if fut is not None and not fut.done():
                        if "e" in obj:
                            e = obj["e"]
                            fut.set_exception(
                                error_from_code(e["code"], e.get("message"), e.get("seconds", 0))
                            )
                        else:
                            fut.set_result(obj.get("r"))
                elif "x" in obj:
                    channel = channels.pop(c, None)  # type: ignore[arg-type]
                    if channel is not None:
                        channel.on_end(obj["x"]["code"], obj["x"].get("message", ""))
            except Exception:
                log.exception("sim transport: could not handle %r", obj)

    def _drop(self, ws: aiohttp.ClientWebSocketResponse | None, reason: str, tell: bool) -> None:
        if ws is not None and ws is not self._ws:
            return
        self._ws = None
        self._outbox = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(NetworkError(reason))
        channels, self._channels = self._channels, {}
        if tell:
            log.info("sim transport %s lost: %s", self.sim_url, reason)
            for channel in channels.values():
                try:
                    channel.on_lost(reason)
                except Exception:
                    log.exception("sim transport: a channel failed on a lost connection")

    # --- channels and calls -----------------------------------------------------------------

    def register(self, channel: Channel) -> int:
        """A new channel id for ``channel`` on the current WebSocket."""
        c = next(self._channel_ids)
        self._channels[c] = channel
        return c

    def channel(self, c: int) -> Channel | None:
        """The channel registered as ``c``, if it still is."""
        return self._channels.get(c)

    def unregister(self, c: int) -> None:
        """Forget channel ``c``."""
        self._channels.pop(c, None)

    async def call(self, method: str, c: int | None, args: dict[str, Any], timeout: float) -> Any:
        """Send a request and wait for its answer (raises the sim's error, typed)."""
        outbox = self._outbox
        if outbox is None:
            raise NotConnected()
        rid = next(self._request_ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            outbox.put(dumps({"id": rid, "m": method, "c": c, "a": args}))
        except OutboxFull:
            raise NetworkError("Too many requests are waiting for the simulator.") from None
        self._pending[rid] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NetworkError(f"No answer from the simulator within {timeout:g} s.") from None
        finally:
            self._pending.pop(rid, None)

    def notify(self, method: str, c: int, args: dict[str, Any]) -> None:
        """Send a notification (no answer); dropped if the WebSocket is down."""
        if self._outbox is not None:
            try:
                self._outbox.put(dumps({"m": method, "c": c, "a": args}))
            except OutboxFull:
                log.warning("sim transport: outbox full, %s for channel %d dropped", method, c)


_REGISTRY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SimTransport]] = (
    weakref.WeakKeyDictionary()
)


def transport_for(sim_url: str) -> SimTransport:
    """The running loop's shared transport to ``sim_url`` (created on first use)."""
    transports = _REGISTRY.setdefault(asyncio.get_running_loop(), {})
    url = sim_url.rstrip("/")
    transport = transports.get(url)
    if transport is None:
        transport = transports[url] = SimTransport(url)
    return transport
