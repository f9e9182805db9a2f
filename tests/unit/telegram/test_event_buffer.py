"""SimGateway's bounded event buffer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from vibee.sim.telegram_events import SIGNAL_SLOTS, EventBuffer, update_from_wire
from vibee.telegram.gateway import (
    ChatType,
    Disconnected,
    LoggedOut,
    MessageDeleted,
    NewMessage,
    Reconnected,
    SessionRevoked,
)


def message(seq: int) -> MessageDeleted:
    return MessageDeleted(seq, 1, (seq,))


async def test_updates_beyond_the_window_are_refused() -> None:
    buffer = EventBuffer(3)
    assert all(buffer.push_update(message(i)) for i in range(3))
    assert not buffer.push_update(message(3))
    assert buffer.updates == 3
    assert await buffer.get() == message(0)
    assert buffer.updates == 2 and buffer.push_update(message(3))


async def test_signals_have_their_own_few_slots() -> None:
    buffer = EventBuffer(1)
    buffer.push_update(message(1))
    for i in range(SIGNAL_SLOTS + 5):
        buffer.push_signal(Disconnected(str(i)) if i % 2 else Reconnected(i))
    assert len(buffer) == 1 + SIGNAL_SLOTS
    assert buffer.updates == 1


async def test_close_drains_then_ends_with_the_final_event() -> None:
    buffer = EventBuffer(4)
    buffer.push_update(message(1))
    final = LoggedOut(SessionRevoked())
    buffer.close(final)
    assert not buffer.push_update(message(2))
    assert [await buffer.get(), await buffer.get(), await buffer.get()] == [message(1), final, None]


async def test_a_waiting_consumer_is_woken() -> None:
    buffer = EventBuffer(4)
    getter = asyncio.create_task(buffer.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one consumer"):
        await buffer.get()
    buffer.push_update(message(9))
    assert await getter == message(9)
    closer = asyncio.create_task(buffer.get())
    await asyncio.sleep(0)
    buffer.close()
    assert await closer is None


def test_updates_from_the_wire() -> None:
    event = update_from_wire(
        {
            "type": "new_message", "seq": 3, "chat_id": -5, "message_id": 2, "sender_id": 9,
            "sender_username": "bob", "text": "hi @al", "date": 0.0, "chat_type": "group",
            "outgoing": False, "from_bot": True, "mentions": ["al"], "reply_to": 1,
        }
    )  # fmt: skip
    assert event == NewMessage(
        3, -5, 2, 9, "bob", "hi @al", datetime(1970, 1, 1, tzinfo=UTC), ChatType.GROUP,
        from_bot=True, mentions=("al",), reply_to_msg_id=1,
    )  # fmt: skip
    assert update_from_wire({"type": "something_new", "seq": 4}) is None
