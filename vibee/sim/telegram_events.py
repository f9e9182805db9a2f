"""The client's view of the sim's updates: wire objects → gateway events, and the buffer.

:func:`update_from_wire` turns one ``u`` object of the wire protocol into a frozen event;
:class:`EventBuffer` holds at most ``window`` of them (plus a few connection signals) for
one consumer, which is what makes the credit protocol's backpressure work.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

from vibee.telegram.gateway import (
    ChatType,
    Disconnected,
    Event,
    LoggedOut,
    MessageDeleted,
    MessageEdited,
    NewMessage,
    Reconnected,
    Update,
    User,
)

log = logging.getLogger("vibee.telegram")

SIGNAL_SLOTS = 8
CHAT_TYPES = {t.value: t for t in ChatType}


def date(value: float) -> datetime:
    """A wire timestamp (Unix seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


def user(data: dict[str, Any]) -> User:
    """A wire user object."""
    return User(data["id"], data["name"], data.get("username"), data["bot"], data.get("phone"))


def update_from_wire(u: dict[str, Any]) -> Update | None:
    """The event for one update object of the wire protocol (None: unknown type)."""
    kind = u.get("type")
    if kind == "new_message":
        return NewMessage(
            seq=u["seq"],
            chat_id=u["chat_id"],
            message_id=u["message_id"],
            sender_id=u["sender_id"],
            sender_username=u["sender_username"],
            text=u["text"],
            date=date(u["date"]),
            chat_type=CHAT_TYPES[u["chat_type"]],
            outgoing=u["outgoing"],
            from_bot=u["from_bot"],
            mentions=tuple(u["mentions"]),
            reply_to_msg_id=u["reply_to"],
        )
    if kind == "message_edited":
        return MessageEdited(
            seq=u["seq"],
            chat_id=u["chat_id"],
            message_id=u["message_id"],
            sender_id=u["sender_id"],
            text=u["text"],
            date=date(u["date"]),
            chat_type=CHAT_TYPES[u["chat_type"]],
            outgoing=u["outgoing"],
        )
    if kind == "message_deleted":
        return MessageDeleted(u["seq"], u["chat_id"], tuple(u["message_ids"]))
    return None


class EventBuffer:
    """At most ``window`` updates plus a few signals, for one consumer.

    Producers never wait: :meth:`push_update` refuses beyond the window (the credit
    protocol keeps the sim from sending more), :meth:`push_signal` drops transient
    signals once their slots are taken. :meth:`close` ends the stream after what is
    buffered, with a final event if given.
    """

    __slots__ = ("_closed", "_final", "_items", "_waiter", "updates", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.updates = 0
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._final: Event | None = None

    def __len__(self) -> int:
        """Events waiting."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def push_update(self, event: Update) -> bool:
        """Buffer an update; False when the window is full."""
        if self.updates >= self.window or self._closed:
            return False
        self._items.append(event)
        self.updates += 1
        self._wake()
        return True

    def push_signal(self, event: Event) -> None:
        """Buffer a connection signal (dropped if the signal slots are full)."""
        if self._closed or len(self._items) - self.updates >= SIGNAL_SLOTS:
            log.debug("event buffer: %r dropped", event)
            return
        self._items.append(event)
        self._wake()

    def close(self, final: Event | None = None) -> None:
        """No more events after what is buffered (and ``final``)."""
        if not self._closed:
            self._closed = True
            self._final = final
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event | None:
        """The next event; None once closed and drained."""
        while not self._items:
            if self._closed:
                final, self._final = self._final, None
                return final
            if self._waiter is not None:
                raise RuntimeError("events() has one consumer at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._items.popleft()
        if not isinstance(event, Disconnected | Reconnected | LoggedOut):
            self.updates -= 1
        return event
