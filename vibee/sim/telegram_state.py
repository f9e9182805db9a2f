"""The simulated network's truth: users, accounts, chats, transcripts, update logs.

Pure, synchronous state with no I/O: the WebSocket layer (``telegram_ws``) and the control
API (``telegram_control``) call it. Login and authorization live in ``telegram_auth``,
faults in ``telegram_faults``; this module is the data and message delivery.

Ids follow Telegram's marked convention: users are positive, basic groups negative,
channels and supergroups ``-100…``. A private chat has a control id of its own (positive,
never a user id) but each member sees it as the other member's user id, as in Telegram.
Message ids count per chat. Each account has an update log; an update's ``seq`` is its
1-based position in that log (Telegram's pts), so redelivery after a seq is a slice.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from vibee.sim.telegram_wire import dumps
from vibee.telegram.gateway import PeerInvalid, WriteForbidden

USER_ID_BASE = 1_000_000_000
GROUP_ID_BASE = 4_000_000_000
CHANNEL_ID_BASE = 1_002_000_000_000
CHAT_TYPES = ("private", "group", "supergroup", "channel")
USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,31}")
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z][A-Za-z0-9_]{2,31})\b")


def mentions(text: str) -> list[str]:
    """The usernames ``@mentioned`` in ``text``, lowercased, first occurrence order."""
    return list(dict.fromkeys(m.lower() for m in _MENTION.findall(text)))


class Listener(Protocol):
    """A logical connection attached with a key (implemented by the WebSocket layer)."""

    account: Account | None
    cursor: int

    def pump(self) -> None:
        """Send what the account's log holds after ``cursor``, as far as credit allows."""

    def end(self, code: str, message: str) -> None:
        """The sim ends this logical connection (a fault, a revoked key)."""


@dataclass(slots=True, eq=False)
class SimUser:
    """A Telegram user; ``account_id`` is set when VIBEE can log in as it."""

    user_id: int
    name: str
    username: str | None = None
    bot: bool = False
    account_id: int | None = None
    phone: str | None = None

    def wire(self) -> dict[str, Any]:
        """The user as the gateway sees it."""
        return {
            "id": self.user_id,
            "name": self.name,
            "username": self.username,
            "bot": self.bot,
            "phone": self.phone,
        }


@dataclass(slots=True, eq=False)
class Account:
    """A user VIBEE can log in as: its update log, random_ids seen and live connections."""

    account_id: int
    user: SimUser
    phone: str
    password: str | None = None
    banned: bool = False
    log: list[bytes] = field(default_factory=list)
    random_ids: set[int] = field(default_factory=set)
    listeners: set[Listener] = field(default_factory=set)
    max_connections: int = 0

    @property
    def seq(self) -> int:
        """The seq of the last update in the log (0: none yet)."""
        return len(self.log)


@dataclass(slots=True, eq=False)
class Chat:
    """A chat: members are user ids; ``messages`` is the transcript by message id."""

    chat_id: int
    type: str
    title: str
    members: list[int]
    admins: set[int] = field(default_factory=set)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_message_id: int = 1
    last_activity: float = 0.0

    @property
    def chat_type(self) -> str:
        """The gateway's chat type (a supergroup is a group)."""
        return "group" if self.type == "supergroup" else self.type

    def view_id(self, user_id: int) -> int:
        """The chat id as member ``user_id`` sees it."""
        if self.type != "private":
            return self.chat_id
        other = [m for m in self.members if m != user_id]
        return other[0] if other else user_id


class World:
    """Everything the sim knows; lives as long as the process."""

    def __init__(self) -> None:
        self.users: dict[int, SimUser] = {}
        self.usernames: dict[str, SimUser] = {}
        self.accounts: dict[int, Account] = {}
        self.phones: dict[str, Account] = {}
        self.chats: dict[int, Chat] = {}
        self.private: dict[tuple[int, int], Chat] = {}
        self._user_ids = itertools.count(USER_ID_BASE + 1)
        self._group_ids = itertools.count(GROUP_ID_BASE + 1)
        self._channel_ids = itertools.count(CHANNEL_ID_BASE + 1)
        self._account_ids = itertools.count(1)
        self.messages_in = 0
        self.messages_out = 0
        self.duplicates_rejected = 0
        self.typing = 0
        self.connections = 0
        self.max_connections_per_account = 0

    # --- creation (control API) -------------------------------------------------------------

    def add_user(
        self, name: str, username: str | None = None, bot: bool = False, phone: str | None = None
    ) -> SimUser:
        """A new user (the caller checked that ``username`` is free)."""
        user = SimUser(next(self._user_ids), name, username, bot, phone=phone)
        self.users[user.user_id] = user
        if username:
            self.usernames[username.lower()] = user
        return user

    def add_account(
        self, phone: str, password: str | None, name: str, username: str | None, banned: bool
    ) -> Account:
        """A new account with its own user (the caller checked that ``phone`` is free)."""
        user = self.add_user(name, username, phone=phone)
        account = Account(next(self._account_ids), user, phone, password, banned)
        user.account_id = account.account_id
        self.accounts[account.account_id] = account
        self.phones[phone] = account
        return account

    def add_chat(self, type_: str, members: list[int], title: str | None, admins: set[int]) -> Chat:
        """A new chat of ``type_`` (the caller validated the members)."""
        if type_ == "private":
            chat_id = next(self._user_ids)
            names = [self.users[m].name for m in members]
            chat = Chat(chat_id, type_, title or " & ".join(names), list(members))
            self.private[_pair(members[0], members[-1])] = chat
        else:
            ids = self._group_ids if type_ == "group" else self._channel_ids
            chat_id = -next(ids)
            chat = Chat(chat_id, type_, title or f"{type_} {-chat_id}", list(members), admins)
        self.chats[chat.chat_id] = chat
        return chat

    # --- connections ------------------------------------------------------------------------

    def bind(self, listener: Listener, account: Account, last_seq: int | None) -> None:
        """Count ``listener`` as a connection of ``account``, resuming after ``last_seq``."""
        listener.account = account
        listener.cursor = account.seq if last_seq is None else max(0, min(last_seq, account.seq))
        account.listeners.add(listener)
        self.connections += 1
        account.max_connections = max(account.max_connections, len(account.listeners))
        self.max_connections_per_account = max(
            self.max_connections_per_account, account.max_connections
        )

    def unbind(self, listener: Listener) -> None:
        """``listener`` no longer counts as a connection."""
        account = listener.account
        if account is not None and listener in account.listeners:
            account.listeners.discard(listener)
            self.connections -= 1
        listener.account = None

    # --- chats as an account sees them ------------------------------------------------------

    def chat_for(self, account: Account, view_id: int, *, create: bool = False) -> Chat:
        """The chat ``account`` calls ``view_id``; PeerInvalid when it cannot reach it."""
        me = account.user.user_id
        if view_id > 0:
            chat = self.private.get(_pair(me, view_id))
            if chat is None and view_id in self.users and create:
                members = [me] if view_id == me else [me, view_id]
                chat = self.add_chat("private", members, None, set())
            if chat is None:
                raise PeerInvalid()
            return chat
        chat = self.chats.get(view_id)
        if chat is None or me not in chat.members:
            raise PeerInvalid()
        return chat

    def post(
        self,
        chat: Chat,
        sender: SimUser,
        text: str,
        reply_to: int | None,
        random_id: int | None = None,
    ) -> int:
        """Store a message and deliver a new_message update to every member account."""
        message_id = chat.next_message_id
        chat.next_message_id += 1
        now = time.time()
        chat.last_activity = now
        chat.messages[message_id] = {
            "message_id": message_id,
            "from": sender.user_id,
            "text": text,
            "reply_to": reply_to,
            "random_id": random_id,
            "date": now,
        }
        channel = chat.type == "channel"
        update = {
            "type": "new_message",
            "message_id": message_id,
            "sender_id": chat.chat_id if channel else sender.user_id,
            "sender_username": None if channel else sender.username,
            "text": text,
            "date": now,
            "chat_type": chat.chat_type,
            "from_bot": sender.bot,
            "mentions": mentions(text),
            "reply_to": reply_to,
        }
        for account, view_id in self._member_accounts(chat):
            update["chat_id"] = view_id
            update["outgoing"] = account.user is sender
            self.deliver(account, update)
        return message_id

    def edit(self, chat: Chat, message_id: int, text: str) -> None:
        """Change a message's text; members get a message_edited update."""
        message = chat.messages[message_id]
        message["text"] = text
        sender = self.users[message["from"]]
        update = {
            "type": "message_edited",
            "message_id": message_id,
            "sender_id": chat.chat_id if chat.type == "channel" else sender.user_id,
            "text": text,
            "date": time.time(),
            "chat_type": chat.chat_type,
        }
        for account, view_id in self._member_accounts(chat):
            update["chat_id"] = view_id
            update["outgoing"] = account.user is sender
            self.deliver(account, update)

    def delete(self, chat: Chat, message_id: int) -> None:
        """Delete a message; members get a message_deleted update."""
        del chat.messages[message_id]
        for account, view_id in self._member_accounts(chat):
            self.deliver(
                account,
                {"type": "message_deleted", "chat_id": view_id, "message_ids": [message_id]},
            )

    def deliver(self, account: Account, update: dict[str, Any]) -> None:
        """Append ``update`` to the account's log with the next seq and pump its listeners."""
        update["seq"] = account.seq + 1
        account.log.append(dumps(update))
        for listener in account.listeners:
            listener.pump()

    def _member_accounts(self, chat: Chat) -> list[tuple[Account, int]]:
        found = []
        for user_id in dict.fromkeys(chat.members):
            account_id = self.users[user_id].account_id
            if account_id is not None:
                found.append((self.accounts[account_id], chat.view_id(user_id)))
        return found

    # --- what an account asks ---------------------------------------------------------------

    def check_write(self, account: Account, chat: Chat) -> None:
        """WriteForbidden unless ``account`` may post in ``chat``."""
        if chat.type == "channel" and account.user.user_id not in chat.admins:
            raise WriteForbidden()

    def dialogs(self, account: Account, limit: int, offset: int) -> list[dict[str, Any]]:
        """A page of the account's chats, most recently active first."""
        me = account.user.user_id
        mine = [c for c in self.chats.values() if me in c.members]
        mine.sort(key=lambda c: (c.last_activity, c.chat_id), reverse=True)
        page = []
        for chat in mine[offset : offset + limit]:
            top = next(reversed(chat.messages.values()), None)
            view_id = chat.view_id(me)
            title = self.users[view_id].name if chat.type == "private" else chat.title
            page.append(
                {
                    "chat_id": view_id,
                    "chat_type": chat.chat_type,
                    "title": title,
                    "top_message_id": top["message_id"] if top else 0,
                    "top_message_date": top["date"] if top else None,
                }
            )
        return page

    def history(
        self, account: Account, chat: Chat, limit: int, before_id: int | None
    ) -> list[dict[str, Any]]:
        """A page of ``chat`` as ``account`` sees it, newest first."""
        me = account.user.user_id
        view_id = chat.view_id(me)
        page: list[dict[str, Any]] = []
        for message in reversed(chat.messages.values()):
            if before_id is not None and message["message_id"] >= before_id:
                continue
            if len(page) >= limit:
                break
            page.append(
                {
                    "chat_id": view_id,
                    "message_id": message["message_id"],
                    "sender_id": message["from"],
                    "text": message["text"],
                    "date": message["date"],
                    "outgoing": message["from"] == me,
                    "reply_to": message["reply_to"],
                }
            )
        return page


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)
