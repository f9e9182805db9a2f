"""Echoes: which outgoing messages are copies of our own sends."""

from __future__ import annotations

from datetime import UTC, datetime

from vibee.telegram.echoes import Echoes
from vibee.telegram.gateway import ChatType, NewMessage


def message(chat: int, message_id: int, text: str, *, outgoing: bool = True) -> NewMessage:
    """An update of ``chat``, from the account itself unless ``outgoing`` is False."""
    return NewMessage(
        1, chat, message_id, 7, None, text, datetime.now(UTC), ChatType.PRIVATE, outgoing
    )


def test_a_copy_is_known_by_its_text_while_in_flight_and_by_its_id_after() -> None:
    echoes = Echoes()
    echoes.sending(5, "hi there ")
    assert echoes.is_copy(message(5, 40, "hi there"))  # before Telegram answered
    assert not echoes.is_copy(message(6, 40, "hi there"))  # another chat
    assert not echoes.is_copy(message(5, 41, "something else"))  # the owner, elsewhere
    assert not echoes.is_copy(message(5, 42, "hi there", outgoing=False))  # the peer
    echoes.done(5, "hi there ", 40)
    assert echoes.is_copy(message(5, 40, "hi there"))  # after: by id, again if redelivered
    assert echoes.is_copy(message(5, 40, "hi there"))
    assert not echoes.is_copy(message(5, 43, "hi there"))  # the same words, typed later


def test_sends_of_the_same_text_are_counted_and_a_failed_one_leaves_nothing() -> None:
    echoes = Echoes()
    echoes.sending(5, "ok")
    echoes.sending(5, "ok")
    echoes.done(5, "ok", None)  # failed (or refused as a duplicate): no copy comes
    assert echoes.is_copy(message(5, 9, "ok"))  # the other is still in flight
    echoes.done(5, "ok", None)
    assert not echoes.is_copy(message(5, 9, "ok"))


def test_only_the_last_sends_are_remembered() -> None:
    echoes = Echoes(remembered=2)
    for message_id in (1, 2, 3):
        echoes.sending(5, f"reply {message_id}")
        echoes.done(5, f"reply {message_id}", message_id)
    assert not echoes.is_copy(message(5, 1, "reply 1"))  # forgotten: stored, then deleted
    assert echoes.is_copy(message(5, 2, "reply 2")) and echoes.is_copy(message(5, 3, "reply 3"))
