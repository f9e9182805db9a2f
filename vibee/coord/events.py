"""Events of a session reach the user's WebSockets on any instance.

A session runs on one instance; its owner's WebSocket (``GET /api/v1/events``) may be
open on another. :class:`EventRelay` is the :class:`~vibee.automation.events.EventSink`
the pipeline and the sessions publish to: it delivers to this instance's subscribers, and
forwards the event over the bus to every instance that said it has a subscriber for the
user. Each instance says so by broadcasting the users it has sockets for every
``retry_s`` (``watch``); a claim expires after three periods unless repeated.

Forwarding is best effort, as the WebSocket itself is: a bounded queue, events dropped
(and counted) when it is full or Redis is away. With one instance nothing is forwarded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter

from vibee.automation.events import EventBus
from vibee.coord.bus import Message
from vibee.coord.coordinator import Coordinator

DROPPED = Counter(
    "vibee_events_forward_dropped", "Events not forwarded to another instance (queue full)."
)
QUEUE_SIZE = 10_000


class EventRelay:
    """The event sink of this instance; :meth:`run` is the ``events-relay`` child."""

    def __init__(self, local: EventBus, coordinator: Coordinator) -> None:
        self._local = local
        self._coord = coordinator
        self._watchers: dict[int, dict[str, float]] = {}
        self._out: asyncio.Queue[tuple[str, Message]] = asyncio.Queue(maxsize=QUEUE_SIZE)

    def publish(self, user_id: int, event: dict[str, Any]) -> None:
        """Deliver here, and queue the event for the instances watching ``user_id``."""
        self._local.publish(user_id, event)
        watching = self._watchers.get(user_id)
        if not watching:
            return
        now = time.monotonic()
        for instance, until in list(watching.items()):
            if until < now:
                del watching[instance]
                continue
            try:
                self._out.put_nowait((instance, {"t": "event", "u": user_id, "e": event}))
            except asyncio.QueueFull:
                DROPPED.inc()

    def on_bus(self, message: Message) -> None:
        """An event forwarded to us, or a peer saying whose sockets it holds."""
        kind = message.get("t")
        if kind == "event":
            user, event = message.get("u"), message.get("e")
            if isinstance(user, int) and isinstance(event, dict):
                self._local.publish(user, event)
        elif kind == "watch":
            instance, users = message.get("i"), message.get("us")
            if instance == self._coord.instance_id or not isinstance(users, list):
                return
            until = time.monotonic() + 3 * self._coord.retry_s
            for user in users:
                if isinstance(user, int):
                    self._watchers.setdefault(user, {})[str(instance)] = until

    async def run(self) -> None:
        """Send the queued events; say whose sockets this instance holds."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._forward(), name="events-relay:forward")
            while True:
                users = self._local.users()
                if users:
                    message = {"t": "watch", "i": self._coord.instance_id, "us": users}
                    await self._coord.bus.send(None, message)
                self._prune()
                await asyncio.sleep(self._coord.retry_s)

    async def _forward(self) -> None:
        while True:
            instance, message = await self._out.get()
            await self._coord.bus.send(instance, message)

    def _prune(self) -> None:
        now = time.monotonic()
        for user in list(self._watchers):
            alive = {i: t for i, t in self._watchers[user].items() if t >= now}
            if alive:
                self._watchers[user] = alive
            else:
                del self._watchers[user]
