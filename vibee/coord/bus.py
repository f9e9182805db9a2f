"""Commands and notices between instances: Redis pub/sub, the Postgres sweep behind it.

An API call on instance A about a session instance B runs (a message to send, a changed
chat config, a finished login) writes what must happen to Postgres first, then tells B —
or every instance — through this bus so it acts at once instead of at its next sweep.
Pub/sub delivers at most once and only to who listens now; what it loses the sweeps find
(every few seconds), so a command is carried out at least once, and every handler is
idempotent. After (re)subscribing, the handler gets ``{"t": "resync"}``: messages may have
been missed, sweep now.

Two channels per deployment: ``<prefix>:bus:all`` (everyone) and ``<prefix>:bus:<id>``
(one instance). A message is a small JSON object with a type ``t``; ``o`` names the
sender, and an instance ignores its own broadcasts (it handled them when sending).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("vibee.coord.bus")

Message = dict[str, Any]
Handler = Callable[[Message], None]


class RedisBus:
    """Pub/sub between instances (see the module docstring)."""

    def __init__(self, client: Redis, instance_id: str, prefix: str) -> None:
        self._client = client
        self._id = instance_id
        self._all = f"{prefix}:bus:all"
        self._prefix = prefix
        self._handler: Handler = lambda _: None
        self.subscribed = asyncio.Event()

    def on_message(self, handler: Handler) -> None:
        """Where received messages go (one handler; it must not block)."""
        self._handler = handler

    async def send(self, to: str | None, message: Message) -> bool:
        """Publish to instance ``to`` (None: every instance, this one handles it now).
        False when Redis is unreachable (the sweep will find the work instead)."""
        payload = json.dumps({**message, "o": self._id}, separators=(",", ":"))
        if to is None:
            self._handler(message)
        elif to == self._id:
            self._handler(message)
            return True
        channel = self._all if to is None else f"{self._prefix}:bus:{to}"
        try:
            await self._client.publish(channel, payload)
        except RedisError as exc:
            log.warning("cannot publish to the bus", extra={"error": type(exc).__name__})
            return False
        return True

    async def run(self) -> None:
        """Listen until cancelled, subscribing again after Redis comes back."""
        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._all, f"{self._prefix}:bus:{self._id}")
                self.subscribed.set()
                delay = 0.1
                self._handler({"t": "resync"})
                while True:
                    raw = await pubsub.get_message(timeout=None)
                    if raw is not None:
                        self._dispatch(raw.get("data"))
            except RedisError as exc:
                self.subscribed.clear()
                log.warning("bus disconnected", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, data: Any) -> None:
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            log.warning("ignoring a malformed bus message")
            return
        if not isinstance(message, dict) or message.pop("o", None) == self._id:
            return
        try:
            self._handler(message)
        except Exception:
            log.exception("bus handler failed", extra={"type": message.get("t")})


class LocalBus:
    """One instance: a message goes straight to the handler."""

    def __init__(self) -> None:
        self._handler: Handler = lambda _: None
        self.subscribed = asyncio.Event()
        self.subscribed.set()

    def on_message(self, handler: Handler) -> None:
        """Where messages go."""
        self._handler = handler

    async def send(self, to: str | None, message: Message) -> bool:
        """Handle it here, now."""
        self._handler(message)
        return True

    async def run(self) -> None:
        """Nothing to listen to."""
        await asyncio.Event().wait()
