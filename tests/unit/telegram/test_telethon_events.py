"""Telethon events (built from Telethon's own types) converted to the gateway's events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telethon import TelegramClient, events, utils
from telethon.sessions import MemorySession
from telethon.tl import types

from tests.unit.telegram.test_telethon_fakes import API_HASH, API_ID, ME, NOW, user
from vibee.telegram.gateway import ChatType, Disconnected, LoggedOut, NewMessage, SessionRevoked
from vibee.telegram.telethon_events import (
    EventStream,
    Me,
    SeqClock,
    deleted_from,
    edited_from,
    new_message_from,
)

OWNER = Me(ME, "Owner")
ALICE = user(456, "Alice", "Alice")
BOT = user(457, "Helper", "helper_bot", bot=True)
NEWS = types.Channel(
    id=777, title="News", photo=types.ChatPhotoEmpty(), date=NOW, broadcast=True, access_hash=5
)
SUPER = types.Channel(
    id=778, title="Chat", photo=types.ChatPhotoEmpty(), date=NOW, megagroup=True, access_hash=6
)
BASIC = types.Chat(
    id=55, title="Basic", photo=types.ChatPhotoEmpty(), participants_count=3, date=NOW, version=1
)


def client() -> Any:
    """An unconnected client that knows who it is."""
    c = TelegramClient(MemorySession(), API_ID, API_HASH)
    c._mb_entity_cache.set_self_user(ME, False, 99)
    return c


def build(builder: Any, update: Any, *entities: Any, on: Any = None) -> Any:
    """The REFERENCE recipe: build the event, give it its entities and the client."""
    event = builder.build(update, None, ME)
    assert event is not None
    event.original_update = update
    for entity in entities:
        event._entities[utils.get_peer_id(entity)] = entity
    event._set_client(on or client())
    return event


def message(**fields: Any) -> Any:
    fields.setdefault("date", NOW)
    fields.setdefault("message", "hi")
    return types.Message(**fields)


def new(msg: Any, *entities: Any, pts: int = 101, seq: int = 101) -> NewMessage:
    update = types.UpdateNewMessage(message=msg, pts=pts, pts_count=1)
    return new_message_from(build(events.NewMessage, update, *entities), seq, OWNER)


def test_private_incoming() -> None:
    m = new(message(id=10, peer_id=types.PeerUser(456), from_id=types.PeerUser(456)), ALICE)
    assert (m.chat_id, m.message_id, m.sender_id, m.sender_username) == (456, 10, 456, "Alice")
    assert m.chat_type is ChatType.PRIVATE and m.is_private
    assert not m.outgoing and not m.from_bot and m.mentions == () and m.reply_to_msg_id is None
    assert (m.text, m.date, m.seq) == ("hi", NOW, 101)


def test_outgoing_from_another_device_is_ours() -> None:
    m = new(message(id=11, peer_id=types.PeerUser(456), out=True), ALICE)
    assert m.outgoing and m.sender_id == ME and m.chat_id == 456


def test_bot_sender() -> None:
    m = new(message(id=12, peer_id=types.PeerUser(457), from_id=types.PeerUser(457)), BOT)
    assert m.from_bot and m.sender_username == "helper_bot"


def test_bot_known_only_to_telethons_entity_cache() -> None:
    c = client()
    c._mb_entity_cache.extend([BOT], [])
    group = types.PeerChat(55)
    update = types.UpdateNewMessage(
        message=message(id=13, peer_id=group, from_id=types.PeerUser(457)), pts=1, pts_count=1
    )
    m = new_message_from(build(events.NewMessage, update, BASIC, on=c), 1, OWNER)
    assert m.from_bot and m.chat_type is ChatType.GROUP


def test_broadcast_channel_post() -> None:
    update = types.UpdateNewChannelMessage(
        message=message(id=14, peer_id=types.PeerChannel(777), post=True), pts=9, pts_count=1
    )
    m = new_message_from(build(events.NewMessage, update, NEWS), 200, OWNER)
    assert m.chat_type is ChatType.CHANNEL and m.is_channel
    assert m.chat_id == -1000000000777 and m.sender_id == -1000000000777
    assert not m.outgoing and not m.from_bot


def test_megagroup_is_a_group() -> None:
    update = types.UpdateNewChannelMessage(
        message=message(id=15, peer_id=types.PeerChannel(778), from_id=types.PeerUser(456)),
        pts=3,
        pts_count=1,
    )
    m = new_message_from(build(events.NewMessage, update, SUPER, ALICE), 200, OWNER)
    assert m.chat_type is ChatType.GROUP and m.chat_id == -1000000000778 and m.sender_id == 456


def test_channel_type_from_the_entity_cache_or_the_post_flag() -> None:
    c = client()
    c._mb_entity_cache.extend([], [SUPER])
    peer = types.PeerChannel(778)
    update = types.UpdateNewChannelMessage(
        message=message(id=16, peer_id=peer, from_id=types.PeerUser(456)), pts=4, pts_count=1
    )
    assert new_message_from(build(events.NewMessage, update, on=c), 1, OWNER).is_group
    unknown = types.UpdateNewChannelMessage(
        message=message(id=17, peer_id=types.PeerChannel(999), post=True), pts=1, pts_count=1
    )
    assert new_message_from(build(events.NewMessage, unknown), 1, OWNER).is_channel


def test_basic_group() -> None:
    m = new(message(id=18, peer_id=types.PeerChat(55), from_id=types.PeerUser(456)), BASIC)
    assert m.chat_type is ChatType.GROUP and m.chat_id == -55


def test_mentions_entities_and_the_mentioned_flag() -> None:
    text = "hey @Alice, @bob and Carol; mail a@b.c"
    entities = [
        types.MessageEntityMention(offset=4, length=6),
        types.MessageEntityMention(offset=12, length=4),
        types.MessageEntityMentionName(offset=21, length=5, user_id=31337),
        types.MessageEntityEmail(offset=33, length=5),
    ]
    msg = message(
        id=19, peer_id=types.PeerChat(55), from_id=types.PeerUser(456), message=text,
        entities=entities,
    )  # fmt: skip
    assert new(msg, BASIC, ALICE).mentions == ("alice", "bob", "id:31337")
    msg.mentioned = True  # Telegram: we are mentioned (or replied to)
    assert new(msg, BASIC, ALICE).mentions == ("alice", "bob", "id:31337", "owner")


def test_mentions_count_utf16_offsets_like_telegram() -> None:
    text = "👋 @Alice"  # the emoji is two UTF-16 code units
    msg = message(
        id=20, peer_id=types.PeerUser(456), from_id=types.PeerUser(456), message=text,
        entities=[types.MessageEntityMention(offset=3, length=6)],
    )  # fmt: skip
    assert new(msg, ALICE).mentions == ("alice",)


def test_reply_to() -> None:
    msg = message(
        id=21, peer_id=types.PeerUser(456), from_id=types.PeerUser(456),
        reply_to=types.MessageReplyHeader(reply_to_msg_id=5),
    )  # fmt: skip
    assert new(msg, ALICE).reply_to_msg_id == 5


def test_service_messages_are_not_new_messages() -> None:
    service = types.MessageService(
        id=22, peer_id=types.PeerChat(55), date=NOW, action=types.MessageActionChatCreate("x", [1])
    )
    assert events.NewMessage.build(types.UpdateNewMessage(service, 1, 1)) is None


def test_edited_and_deleted() -> None:
    edited_msg = message(
        id=23, peer_id=types.PeerUser(456), from_id=types.PeerUser(456), message="fixed",
        edit_date=NOW.replace(minute=9),
    )  # fmt: skip
    update = types.UpdateEditMessage(message=edited_msg, pts=102, pts_count=1)
    edited = edited_from(build(events.MessageEdited, update, ALICE), 102, OWNER)
    assert (edited.text, edited.message_id, edited.chat_id, edited.seq) == ("fixed", 23, 456, 102)
    assert edited.date.minute == 9 and edited.chat_type is ChatType.PRIVATE
    gone = types.UpdateDeleteChannelMessages(channel_id=777, messages=[3, 4], pts=5, pts_count=2)
    deleted = deleted_from(build(events.MessageDeleted, gone, NEWS), 103)
    assert (deleted.chat_id, deleted.message_ids, deleted.seq) == (-1000000000777, (3, 4), 103)
    private = types.UpdateDeleteMessages(messages=[7], pts=104, pts_count=1)
    assert deleted_from(build(events.MessageDeleted, private), 104).chat_id == 0


def test_seq_clock() -> None:
    clock = SeqClock(100)
    peer = types.PeerUser(456)

    def live(pts: int) -> Any:
        return types.UpdateNewMessage(message=message(id=pts, peer_id=peer), pts=pts, pts_count=1)

    def fetched() -> Any:  # as Telethon wraps getDifference's new_messages
        return types.UpdateNewMessage(message=message(id=1, peer_id=peer), pts=0, pts_count=0)

    channel = types.UpdateNewChannelMessage(
        message=message(id=1, peer_id=types.PeerChannel(777)), pts=5000, pts_count=1
    )
    got = [clock.next(u) for u in (live(101), channel, live(102), fetched(), fetched())]
    assert got == [101, 101, 102, 103, 104]
    assert clock.next(live(110)) == 110 and clock.next(live(90)) == 110  # never backwards
    assert clock.next(None) == 110
    clock.raise_to(50)
    assert clock.floor == 110


async def test_stream_is_bounded_and_waits_for_room() -> None:
    stream = EventStream(2)
    m = new(message(id=1, peer_id=types.PeerUser(456)), ALICE)
    assert await stream.put(m) and await stream.put(m)
    third = asyncio.create_task(stream.put(m))
    await asyncio.sleep(0)
    assert not third.done() and len(stream) == 2  # full: the producer waits, nothing is lost
    assert await stream.get() is m
    assert await third and len(stream) == 2


async def test_stream_signals_never_wait_and_close_ends_after_the_buffer() -> None:
    stream = EventStream(1)
    m = new(message(id=1, peer_id=types.PeerUser(456)), ALICE)
    await stream.put(m)
    stream.signal(Disconnected("x"))  # full: dropped, not waited for
    logged_out = LoggedOut(SessionRevoked())
    stream.close(logged_out)
    assert not await stream.put(m)  # closed: refused
    assert [await stream.get(), await stream.get(), await stream.get()] == [m, logged_out, None]


async def test_close_wakes_a_waiting_consumer() -> None:
    stream = EventStream(4)
    waiting = asyncio.create_task(stream.get())
    await asyncio.sleep(0)
    stream.close()
    assert await waiting is None


@pytest.mark.parametrize("size", [1, 3])
async def test_a_waiting_consumer_gets_the_next_update(size: int) -> None:
    stream = EventStream(size)
    waiting = asyncio.create_task(stream.get())
    await asyncio.sleep(0)
    m = new(message(id=1, peer_id=types.PeerUser(456)), ALICE)
    await stream.put(m)
    assert await waiting is m
