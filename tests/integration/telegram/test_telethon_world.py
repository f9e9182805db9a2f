"""A :class:`~tests.integration.telegram.world.World` for TelethonGateway: a small fake
Telegram (accounts, chats, pts, getDifference, login codes, SRP 2FA, QR, faults) answering
each gateway's fake ``client._sender`` with Telethon's own TL types. Telethon's request
path, update loop and MessageBox run for real; nothing reaches the network.

Simplifications: message ids are per chat (as the account sees them), channel messages
are pushed live only (no getChannelDifference), and a broadcast post has no sender.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from telethon import errors, utils
from telethon.tl import types

from tests.integration.telegram.world import AccountRef, ChatRef
from tests.unit.telegram.test_telethon_fakes import API_HASH, API_ID, FakeSender
from tests.unit.telegram.test_telethon_login import SrpServer
from vibee.telegram.telethon_credential import TelethonCredential
from vibee.telegram.telethon_gateway import TelethonGateway

_MENTION = re.compile(r"(?<![\w@])@([A-Za-z][A-Za-z0-9_]{2,31})\b")
_ids = itertools.count(1_000_001)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Account:
    """One of our accounts: its user, password, pts, update log and faults."""

    user: Any
    phone: str
    srp: SrpServer | None
    pts: int = 1
    log: list[tuple[int, Any]] = field(default_factory=list)  # (pts, update) for getDifference
    revoked: bool = False
    flood_next: int = 0
    max_connections: int = 0


@dataclass
class Chat:
    """A chat in the world: members, admins, messages (as dicts), its TL entity."""

    kind: str
    cid: int
    members: list[int]
    admins: list[int]
    entity: Any
    messages: list[dict[str, Any]] = field(default_factory=list)
    pts: int = 1
    slow_mode: int = 0
    last_send: dict[int, float] = field(default_factory=dict)
    peer_ids: dict[int, int] = field(default_factory=dict)

    @property
    def chat_id(self) -> int:
        """The marked id (a private chat's is internal; members see the other user)."""
        return utils.get_peer_id(self.peer(0)) if self.kind != "private" else self.cid

    def peer(self, viewer: int) -> Any:
        if self.kind == "private":
            return types.PeerUser(next(m for m in self.members if m != viewer))
        if self.kind == "group":
            return types.PeerChat(self.cid)
        return types.PeerChannel(self.cid)


@dataclass
class Key:
    """An auth key: who it is signed in as, a pending 2FA user, a QR token."""

    user_id: int | None = None
    password_user: int | None = None
    qr_token: bytes | None = None
    qr_accepted: int | None = None


class FakeTelegram:
    """The shared state; :class:`WorldSender` routes each request here."""

    def __init__(self) -> None:
        self.users: dict[int, Any] = {}
        self.accounts: dict[int, Account] = {}
        self.chats: dict[int, Chat] = {}
        self.keys: dict[bytes, Key] = {}
        self.codes: dict[str, tuple[str, str, bool]] = {}
        self.senders: list[WorldSender] = []
        self.random_ids: set[tuple[int, int]] = set()
        self.order = itertools.count(1)

    # --- accounts, keys, connections --------------------------------------------------------

    def key(self, sender: WorldSender) -> Key:
        return self.keys.setdefault(bytes(sender.auth_key.key), Key())

    def account_of(self, sender: WorldSender) -> Account:
        key = self.key(sender)
        if key.user_id is None:
            raise errors.AuthKeyUnregisteredError(None)
        account = self.accounts[key.user_id]
        if account.revoked:
            raise errors.SessionRevokedError(None)
        return account

    def connected(self, user_id: int) -> list[WorldSender]:
        return [s for s in self.senders if s.is_connected() and self.key(s).user_id == user_id]

    def count_connections(self) -> None:
        for uid, account in self.accounts.items():
            account.max_connections = max(account.max_connections, len(self.connected(uid)))

    # --- messages ---------------------------------------------------------------------------

    def tl_message(self, chat: Chat, m: dict[str, Any], viewer: int) -> Any:
        viewer_name = (self.users[viewer].username or "").lower()
        names = [n.lower() for n in _MENTION.findall(m["text"])]
        replied = next((x for x in chat.messages if x["id"] == m["reply_to"]), None)
        broadcast = chat.kind == "channel"
        return types.Message(
            id=m["id"], peer_id=chat.peer(viewer), date=m["date"], message=m["text"],
            out=m["from"] == viewer and not broadcast,
            mentioned=viewer_name in names or (replied is not None and replied["from"] == viewer),
            post=broadcast, from_id=None if broadcast else types.PeerUser(m["from"]),
            reply_to=types.MessageReplyHeader(reply_to_msg_id=m["reply_to"])
            if m["reply_to"] else None,
            entities=[types.MessageEntityMention(offset=x.start(), length=x.end() - x.start())
                      for x in _MENTION.finditer(m["text"])] or None,
            edit_date=m.get("edit_date"),
        )  # fmt: skip

    def deliver(self, chat: Chat, make: Any, sender: WorldSender | None = None) -> Any:
        """Give every member account its update (``make(viewer, pts)``), logged for
        getDifference and pushed live; returns what ``sender``'s account got."""
        channel = chat.kind in ("channel", "supergroup")
        if channel:
            chat.pts += 1
        own = None
        for uid in chat.members:
            account = self.accounts.get(uid)
            if account is None:
                continue
            if not channel:
                account.pts += 1
            update = make(uid, chat.pts if channel else account.pts)
            if not channel:
                account.log.append((account.pts, update))
            users = [self.users[m] for m in chat.members]
            chats = [] if chat.kind == "private" else [chat.entity]
            wrapped = types.Updates(updates=[update], users=users, chats=chats, date=_now(), seq=0)
            for s in self.connected(uid):
                if s is sender:
                    own = wrapped
                else:
                    s.push(wrapped)
        return own

    def post(
        self, chat: Chat, sender_id: int, text: str, reply_to: int | None,
        random_id: int | None = None, via: WorldSender | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        message_id = len(chat.messages) + 1
        m = {"id": message_id, "from": sender_id, "text": text, "reply_to": reply_to,
             "random_id": random_id, "date": _now(), "order": next(self.order)}  # fmt: skip
        chat.messages.append(m)
        channel = chat.kind in ("channel", "supergroup")

        def make(viewer: int, pts: int) -> Any:
            message = self.tl_message(chat, m, viewer)
            if channel:
                return types.UpdateNewChannelMessage(message=message, pts=pts, pts_count=1)
            return types.UpdateNewMessage(message=message, pts=pts, pts_count=1)

        return message_id, self.deliver(chat, make, via)

    # --- requests ---------------------------------------------------------------------------

    def handle(self, sender: WorldSender, request: Any) -> Any:
        name = "on_" + type(request).__name__
        method = getattr(self, name, None)
        if method is None:
            raise AssertionError(f"the fake Telegram has no {type(request).__name__}")
        return method(sender, request)

    def on_InvokeWithLayerRequest(self, sender: WorldSender, request: Any) -> Any:
        return types.Config

    def on_GetUsersRequest(self, sender: WorldSender, request: Any) -> Any:
        out = []
        for wanted in request.id:
            if isinstance(wanted, types.InputUserSelf):
                key = self.key(sender)
                if key.password_user is not None and key.user_id is None:
                    raise errors.SessionPasswordNeededError(request)
                me = self.account_of(sender).user
                out.append(types.User(
                    id=me.id, is_self=True, access_hash=me.access_hash,
                    first_name=me.first_name, username=me.username, phone=me.phone,
                ))  # fmt: skip
            else:
                out.append(self.users.get(wanted.user_id) or types.UserEmpty(id=wanted.user_id))
        return out

    def on_GetChannelsRequest(self, sender: WorldSender, request: Any) -> Any:
        account = self.account_of(sender)
        found = []
        for wanted in request.id:
            chat = self.chats.get(wanted.channel_id)
            if chat is None or account.user.id not in chat.members:
                raise errors.ChannelInvalidError(request)
            found.append(chat.entity)
        return types.messages.Chats(chats=found)

    def on_GetStateRequest(self, sender: WorldSender, request: Any) -> Any:
        account = self.account_of(sender)
        return types.updates.State(pts=account.pts, qts=0, date=_now(), seq=0, unread_count=0)

    def on_GetDifferenceRequest(self, sender: WorldSender, request: Any) -> Any:
        account = self.account_of(sender)
        state = types.updates.State(pts=account.pts, qts=0, date=_now(), seq=0, unread_count=0)
        later = [u for pts, u in account.log if pts > request.pts]
        if not later:
            return types.updates.DifferenceEmpty(date=_now(), seq=0)
        return types.updates.Difference(
            new_messages=[u.message for u in later if isinstance(u, types.UpdateNewMessage)],
            new_encrypted_messages=[],
            other_updates=[u for u in later if not isinstance(u, types.UpdateNewMessage)],
            chats=[c.entity for c in self.chats.values() if c.kind != "private"],
            users=list(self.users.values()),
            state=state,
        )

    def on_SendCodeRequest(self, sender: WorldSender, request: Any) -> Any:
        phone = request.phone_number
        if not phone.isdigit() or len(phone) < 5:
            raise errors.PhoneNumberInvalidError(request)
        code, code_hash = f"{secrets.randbelow(90000) + 10000}", secrets.token_hex(8)
        self.codes[phone] = (code, code_hash, False)
        return types.auth.SentCode(
            type=types.auth.SentCodeTypeApp(length=5), phone_code_hash=code_hash
        )

    def on_SignInRequest(self, sender: WorldSender, request: Any) -> Any:
        code, code_hash, expired = self.codes.get(request.phone_number, ("", "", True))
        if request.phone_code_hash != code_hash or expired:
            raise errors.PhoneCodeExpiredError(request)
        if request.phone_code != code:
            raise errors.PhoneCodeInvalidError(request)
        account = next(a for a in self.accounts.values() if a.phone == request.phone_number)
        return self.signed_in(sender, account, request)

    def signed_in(self, sender: WorldSender, account: Account, request: Any) -> Any:
        key = self.key(sender)
        if account.srp is not None and key.password_user is None:
            key.password_user = account.user.id
            raise errors.SessionPasswordNeededError(request)
        key.user_id = account.user.id
        self.count_connections()
        return types.auth.Authorization(user=account.user)

    def on_GetPasswordRequest(self, sender: WorldSender, request: Any) -> Any:
        user_id = self.key(sender).password_user
        srp = self.accounts[user_id].srp if user_id is not None else None
        if srp is None:
            raise errors.AuthKeyUnregisteredError(request)
        return srp.settings()

    def on_CheckPasswordRequest(self, sender: WorldSender, request: Any) -> Any:
        user_id = self.key(sender).password_user
        account = self.accounts[user_id] if user_id is not None else None
        if account is None or account.srp is None or not account.srp.verifies(request.password):
            raise errors.PasswordHashInvalidError(request)
        return self.signed_in(sender, account, request)

    def on_ExportLoginTokenRequest(self, sender: WorldSender, request: Any) -> Any:
        key = self.key(sender)
        if key.qr_accepted is not None:
            return types.auth.LoginTokenSuccess(
                authorization=self.signed_in(sender, self.accounts[key.qr_accepted], request)
            )
        key.qr_token = secrets.token_bytes(16)
        return types.auth.LoginToken(expires=_now() + timedelta(seconds=30), token=key.qr_token)

    def on_SendMessageRequest(self, sender: WorldSender, request: Any) -> Any:
        account = self.account_of(sender)
        me = account.user.id
        chat = self.chat_for(me, request.peer, request)
        if chat.kind == "channel" and me not in chat.admins:
            raise errors.ChatWriteForbiddenError(request)
        if account.flood_next:
            seconds, account.flood_next = account.flood_next, 0
            raise errors.FloodWaitError(request, seconds)
        if chat.slow_mode and me in chat.last_send:
            left = chat.slow_mode - (time.monotonic() - chat.last_send[me])
            if left > 0:
                raise errors.SlowModeWaitError(request, max(1, int(left)))
        if (me, request.random_id) in self.random_ids:
            raise errors.RandomIdDuplicateError(request)
        self.random_ids.add((me, request.random_id))
        chat.last_send[me] = time.monotonic()
        reply_to = request.reply_to.reply_to_msg_id if request.reply_to else None
        message_id, own = self.post(chat, me, request.message, reply_to, request.random_id, sender)
        updates = [types.UpdateMessageID(id=message_id, random_id=request.random_id)]
        if own is not None:
            updates += own.updates
        return types.Updates(updates=updates, users=[], chats=[], date=_now(), seq=0)

    def chat_for(self, me: int, peer: Any, request: Any) -> Chat:
        for chat in self.chats.values():
            if me in chat.members and utils.get_peer_id(chat.peer(me)) == utils.get_peer_id(peer):
                return chat
        if isinstance(peer, types.InputPeerUser) and peer.user_id in self.users:
            return self.new_chat("private", [me, peer.user_id], [])
        raise errors.PeerIdInvalidError(request)

    def on_SetTypingRequest(self, sender: WorldSender, request: Any) -> Any:
        self.chat_for(self.account_of(sender).user.id, request.peer, request)
        return True

    def on_GetHistoryRequest(self, sender: WorldSender, request: Any) -> Any:
        me = self.account_of(sender).user.id
        chat = self.chat_for(me, request.peer, request)
        page = [
            m
            for m in reversed(chat.messages)
            if not request.offset_id or m["id"] < request.offset_id
        ]
        page = page[: request.limit]
        return types.messages.Messages(
            messages=[self.tl_message(chat, m, me) for m in page],
            chats=[chat.entity] if chat.kind != "private" else [],
            users=[self.users[u] for u in chat.members], topics=[],
        )  # fmt: skip

    def on_GetDialogsRequest(self, sender: WorldSender, request: Any) -> Any:
        me = self.account_of(sender).user.id
        mine = [c for c in self.chats.values() if me in c.members and c.messages]
        mine.sort(key=lambda c: c.messages[-1]["order"], reverse=True)
        mine = mine[: request.limit]

        def dialog(chat: Chat) -> Any:
            return types.Dialog(
                peer=chat.peer(me), top_message=chat.messages[-1]["id"], read_inbox_max_id=0,
                read_outbox_max_id=0, unread_count=0, unread_mentions_count=0,
                unread_reactions_count=0, unread_poll_votes_count=0,
                notify_settings=types.PeerNotifySettings(),
            )  # fmt: skip

        return types.messages.Dialogs(
            dialogs=[dialog(c) for c in mine],
            messages=[self.tl_message(c, c.messages[-1], me) for c in mine],
            chats=[c.entity for c in mine if c.kind != "private"],
            users=list(self.users.values()),
        )

    def new_chat(self, kind: str, members: list[int], admins: list[int]) -> Chat:
        cid = next(_ids)
        date = _now()
        if kind == "group":
            entity: Any = types.Chat(
                id=cid, title=f"g{cid}", photo=types.ChatPhotoEmpty(),
                participants_count=len(members), date=date, version=1,
            )  # fmt: skip
        elif kind in ("channel", "supergroup"):
            entity = types.Channel(
                id=cid, title=f"c{cid}", photo=types.ChatPhotoEmpty(), date=date,
                broadcast=kind == "channel", megagroup=kind == "supergroup", access_hash=cid * 3,
            )  # fmt: skip
        else:
            entity = None
        chat = Chat(kind, cid, members, admins, entity)
        if kind == "private":
            chat.peer_ids = {members[0]: members[1], members[1]: members[0]}
        self.chats[cid] = chat
        return chat


class WorldSender(FakeSender):
    """A gateway's fake sender, answered by the shared :class:`FakeTelegram`."""

    def __init__(self, client: Any, telegram: FakeTelegram) -> None:
        super().__init__(client)
        self.telegram = telegram
        telegram.senders.append(self)

    async def connect(self, connection: Any) -> bool:
        done = await super().connect(connection)
        self.telegram.count_connections()
        return done

    def default(self, request: Any) -> Any:
        return self.telegram.handle(self, request)


class TelethonWorld:
    """:class:`~tests.integration.telegram.world.World` over :class:`FakeTelegram`."""

    def __init__(self) -> None:
        self.telegram = FakeTelegram()
        self.accounts: list[AccountRef] = []

    def gateway(self, credential: bytes | None = None) -> TelethonGateway:
        gateway = TelethonGateway(API_ID, API_HASH, credential, retry_delay=0.0)
        gateway.client._sender = WorldSender(gateway.client, self.telegram)
        return gateway

    def _user(
        self, name: str, username: str, *, bot: bool = False, phone: str | None = None
    ) -> Any:
        uid = next(_ids)
        tl = types.User(
            id=uid, access_hash=uid * 7, first_name=name, username=username, bot=bot, phone=phone
        )
        self.telegram.users[uid] = tl
        return tl

    async def account(self, *, password: str | None = None) -> AccountRef:
        n = len(self.accounts) + 1
        phone = f"99900{n:05d}"
        tl = self._user(f"Acct{n}", f"acct{n}x{secrets.token_hex(2)}", phone=phone)
        self.telegram.accounts[tl.id] = Account(
            tl, phone, SrpServer(password) if password else None
        )
        key = secrets.token_bytes(256)
        self.telegram.keys[key] = Key(user_id=tl.id)
        blob = TelethonCredential(2, "149.154.167.51", 443, key, tl.id).encode()
        ref = AccountRef(tl.id, tl.id, "+" + phone, tl.username, password, blob)
        self.accounts.append(ref)
        return ref

    async def user(self, *, bot: bool = False) -> tuple[int, str]:
        username = f"user{next(_ids)}{'bot' if bot else ''}"
        return self._user(username.title(), username, bot=bot).id, username

    async def chat(
        self, type_: str, members: list[int], admins: list[int] | None = None
    ) -> ChatRef:
        chat = self.telegram.new_chat(type_, members, admins or [])
        return ChatRef(chat.chat_id, dict(chat.peer_ids))

    def _chat(self, ref: ChatRef) -> Chat:
        return next(c for c in self.telegram.chats.values() if c.chat_id == ref.chat_id)

    async def inject(
        self, chat: ChatRef, sender: int, text: str, reply_to: int | None = None
    ) -> int:
        message_id, _ = self.telegram.post(self._chat(chat), sender, text, reply_to)
        return message_id

    async def edit(self, chat: ChatRef, message_id: int, text: str) -> None:
        c = self._chat(chat)
        m = next(x for x in c.messages if x["id"] == message_id)
        m["text"], m["edit_date"] = text, _now()
        self.telegram.deliver(
            c, lambda viewer, pts: types.UpdateEditMessage(
                message=self.telegram.tl_message(c, m, viewer), pts=pts, pts_count=1)
        )  # fmt: skip

    async def delete(self, chat: ChatRef, message_id: int) -> None:
        c = self._chat(chat)
        c.messages = [m for m in c.messages if m["id"] != message_id]
        self.telegram.deliver(
            c, lambda viewer, pts: types.UpdateDeleteMessages(
                messages=[message_id], pts=pts, pts_count=1)
        )  # fmt: skip

    async def transcript(self, chat: ChatRef) -> list[dict[str, Any]]:
        return [
            {k: m[k] for k in ("text", "reply_to", "random_id", "date")}
            | {"message_id": m["id"], "from": m["from"]}
            for m in self._chat(chat).messages
        ]

    async def login_code(self, phone: str) -> str:
        return self.telegram.codes[phone.lstrip("+")][0]

    async def expire_code(self, phone: str) -> None:
        code, code_hash, _ = self.telegram.codes[phone.lstrip("+")]
        self.telegram.codes[phone.lstrip("+")] = (code, code_hash, True)

    async def qr_accept(self, url: str, account: AccountRef) -> None:
        token = url.split("token=", 1)[1]
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for key_bytes, key in self.telegram.keys.items():
            if key.qr_token == raw:
                key.qr_accepted = account.user_id
                for s in self.telegram.senders:
                    if s.is_connected() and bytes(s.auth_key.key) == key_bytes:
                        s.push(types.UpdateShort(update=types.UpdateLoginToken(), date=_now()))
                return
        raise AssertionError("no such QR token")

    async def fault(self, kind: str, **fields: Any) -> None:
        account = fields.get("account")
        state = self.telegram.accounts[account.user_id] if account is not None else None
        if kind == "flood_wait" and state is not None:
            state.flood_next = int(fields["seconds"])
        elif kind == "slow_mode":
            self._chat(fields["chat"]).slow_mode = int(fields["seconds"])
        elif kind == "revoke" and state is not None:
            state.revoked = True  # Telegram tells the client nothing; its next call fails
            for s in self.telegram.connected(state.user.id):
                s.push(types.UpdatesTooLong())
        elif kind == "disconnect" and state is not None:
            for s in self.telegram.connected(state.user.id):
                s.drop(ConnectionError("the fake Telegram closed the connection"))
        else:
            raise AssertionError(f"fault {kind!r} is not simulated")

    async def max_connections(self, account: AccountRef) -> int:
        return self.telegram.accounts[account.user_id].max_connections
