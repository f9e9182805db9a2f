"""Echoes: the account's own copies of the messages VIBEE sent through it.

An account's update stream brings back the messages the account sent, those VIBEE sent
included: the sim pushes a copy of every send at once, and Telethon may bring one when it
catches up on a difference (after a gap in the update sequence). Such a copy is not the
owner's message (the outbox row holds it), and storing it only for the pipeline to delete
it when it marks the reply sent costs, per reply, a row in a commit of its own, five index
entries and a delete (about an eighth of Postgres's work at 1,000 replies/s).
:class:`Echoes` recognises the copies, so that the session actor leaves them out: by
(chat, message id) once the send has returned, and by (chat, text) while it is in flight
(the copy may come before Telegram's answer to the send); a copy delivered again after a
reconnection is left out too.

A copy it misses (one that comes after :data:`REMEMBERED` later sends, or after a restart)
is stored and deleted as before. An owner's own message taken for a copy — the owner typed,
in the same chat, the very text VIBEE was sending there at that moment — is not stored.
"""

from __future__ import annotations

from collections import OrderedDict

from vibee.telegram.gateway import NewMessage

REMEMBERED = 1024
"""How many sent messages (chat, message id) are remembered until their copy comes."""


class Echoes:
    """The sends in flight and the last ones done, to tell their copies from the owner's
    messages."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._remembered = remembered
        self._sending: dict[tuple[int, str], int] = {}
        self._sent: OrderedDict[tuple[int, int], None] = OrderedDict()

    def sending(self, chat_id: int, text: str) -> None:
        """A send of ``text`` to ``chat_id`` begins."""
        key = (chat_id, text.strip())
        self._sending[key] = self._sending.get(key, 0) + 1

    def done(self, chat_id: int, text: str, message_id: int | None) -> None:
        """That send ended: ``message_id`` when Telegram took it, None when it failed or
        was refused as a duplicate."""
        key = (chat_id, text.strip())
        left = self._sending.get(key, 0) - 1
        if left > 0:
            self._sending[key] = left
        else:
            self._sending.pop(key, None)
        if message_id is not None:
            self._sent[(chat_id, message_id)] = None
            if len(self._sent) > self._remembered:
                self._sent.popitem(last=False)

    def is_copy(self, message: NewMessage) -> bool:
        """Whether ``message`` is the account's copy of one of our sends."""
        if not message.outgoing:
            return False
        chat = message.chat_id
        sent = (chat, message.message_id) in self._sent
        return sent or (chat, message.text.strip()) in self._sending
