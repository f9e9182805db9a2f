"""The "world" a gateway contract test drives: accounts, chats, injected messages, faults.

:class:`World` is what the contract suite needs from a Telegram backend besides the
gateway itself; :class:`SimWorld` provides it through the sim's HTTP control API. A
Telethon world (a fake sender and scripted updates) can implement the same Protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp

from vibee.telegram.gateway import Event, Gateway
from vibee.telegram.sim_gateway import SimGateway

_phones = itertools.count(1)
_names = itertools.count(1)


@dataclass(frozen=True, slots=True)
class AccountRef:
    """An account the world created; ``credential`` logs straight in (None: log in first)."""

    account_id: int
    user_id: int
    phone: str
    username: str
    password: str | None
    credential: bytes | None


@dataclass(frozen=True, slots=True)
class ChatRef:
    """A chat: its world id and the id each member sees (private chats differ)."""

    chat_id: int
    peer_ids: dict[int, int] = field(default_factory=dict)

    def seen_by(self, user_id: int) -> int:
        """The chat id as member ``user_id`` sees it."""
        return self.peer_ids.get(user_id, self.chat_id)


class World(Protocol):
    """What the contract suite needs besides the gateway."""

    def gateway(self, credential: bytes | None = None) -> Gateway:
        """A new gateway for a credential (None: a new login)."""
        ...

    async def account(self, *, password: str | None = None) -> AccountRef:
        """A new account (with a username) that can log in."""
        ...

    async def user(self, *, bot: bool = False) -> tuple[int, str]:
        """A new user that is not ours: (user_id, username)."""
        ...

    async def chat(
        self, type_: str, members: list[int], admins: list[int] | None = None
    ) -> ChatRef:
        """A new chat (private, group, supergroup or channel)."""
        ...

    async def inject(
        self, chat: ChatRef, sender: int, text: str, reply_to: int | None = None
    ) -> int:
        """``sender`` writes in ``chat``; returns the message id."""
        ...

    async def edit(self, chat: ChatRef, message_id: int, text: str) -> None:
        """Edit a message."""
        ...

    async def delete(self, chat: ChatRef, message_id: int) -> None:
        """Delete a message."""
        ...

    async def transcript(self, chat: ChatRef) -> list[dict[str, Any]]:
        """Every message in the chat, oldest first (with ``random_id``)."""
        ...

    async def login_code(self, phone: str) -> str:
        """The last login code sent to ``phone``."""
        ...

    async def expire_code(self, phone: str) -> None:
        """Expire the pending login code."""
        ...

    async def qr_accept(self, url: str, account: AccountRef) -> None:
        """``account`` scans the QR login ``url``."""
        ...

    async def fault(self, kind: str, **fields: Any) -> None:
        """Inject a fault (flood_wait, slow_mode, disconnect, revoke, latency…)."""
        ...

    async def max_connections(self, account: AccountRef) -> int:
        """The most concurrent connections the account ever had."""
        ...


class ControlError(Exception):
    """The control API answered with an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class SimWorld:
    """:class:`World` over the sim's control API."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http
        self.accounts: list[AccountRef] = []

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """A control API call; ControlError unless 2xx."""
        async with self.http.request(method, self.url + path, json=body) as response:
            data = await response.json()
            if response.status >= 300:
                raise ControlError(response.status, data)
            return data

    def gateway(self, credential: bytes | None = None) -> SimGateway:
        """A new SimGateway."""
        return SimGateway(self.url, credential)

    async def account(self, *, password: str | None = None) -> AccountRef:
        """A new account, authorized in advance (its credential logs straight in)."""
        n = next(_phones)
        phone = f"+999{os.getpid() % 100000:05d}{n:05d}"
        username = f"acct{os.getpid()}x{n}"
        body = {"phone": phone, "username": username, "password": password, "authorize": True}
        data = await self.request("POST", "/accounts", body)
        ref = AccountRef(
            data["account_id"],
            data["user_id"],
            phone,
            username,
            password,
            bytes.fromhex(data["session"]),
        )
        self.accounts.append(ref)
        return ref

    async def user(self, *, bot: bool = False) -> tuple[int, str]:
        """A new user."""
        username = f"user{os.getpid()}x{next(_names)}{'bot' if bot else ''}"
        data = await self.request(
            "POST", "/users", {"name": username.title(), "username": username, "bot": bot}
        )
        return data["user_id"], username

    async def chat(
        self, type_: str, members: list[int], admins: list[int] | None = None
    ) -> ChatRef:
        """A new chat."""
        body = {"type": type_, "members": members, "admins": admins or []}
        data = await self.request("POST", "/chats", body)
        peers = {int(k): v for k, v in data["peer_ids"].items()}
        return ChatRef(data["chat_id"], peers)

    async def inject(
        self, chat: ChatRef, sender: int, text: str, reply_to: int | None = None
    ) -> int:
        """A user writes."""
        body = {"from": sender, "text": text, "reply_to": reply_to}
        data = await self.request("POST", f"/chats/{chat.chat_id}/messages", body)
        return int(data["message_id"])

    async def edit(self, chat: ChatRef, message_id: int, text: str) -> None:
        """Edit a message."""
        await self.request("PATCH", f"/chats/{chat.chat_id}/messages/{message_id}", {"text": text})

    async def delete(self, chat: ChatRef, message_id: int) -> None:
        """Delete a message."""
        await self.request("DELETE", f"/chats/{chat.chat_id}/messages/{message_id}")

    async def transcript(self, chat: ChatRef) -> list[dict[str, Any]]:
        """The chat's transcript."""
        data: list[dict[str, Any]] = await self.request("GET", f"/chats/{chat.chat_id}/messages")
        return data

    async def login_code(self, phone: str) -> str:
        """The last code sent."""
        return str((await self.request("GET", f"/accounts/{phone}/code"))["code"])

    async def expire_code(self, phone: str) -> None:
        """Expire it."""
        await self.request("POST", f"/accounts/{phone}/code/expire")

    async def qr_accept(self, url: str, account: AccountRef) -> None:
        """Scan the QR code."""
        token = parse_qs(urlsplit(url).query)["token"][0]
        await self.request("POST", f"/qr/{token}/accept", {"account_id": account.account_id})

    async def fault(self, kind: str, **fields: Any) -> None:
        """Inject a fault (``account=`` an AccountRef, ``chat=`` a ChatRef, or raw ids)."""
        if (account := fields.pop("account", None)) is not None:
            fields["account_id"] = account.account_id
        if (chat := fields.pop("chat", None)) is not None:
            fields["chat_id"] = chat.chat_id
        await self.request("POST", "/faults", {"kind": kind, **fields})

    async def info(self, account: AccountRef) -> dict[str, Any]:
        """``GET /accounts/{id}``."""
        data: dict[str, Any] = await self.request("GET", f"/accounts/{account.account_id}")
        return data

    async def max_connections(self, account: AccountRef) -> int:
        """The per-account maximum the sim recorded."""
        return int((await self.info(account))["max_connections"])


# --- helpers ----------------------------------------------------------------------------------


async def next_events(events: AsyncIterator[Event], n: int, timeout: float = 20.0) -> list[Event]:
    """The next ``n`` events (a generous deadline guards against a hang, not a speed)."""
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(events))
    return out


async def eventually(probe: Any, timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``probe()`` (async or not) until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = probe()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(interval)


@contextlib.contextmanager
def sim_process(port: int = 0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``python -m vibee.sim.telegram`` on loopback: (base URL, process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee.sim.telegram", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.split()[-1], proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
