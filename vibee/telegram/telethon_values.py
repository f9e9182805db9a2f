"""Telethon's result objects turned into the gateway's values (users, dialogs, messages).

Pure functions over Telethon's TL types (no I/O), so each is tested with objects built
from ``telethon.tl.types``. Chat ids are Telethon's "marked" ids: users positive, basic
groups negative, channels and supergroups ``-100…``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from telethon import utils
from telethon.tl import types

from vibee.telegram.gateway import ChatType, Dialog, Message, NetworkError, User

_NEW_MESSAGE_UPDATES = (
    types.UpdateNewMessage,
    types.UpdateNewChannelMessage,
    types.UpdateNewScheduledMessage,
)


def user_from(user: Any) -> User:
    """The gateway's User for a ``types.User``."""
    return User(
        id=int(user.id),
        name=utils.get_display_name(user) or "",
        username=getattr(user, "username", None) or None,
        bot=bool(getattr(user, "bot", False)),
        phone=getattr(user, "phone", None) or None,
    )


def dialog_from(dialog: Any) -> Dialog:
    """The gateway's Dialog for a Telethon ``custom.Dialog``."""
    if dialog.is_user:
        kind = ChatType.PRIVATE
    elif dialog.is_group:
        kind = ChatType.GROUP
    else:
        kind = ChatType.CHANNEL
    top = dialog.message
    return Dialog(
        chat_id=int(dialog.id),
        chat_type=kind,
        title=dialog.name or "",
        top_message_id=int(top.id) if top is not None else 0,
        top_message_date=dialog.date if isinstance(dialog.date, datetime) else None,
    )


def message_from(message: Any, self_id: int) -> Message | None:
    """The gateway's Message for a history entry (None for service and empty messages)."""
    if not isinstance(message, types.Message):
        return None
    chat_id = int(message.chat_id)
    sender = message.sender_id
    if sender is None:
        sender = self_id if message.out else chat_id
    reply_to = message.reply_to
    return Message(
        chat_id=chat_id,
        message_id=int(message.id),
        sender_id=int(sender),
        text=message.message or "",
        date=message.date if isinstance(message.date, datetime) else datetime.now(UTC),
        outgoing=bool(message.out),
        reply_to_msg_id=(
            reply_to.reply_to_msg_id if isinstance(reply_to, types.MessageReplyHeader) else None
        ),
    )


def sent_message_id(result: Any, random_id: int) -> int:
    """The id of the message ``messages.sendMessage`` created (found by our random_id).

    Raises NetworkError when the answer does not name it: the caller sends again with the
    same random_id, and Telegram answers RANDOM_ID_DUPLICATE if the first one went out.
    """
    if isinstance(result, types.UpdateShortSentMessage):
        return int(result.id)
    updates = list(getattr(result, "updates", None) or ())
    for update in updates:
        if isinstance(update, types.UpdateMessageID) and update.random_id == random_id:
            return int(update.id)
    for update in updates:
        if isinstance(update, _NEW_MESSAGE_UPDATES) and hasattr(update.message, "id"):
            return int(update.message.id)
    raise NetworkError("Telegram's answer did not name the sent message; it will be checked.")


def code_length(sent_code: Any) -> int:
    """How many digits the login code has (5 when Telegram does not say)."""
    length = getattr(getattr(sent_code, "type", None), "length", None)
    return int(length) if isinstance(length, int) and length > 0 else 5
