"""Telethon's events turned into the gateway's, and the bounded stream they flow through.

Telethon calls our handlers from its update loop (``sequential_updates=True``: one at a
time, in the order its MessageBox applied the updates). A handler only converts the event
(pure code, no I/O) and puts the result into an :class:`EventStream`: at most ``maxsize``
updates wait there; when it is full the handler waits for room, which holds Telethon's
dispatch for this account only (its own network queue keeps filling, nothing is lost).

``seq`` (:class:`SeqClock`): Telegram numbers the account's common updates (private chats
and basic groups) with ``pts``. A live update carries its pts, and that is its seq.
Messages Telethon fetches with getDifference reach handlers without one, in pts order,
starting above the account's pts: the k-th has a pts of at least start + k, so they are
numbered floor + 1, floor + 2, … where the floor is the highest seq given so far (never
above the start). Channels and supergroups count their own pts, so their messages carry
the floor unchanged. Seq is therefore non-decreasing and never above the pts of an update
not yet delivered: storing ``last_seq`` and passing it back to ``connect`` makes
getDifference redeliver everything not stored (duplicates are dropped by the ingest's
unique key). Channel catch-up uses the per-channel pts Telethon saves in
``telethon_update_state``.

Flags: ``outgoing`` is ``message.out`` (our other devices; Telethon never dispatches what
this client sent), ``from_bot`` the sender being a bot user, ``chat_type`` private (a user),
group (a basic group, a megagroup or a gigagroup) or channel (a broadcast channel),
``mentions`` the lowercased ``@usernames`` of the message's mention entities, plus
``id:<user id>`` for a mention of a user without a username, plus our own username when
Telegram marks the message ``mentioned`` (a mention or a reply to us), and
``reply_to_msg_id`` the replied message's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from telethon import utils
from telethon.tl import types

from vibee.telegram.gateway import (
    ChatType,
    Event,
    MessageDeleted,
    MessageEdited,
    NewMessage,
    Signal,
    Update,
)

log = logging.getLogger("vibee.telegram.telethon_events")

_ACCOUNT_PTS = (
    types.UpdateNewMessage,
    types.UpdateEditMessage,
    types.UpdateDeleteMessages,
    types.UpdateShortMessage,
    types.UpdateShortChatMessage,
)
# Telethon's EntityType values (ASCII letters) in its in-memory entity cache
_BOT, _CHANNEL, _MEGAGROUP, _GIGAGROUP = ord("B"), ord("C"), ord("M"), ord("E")


@dataclass(frozen=True, slots=True)
class Me:
    """What conversion needs to know about the account itself."""

    user_id: int = 0
    username: str | None = None


class SeqClock:
    """The per-account ``seq`` of converted updates (see the module docstring)."""

    __slots__ = ("floor",)

    def __init__(self, floor: int = 0) -> None:
        self.floor = floor

    def next(self, update: Any) -> int:
        """The seq for ``update`` (Telethon's original update object)."""
        if not isinstance(update, _ACCOUNT_PTS):
            return self.floor  # a channel's update (its own pts), or unknown
        pts = getattr(update, "pts", 0)
        if isinstance(pts, int) and pts > 0:
            self.floor = max(self.floor, pts)
        elif isinstance(update, types.UpdateNewMessage):
            self.floor += 1  # fetched by getDifference: no pts of its own
        return self.floor

    def raise_to(self, pts: int) -> None:
        """The account's pts is known to be at least ``pts`` (e.g. after connecting)."""
        self.floor = max(self.floor, pts)


def _cached_type(client: Any, marked_id: int) -> int | None:
    """The entity type Telethon's in-memory cache knows for ``marked_id`` (if any)."""
    cache = getattr(client, "_mb_entity_cache", None)
    if cache is None:
        return None
    entity = cache.get(utils.resolve_id(marked_id)[0])
    return int(entity.ty) if entity is not None else None


def chat_type_of(message: Any, client: Any = None) -> ChatType:
    """Private, group (basic, mega- or gigagroup) or channel (broadcast only)."""
    peer = message.peer_id
    if isinstance(peer, types.PeerUser):
        return ChatType.PRIVATE
    if isinstance(peer, types.PeerChat):
        return ChatType.GROUP
    chat = message.chat
    if isinstance(chat, types.Channel | types.ChannelForbidden):
        if getattr(chat, "megagroup", False) or getattr(chat, "gigagroup", False):
            return ChatType.GROUP
        if chat.broadcast:
            return ChatType.CHANNEL
    kind = _cached_type(client, message.chat_id) if client is not None else None
    if kind in (_MEGAGROUP, _GIGAGROUP):
        return ChatType.GROUP
    if kind == _CHANNEL:
        return ChatType.CHANNEL
    return ChatType.CHANNEL if message.post else ChatType.GROUP


def is_from_bot(message: Any, client: Any = None) -> bool:
    """Whether the sender is a bot user."""
    sender = message.sender
    if isinstance(sender, types.User):
        return bool(sender.bot)
    if sender is None and message.sender_id is not None and client is not None:
        return _cached_type(client, message.sender_id) == _BOT
    return False


def mentions_of(message: Any, me: Me) -> tuple[str, ...]:
    """Who the message addresses (see the module docstring)."""
    names: list[str] = []
    for entity, text in message.get_entities_text():
        if isinstance(entity, types.MessageEntityMention):
            name = text.lstrip("@").lower()
        elif isinstance(entity, types.MessageEntityMentionName):
            name = f"id:{entity.user_id}"
        else:
            continue
        if name and name not in names:
            names.append(name)
    own = me.username.lower() if me.username else None
    if message.mentioned and own and own not in names:
        names.append(own)
    return tuple(names)


def _sender_id(message: Any, me: Me) -> int:
    if message.sender_id is not None:
        return int(message.sender_id)
    return me.user_id if message.out else int(message.chat_id)


def _date(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.now(UTC)


def new_message_from(event: Any, seq: int, me: Me) -> NewMessage:
    """The gateway's NewMessage for a Telethon ``events.NewMessage.Event``."""
    message = event.message
    client = event.client
    sender = message.sender
    return NewMessage(
        seq=seq,
        chat_id=int(message.chat_id),
        message_id=int(message.id),
        sender_id=_sender_id(message, me),
        sender_username=getattr(sender, "username", None) or None,
        text=message.message or "",
        date=_date(message.date),
        chat_type=chat_type_of(message, client),
        outgoing=bool(message.out),
        from_bot=is_from_bot(message, client),
        mentions=mentions_of(message, me),
        reply_to_msg_id=message.reply_to_msg_id,
    )


def edited_from(event: Any, seq: int, me: Me) -> MessageEdited:
    """The gateway's MessageEdited for a Telethon ``events.MessageEdited.Event``."""
    message = event.message
    return MessageEdited(
        seq=seq,
        chat_id=int(message.chat_id),
        message_id=int(message.id),
        sender_id=_sender_id(message, me),
        text=message.message or "",
        date=_date(message.edit_date or message.date),
        chat_type=chat_type_of(message, event.client),
        outgoing=bool(message.out),
    )


def deleted_from(event: Any, seq: int) -> MessageDeleted:
    """The gateway's MessageDeleted. Telegram names the chat for channel deletions only;
    ``chat_id`` is 0 when it does not (private chats and basic groups)."""
    return MessageDeleted(
        seq=seq, chat_id=int(event.chat_id or 0), message_ids=tuple(event.deleted_ids or ())
    )


class EventStream:
    """The account's events: at most ``maxsize`` updates; signals never wait."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self._closed = False
        self._final: Event | None = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (buffered events are still delivered)."""
        return self._closed

    def __len__(self) -> int:
        """Events waiting."""
        return self._queue.qsize()

    async def put(self, event: Update) -> bool:
        """Add an update, waiting for room. False (dropped) once the stream is closed."""
        if self._closed:
            return False
        await self._queue.put(event)
        return True

    def signal(self, event: Signal) -> None:
        """Add a connection signal without waiting (dropped, logged, if the buffer is full)."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("event buffer full: signal %s dropped", type(event).__name__)

    def close(self, final: Event | None = None) -> None:
        """End the stream after what is buffered, then ``final`` (e.g. LoggedOut)."""
        if self._closed:
            return
        self._closed = True
        self._final = final
        # wake a consumer waiting on an empty buffer (a full one is not waited on: its
        # consumer drains it, then sees the stream closed)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event; None once the stream is closed and drained."""
        while True:
            if self._closed and self._queue.empty():
                final, self._final = self._final, None
                return final
            item = await self._queue.get()
            if item is not None:
                return item


class StreamEvents:
    """The async iterator ``events()`` returns: reads whichever stream is current."""

    __slots__ = ("_current",)

    def __init__(self, current: Callable[[], EventStream]) -> None:
        self._current = current

    def __aiter__(self) -> StreamEvents:
        """Itself."""
        return self

    async def __anext__(self) -> Event:
        """The next event; StopAsyncIteration after disconnect() or LoggedOut."""
        event = await self._current().get()
        if event is None:
            raise StopAsyncIteration
        return event
