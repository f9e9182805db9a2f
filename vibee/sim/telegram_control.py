"""The sim's HTTP control API (JSON): create the world, inject messages and faults, read it.

The routes are a contract (DESIGN 6.5, ``docs/sim.md``). Bad input is a 400 (an unknown
id in the path a 404) with ``{"error": "...", "field": "..."}``; never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter

from aiohttp import web

from vibee.sim.telegram_auth import normalize_phone
from vibee.sim.telegram_calls import MAX_TEXT, Core
from vibee.sim.telegram_http import (
    BadInput,
    Body,
    body_of,
    opt_bool,
    opt_int,
    opt_str,
    path_int,
    reply,
    req_int,
    req_str,
)
from vibee.sim.telegram_state import CHAT_TYPES, USERNAME, Account, Chat, SimUser
from vibee.sim.telegram_ws import Hub
from vibee.telegram.gateway import AuthKeyDuplicated, SessionRevoked

log = logging.getLogger("vibee.sim")
ARRIVALS = ("even", "poisson")
MAX_SPREAD_S = 600
FAULT_KINDS = ("flood_wait", "slow_mode", "disconnect", "revoke", "latency", "auth_key_duplicated")


class Control:
    """The handlers, over the sim's state and its transports."""

    def __init__(self, core: Core, hub: Hub) -> None:
        self.core = core
        self.world = core.world
        self.hub = hub

    def routes(self) -> list[web.RouteDef]:
        """Every control route."""
        return [
            web.post("/accounts", self.create_account),
            web.get("/accounts", self.list_accounts),
            web.get("/accounts/{account_id}", self.get_account),
            web.post("/accounts/{account_id}/authorize", self.authorize),
            web.get("/accounts/{phone}/code", self.get_code),
            web.post("/accounts/{phone}/code/expire", self.expire_code),
            web.post("/users", self.create_user),
            web.post("/chats", self.create_chat),
            web.get("/chats/{chat_id}", self.get_chat),
            web.post("/chats/{chat_id}/messages", self.inject),
            web.get("/chats/{chat_id}/messages", self.transcript),
            web.patch("/chats/{chat_id}/messages/{message_id}", self.edit),
            web.delete("/chats/{chat_id}/messages/{message_id}", self.delete),
            web.post("/messages/batch", self.inject_batch),
            web.post("/faults", self.fault),
            web.delete("/faults", self.clear_faults),
            web.post("/faults/drop_all", self.drop_all),
            web.post("/qr/{token}/accept", self.qr_accept),
            web.get("/stats", self.stats),
        ]

    # --- lookups ----------------------------------------------------------------------------

    def account(self, account_id: int, field: str = "account_id", status: int = 400) -> Account:
        """The account, or BadInput naming ``field``."""
        account = self.world.accounts.get(account_id)
        if account is None:
            raise BadInput(field, f"no account {account_id}", status)
        return account

    def chat(self, chat_id: int, field: str = "chat_id", status: int = 404) -> Chat:
        """The chat by its control id, or BadInput naming ``field``."""
        chat = self.world.chats.get(chat_id)
        if chat is None:
            raise BadInput(field, f"no chat {chat_id}", status)
        return chat

    # --- accounts and users -----------------------------------------------------------------

    async def create_account(self, request: web.Request) -> web.Response:
        """``{phone, password?, name?, username?, banned?, authorize?}``."""
        body = await body_of(request)
        phone = normalize_phone(req_str(body, "phone"))
        if phone is None:
            raise BadInput("phone", "an international phone number (5 to 15 digits) is required")
        if phone in self.world.phones:
            raise BadInput("phone", "already registered")
        password = opt_str(body, "password")
        username = self._free_username(body)
        banned, authorize = opt_bool(body, "banned"), opt_bool(body, "authorize")
        name = opt_str(body, "name") or f"User {phone[-4:]}"
        account = self.world.add_account(phone, password, name, username, banned)
        data = {"account_id": account.account_id, "user_id": account.user.user_id, "phone": phone}
        if authorize:
            key = self.core.auth.new_key()
            self.core.auth.authorize(key, account)
            data["session"] = key.key
        return reply(data)

    def _free_username(self, body: Body) -> str | None:
        username = opt_str(body, "username")
        if username is not None:
            username = username.removeprefix("@")
            if not USERNAME.fullmatch(username):
                raise BadInput("username", "3 to 32 letters, digits or _, starting with a letter")
            if username.lower() in self.world.usernames:
                raise BadInput("username", "already taken")
        return username

    async def list_accounts(self, request: web.Request) -> web.Response:
        """Every account, briefly."""
        return reply([self._account_info(a) for a in self.world.accounts.values()])

    async def get_account(self, request: web.Request) -> web.Response:
        """One account: its seq, connections, keys."""
        return reply(self._account_info(self.account(path_int(request, "account_id"), status=404)))

    def _account_info(self, account: Account) -> Body:
        keys = Counter(k.status for k in self.core.auth.keys.values() if k.account is account)
        return {
            "account_id": account.account_id,
            "user_id": account.user.user_id,
            "phone": account.phone,
            "name": account.user.name,
            "username": account.user.username,
            "has_password": account.password is not None,
            "banned": account.banned,
            "seq": account.seq,
            "connections": len(account.listeners),
            "cursors": sorted(listener.cursor for listener in account.listeners),
            "max_connections": account.max_connections,
            "keys": dict(keys),
        }

    async def authorize(self, request: web.Request) -> web.Response:
        """A new key already logged in to the account (like importing a session)."""
        account = self.account(path_int(request, "account_id"), status=404)
        key = self.core.auth.new_key()
        self.core.auth.authorize(key, account)
        return reply({"session": key.key})

    async def get_code(self, request: web.Request) -> web.Response:
        """The last login code sent to the phone."""
        phone = normalize_phone(request.match_info["phone"]) or ""
        sent = self.core.auth.codes.get(phone)
        if sent is None:
            raise BadInput("phone", "no code was sent to this phone", 404)
        return reply({"code": sent.code})

    async def expire_code(self, request: web.Request) -> web.Response:
        """Make the phone's pending code expired."""
        if not self.core.auth.expire_code(request.match_info["phone"]):
            raise BadInput("phone", "no code was sent to this phone", 404)
        return reply({"ok": True})

    async def create_user(self, request: web.Request) -> web.Response:
        """``{name, username?, bot?}`` → ``{user_id}``."""
        body = await body_of(request)
        name = req_str(body, "name")
        username = self._free_username(body)
        user = self.world.add_user(name, username, opt_bool(body, "bot"))
        return reply({"user_id": user.user_id})

    # --- chats and messages -----------------------------------------------------------------

    async def create_chat(self, request: web.Request) -> web.Response:
        """``{type, members, title?, admins?}`` → ``{chat_id, type, peer_ids}``."""
        body = await body_of(request)
        type_ = body.get("type")
        if type_ not in CHAT_TYPES:
            raise BadInput("type", f"one of {', '.join(CHAT_TYPES)} is required")
        members = self._user_list(body, "members")
        if not members:
            raise BadInput("members", "at least one member is required")
        admins = set(self._user_list(body, "admins"))
        if not admins <= set(members):
            raise BadInput("admins", "admins must be members")
        if type_ == "private" and (len(members) != 2 or members[0] == members[1]):
            raise BadInput("members", "a private chat has exactly two different members")
        title = opt_str(body, "title")
        pair = (min(members), max(members))
        existing = self.world.private.get(pair) if type_ == "private" else None
        chat = existing or self.world.add_chat(type_, members, title, admins)
        return reply(self._chat_info(chat))

    def _user_list(self, body: Body, name: str) -> list[int]:
        value = body.get(name, [])
        if not isinstance(value, list):
            raise BadInput(name, "a list of user ids is required")
        for i, user_id in enumerate(value):
            if not isinstance(user_id, int) or isinstance(user_id, bool):
                raise BadInput(f"{name}[{i}]", "a user id (integer) is required")
            if user_id not in self.world.users:
                raise BadInput(f"{name}[{i}]", f"no user {user_id}")
        return list(dict.fromkeys(value))

    def _chat_info(self, chat: Chat) -> Body:
        return {
            "chat_id": chat.chat_id,
            "type": chat.type,
            "title": chat.title,
            "members": chat.members,
            "admins": sorted(chat.admins),
            "peer_ids": {str(m): chat.view_id(m) for m in chat.members},
        }

    async def get_chat(self, request: web.Request) -> web.Response:
        """One chat."""
        return reply(self._chat_info(self.chat(path_int(request, "chat_id"))))

    def _message(self, chat: Chat, body: Body, prefix: str = "") -> tuple[SimUser, str, int | None]:
        sender_id = req_int(body, "from", prefix=prefix)
        if sender_id not in chat.members:
            raise BadInput(prefix + "from", f"user {sender_id} is not a member of the chat")
        text = req_str(body, "text", prefix=prefix)
        if len(text) > MAX_TEXT:
            raise BadInput(prefix + "text", f"at most {MAX_TEXT} characters")
        reply_to = opt_int(body, "reply_to", low=1, prefix=prefix)
        if reply_to is not None and reply_to not in chat.messages:
            raise BadInput(prefix + "reply_to", f"no message {reply_to} in the chat")
        return self.world.users[sender_id], text, reply_to

    async def inject(self, request: web.Request) -> web.Response:
        """``{from, text, reply_to?}``: a user writes in the chat → ``{message_id}``."""
        chat = self.chat(path_int(request, "chat_id"))
        sender, text, reply_to = self._message(chat, await body_of(request))
        self.world.messages_in += 1
        return reply({"message_id": self.world.post(chat, sender, text, reply_to)})

    async def inject_batch(self, request: web.Request) -> web.Response:
        """``{messages: [{chat_id, from, text, reply_to?}…], spread_s?, arrival?, seed?}``
        → ``{message_ids}``. Without ``spread_s``, every message is posted at once; with
        it, they are posted over that many seconds (``arrival``: ``even`` spacing, or
        ``poisson`` — independent senders, gaps drawn from ``seed``) and the answer comes
        when the last one is posted. Everything is checked before the first is posted."""
        body = await body_of(request)
        items = body.get("messages")
        if not isinstance(items, list) or not items:
            raise BadInput("messages", "a non-empty list is required")
        spread = body.get("spread_s", 0)
        if isinstance(spread, bool) or not isinstance(spread, int | float):
            raise BadInput("spread_s", "a number is required")
        if not 0 <= spread <= MAX_SPREAD_S:
            raise BadInput("spread_s", f"must be between 0 and {MAX_SPREAD_S}")
        arrival = body.get("arrival", "even")
        if arrival not in ARRIVALS:
            raise BadInput("arrival", f"one of {', '.join(ARRIVALS)} is required")
        seed = opt_int(body, "seed")
        checked = []
        for i, item in enumerate(items):
            prefix = f"messages[{i}]."
            if not isinstance(item, dict):
                raise BadInput(f"messages[{i}]", "an object is required")
            chat = self.chat(req_int(item, "chat_id", prefix=prefix), prefix + "chat_id", 400)
            checked.append((chat, *self._message(chat, item, prefix)))
        if not spread:
            self.world.messages_in += len(checked)
            ids = [self.world.post(chat, s, text, r) for chat, s, text, r in checked]
            return reply({"message_ids": ids})
        ids = []
        start = time.monotonic()
        for at, (chat, sender, text, reply_to) in zip(
            arrivals(len(checked), float(spread), arrival, seed), checked, strict=True
        ):
            wait = start + at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.world.messages_in += 1
            ids.append(self.world.post(chat, sender, text, reply_to))
        return reply({"message_ids": ids})

    async def transcript(self, request: web.Request) -> web.Response:
        """``[{message_id, from, text, reply_to, random_id, date}…]`` in order."""
        return reply(list(self.chat(path_int(request, "chat_id")).messages.values()))

    async def edit(self, request: web.Request) -> web.Response:
        """``{text}``: change a message."""
        chat, message_id = self._existing_message(request)
        text = req_str(await body_of(request), "text")
        self.world.edit(chat, message_id, text)
        return reply({"ok": True})

    async def delete(self, request: web.Request) -> web.Response:
        """Delete a message."""
        chat, message_id = self._existing_message(request)
        self.world.delete(chat, message_id)
        return reply({"ok": True})

    def _existing_message(self, request: web.Request) -> tuple[Chat, int]:
        chat = self.chat(path_int(request, "chat_id"))
        message_id = path_int(request, "message_id")
        if message_id not in chat.messages:
            raise BadInput("message_id", f"no message {message_id} in the chat", 404)
        return chat, message_id

    # --- faults, QR, stats ------------------------------------------------------------------

    async def fault(self, request: web.Request) -> web.Response:
        """``{kind, account_id?, chat_id?, seconds?, count?}``: see ``telegram_faults``."""
        body = await body_of(request)
        kind = body.get("kind")
        if kind not in FAULT_KINDS:
            raise BadInput("kind", f"one of {', '.join(FAULT_KINDS)} is required")
        account_id = opt_int(body, "account_id")
        account = self.account(account_id) if account_id is not None else None
        chat_id = opt_int(body, "chat_id")
        chat = self.chat(chat_id, status=400) if chat_id is not None else None
        faults = self.core.faults
        affected = 0
        if kind in ("flood_wait", "revoke", "auth_key_duplicated") and account is None:
            raise BadInput("account_id", f"{kind} needs an account")
        if kind == "flood_wait":
            assert account is not None
            seconds = req_int(body, "seconds", low=0)
            count = opt_int(body, "count", low=1) or 1
            faults.add_flood(account.account_id, seconds, count, chat.chat_id if chat else None)
        elif kind == "slow_mode":
            if chat is None:
                raise BadInput("chat_id", "slow_mode needs a chat")
            faults.set_slow_mode(chat.chat_id, req_int(body, "seconds", low=0), account_id)
        elif kind == "latency":
            delay = body.get("seconds")
            if not isinstance(delay, int | float) or isinstance(delay, bool):
                raise BadInput("seconds", "a number is required")
            if not 0 <= delay <= 600:
                raise BadInput("seconds", "must be between 0 and 600")
            faults.add_latency(float(delay), account_id, opt_int(body, "count", low=1))
        elif kind == "disconnect":
            affected = self.hub.drop_account(account) if account else self.hub.drop_all()
        else:
            assert account is not None
            error = SessionRevoked() if kind == "revoke" else AuthKeyDuplicated()
            affected = self.core.auth.kill(account, error)
        log.info("fault %s injected (%s)", kind, body)
        return reply({"ok": True, "kind": kind, "affected": affected})

    async def clear_faults(self, request: web.Request) -> web.Response:
        """Disarm every fault."""
        self.core.faults.clear()
        return reply({"ok": True})

    async def drop_all(self, request: web.Request) -> web.Response:
        """Cut every WebSocket transport at once."""
        return reply({"ok": True, "affected": self.hub.drop_all()})

    async def qr_accept(self, request: web.Request) -> web.Response:
        """``{account_id}`` scans the QR token → ``{ok, password_needed}``."""
        account = self.account(req_int(await body_of(request), "account_id"))
        qr = self.core.auth.qr_accept(request.match_info["token"], account)
        if qr is None:
            raise BadInput("token", "unknown or expired QR token", 404)
        return reply({"ok": True, "password_needed": qr.password_needed})

    async def stats(self, request: web.Request) -> web.Response:
        """Counters (``max_connections_per_account`` is the maximum ever seen)."""
        world = self.world
        return reply(
            {
                "accounts": len(world.accounts),
                "users": len(world.users),
                "chats": len(world.chats),
                "connections": world.connections,
                "max_connections_per_account": world.max_connections_per_account,
                "transports": len(self.hub.connections),
                "transports_total": self.hub.transports_total,
                "messages_in": world.messages_in,
                "messages_out": world.messages_out,
                "duplicates_rejected": world.duplicates_rejected,
                "updates_delivered": self.hub.delivered,
                "typing": world.typing,
                "faults_fired": self.core.faults.fired,
            }
        )


def arrivals(n: int, spread_s: float, kind: str, seed: int | None) -> list[float]:
    """When each of ``n`` messages is posted, in seconds from the start: ``even`` spacing
    over ``spread_s``, or ``poisson`` (exponential gaps averaging ``spread_s / n``, drawn
    from ``seed``: the last may come a little before or after ``spread_s``)."""
    gap = spread_s / n
    if kind == "even":
        return [i * gap for i in range(n)]
    rng = random.Random(seed)
    out, at = [], 0.0
    for _ in range(n):
        out.append(at)
        at += rng.expovariate(1 / gap)
    return out
