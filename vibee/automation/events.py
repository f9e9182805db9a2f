"""Real-time events for the API's WebSocket (``GET /api/v1/events``): an in-process bus.

Producers (ingest, the pipeline, the session actors) hold an :class:`EventSink` and call
:meth:`EventSink.publish` — synchronous, never blocking, safe from any task of the loop;
the default sink (:data:`NO_EVENTS`) does nothing, so a component built without one
behaves as before.

:class:`EventBus` fans an event out to the subscriptions of the event's user only. Each
subscription has a bounded queue (``queue_size``, 256 by default); when a publish finds it
full, the subscriber is too slow: it is dropped — unsubscribed, its queue emptied and
ended with ``None`` so its reader closes the socket — and counted in
``vibee_events_dropped_total``. Nothing is ever buffered without bound, and a slow
subscriber never delays the others or the producer.

Event types (each a dict with ``type``, ``ts`` (Unix seconds) and its fields):
``message.received`` {session_id, chat, message_id}, ``reply.sent`` {outbox_id,
session_id, chat, message_id}, ``lead`` {lead_id, session_id, chat, trigger},
``session.state`` {session_id, state}, ``quota.exhausted`` {session_id, chat}.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from prometheus_client import Counter

DROPPED = Counter(
    "vibee_events_dropped",
    "WebSocket event subscribers dropped because they read too slowly.",
)
DEFAULT_QUEUE_SIZE = 256


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event of type ``kind`` stamped now, with ``fields``."""
    return {"type": kind, "ts": time.time(), **fields}


class EventSink(Protocol):
    """Where producers publish events for a user."""

    def publish(self, user_id: int, event: dict[str, Any]) -> None:
        """Hand ``event`` to ``user_id``'s subscribers; never blocks."""
        ...


class NullEvents:
    """The sink that drops every event (the default of every producer)."""

    def publish(self, user_id: int, event: dict[str, Any]) -> None:
        """Do nothing."""


NO_EVENTS: EventSink = NullEvents()


class Subscription:
    """One subscriber's bounded queue; ``None`` in it means "dropped: too slow"."""

    def __init__(self, user_id: int, queue_size: int) -> None:
        """An empty subscription for ``user_id``."""
        self.user_id = user_id
        self.dropped = False
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=queue_size)

    async def next(self) -> dict[str, Any] | None:
        """The next event, waiting for one; None once the subscriber was dropped."""
        return await self.queue.get()

    def _drop(self) -> None:
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventBus:
    """Per-user fan-out with bounded queues (see the module docstring)."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        """A bus whose subscriptions hold at most ``queue_size`` events each."""
        self.queue_size = max(1, queue_size)
        self._subscribers: dict[int, set[Subscription]] = {}

    def subscribe(self, user_id: int) -> Subscription:
        """A new subscription to ``user_id``'s events; :meth:`unsubscribe` it when done."""
        subscription = Subscription(user_id, self.queue_size)
        self._subscribers.setdefault(user_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription`` (idempotent)."""
        found = self._subscribers.get(subscription.user_id)
        if found is not None:
            found.discard(subscription)
            if not found:
                del self._subscribers[subscription.user_id]

    def users(self) -> list[int]:
        """The users with at least one subscription now."""
        return list(self._subscribers)

    def subscribers(self, user_id: int) -> int:
        """How many subscriptions ``user_id`` has now."""
        return len(self._subscribers.get(user_id, ()))

    def publish(self, user_id: int, event: dict[str, Any]) -> None:
        """Queue ``event`` for each of ``user_id``'s subscribers; drop the full ones."""
        found = self._subscribers.get(user_id)
        if not found:
            return
        for subscription in list(found):
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.unsubscribe(subscription)
                subscription._drop()
                DROPPED.inc()
