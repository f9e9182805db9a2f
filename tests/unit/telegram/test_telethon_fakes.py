"""A fake ``client._sender`` for Telethon tests, Telethon objects to feed it, and its tests.

:class:`FakeSender` replaces a ``TelegramClient``'s ``MTProtoSender``: ``send(request)``
returns a future answered by a handler (per request type) or a default, so Telethon's
own request path (entity processing, flood-wait bookkeeping, retries, the update loop
and MessageBox) runs for real and nothing reaches the network. Results that are updates
are fed to the client's update queue marked ``_self_outgoing``, as the real sender does.
"""

from __future__ import annotations

import asyncio
import os
import types as pytypes
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import telethon.client.users
from telethon import errors, functions
from telethon.crypto import AuthKey
from telethon.network.mtprotosender import MTProtoSender
from telethon.tl import types

from vibee.telegram.gateway import Gateway
from vibee.telegram.telethon_credential import TelethonCredential
from vibee.telegram.telethon_gateway import TelethonGateway

API_ID = 12345
API_HASH = "0123456789abcdef0123456789abcdef"
ME = 4242
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

Handler = Callable[[Any], Any]


def user(uid: int, name: str, username: str | None = None, *, bot: bool = False) -> Any:
    """A ``types.User`` with an access hash."""
    return types.User(
        id=uid, access_hash=uid * 7, first_name=name, username=username, bot=bot, phone=None
    )


def me_user() -> Any:
    """The account's own user."""
    return types.User(
        id=ME, is_self=True, access_hash=99, first_name="Owner", username="Owner", phone="4470"
    )


def credential(user_id: int = ME) -> bytes:
    """An encoded credential (authorized when ``user_id`` is not 0)."""
    return TelethonCredential(2, "149.154.167.51", 443, os.urandom(256), user_id).encode()


class FakeSender:
    """Stands in for ``MTProtoSender`` (see the module docstring)."""

    def __init__(self, client: Any, *, me: Any = None, pts: int = 100) -> None:
        self.client = client
        key = getattr(client.session.auth_key, "key", None)
        self.auth_key = AuthKey(key or os.urandom(256))  # "generated" on first connect
        self.me = me
        self.pts = pts
        self.handlers: dict[type, Handler] = {}
        self.requests: list[Any] = []
        self.connects = 0
        self._connected = False
        self._disconnected: asyncio.Future[None] | None = None
        self._updates_queue = client._updates_queue
        self._log = client._log["telethon.network.mtprotosender"]

    # the parts of MTProtoSender that TelegramClient uses
    async def connect(self, connection: Any) -> bool:
        """Count the attempt; "connected" unless already."""
        self.connects += 1
        if self._connected:
            return False
        self._connected = True
        self._disconnected = asyncio.get_running_loop().create_future()
        return True

    def is_connected(self) -> bool:
        """Whether connected."""
        return self._connected

    def _transport_connected(self) -> bool:
        return self._connected

    def _keepalive_ping(self, rnd_id: int) -> None:
        pass

    async def disconnect(self) -> None:
        """Close (resolves ``disconnected`` with no error)."""
        self._end(None)

    @property
    def disconnected(self) -> Any:
        """Resolves when the connection ends (with the reason, if not asked for)."""
        if self._disconnected is None:
            self._disconnected = asyncio.get_running_loop().create_future()
            self._disconnected.set_result(None)
        return asyncio.shield(self._disconnected)

    def drop(self, error: BaseException) -> None:
        """The connection died and the sender gave up (or the server refused the key)."""
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        self._connected = False
        future = self._disconnected
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def send(self, request: Any, ordered: bool = False) -> Any:
        """A future answered now (by a handler, the backend or a default)."""
        if not self._connected:
            raise ConnectionError("Cannot send requests while disconnected")
        self.requests.append(request)
        future = asyncio.get_running_loop().create_future()
        try:
            result = self.answer(request)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            MTProtoSender._store_own_updates(self, result)
            future.set_result(result)
        return future

    def answer(self, request: Any) -> Any:
        """The result for ``request``; an exception instance from a handler is raised."""
        handler = self.handlers.get(type(request), self.default)
        result = handler(request)
        if isinstance(result, BaseException):
            raise result
        return result

    def default(self, request: Any) -> Any:
        """Answers for the requests every connect makes."""
        if isinstance(request, functions.InvokeWithLayerRequest):
            return types.Config  # ignored by TelegramClient.connect
        if isinstance(request, functions.users.GetUsersRequest):
            if self.me is None:
                return errors.AuthKeyUnregisteredError(request)
            return [
                self.me if isinstance(i, types.InputUserSelf) else types.UserEmpty(id=i.user_id)
                for i in request.id
            ]
        if isinstance(request, functions.updates.GetStateRequest):
            return types.updates.State(pts=self.pts, qts=0, date=NOW, seq=1, unread_count=0)
        if isinstance(request, functions.updates.GetDifferenceRequest):
            return types.updates.DifferenceEmpty(date=NOW, seq=1)
        raise AssertionError(f"unexpected request {type(request).__name__}")

    def sent(self, kind: type) -> list[Any]:
        """The requests of one type, in order."""
        return [r for r in self.requests if isinstance(r, kind)]

    def push(self, updates: Any) -> None:
        """Telegram sends ``updates`` (a ``types.Updates…``) to the client."""
        self._updates_queue.put_nowait(updates)


def install(gateway: TelethonGateway, **kwargs: Any) -> FakeSender:
    """Give ``gateway``'s client a fake sender."""
    sender = FakeSender(gateway.client, **kwargs)
    gateway.client._sender = sender
    return sender


def gateway(cred: bytes | None = None, **kwargs: Any) -> TelethonGateway:
    """A gateway for tests: no flood sleeping, instant reconnects."""
    kwargs.setdefault("retry_delay", 0.0)
    return TelethonGateway(API_ID, API_HASH, cred, **kwargs)


class TelethonTime:
    """Telethon's clock and sleeps in ``telethon.client.users`` (the request path),
    replaced: sleeps are recorded and return at once, ``advance`` moves the clock."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []
        real_time = telethon.client.users.time
        self.time = pytypes.SimpleNamespace(time=lambda: real_time.time() + self.offset)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.asyncio = pytypes.SimpleNamespace(sleep=sleep)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for Telethon."""
        self.offset += seconds


def patch_telethon_time(monkeypatch: pytest.MonkeyPatch) -> TelethonTime:
    """Patch Telethon's request-path clock and sleep (see :class:`TelethonTime`)."""
    fake = TelethonTime()
    monkeypatch.setattr(telethon.client.users, "time", fake.time)
    monkeypatch.setattr(telethon.client.users, "asyncio", fake.asyncio)
    return fake


# --- the fake itself ------------------------------------------------------------------------


async def test_connect_runs_telethon_for_real_on_the_fake() -> None:
    gw = gateway(credential())
    sender = install(gw, me=me_user())
    me = await gw.connect()
    assert me is not None and me.id == ME and me.username == "Owner"
    assert sender.connects == 1
    kinds = [type(r).__name__ for r in sender.requests]
    assert kinds[0] == "InvokeWithLayerRequest" and "GetUsersRequest" in kinds
    await gw.disconnect()
    assert not gw.client.is_connected()


async def test_unanswered_requests_fail_loudly() -> None:
    gw = gateway(credential())
    sender = install(gw, me=me_user())
    await gw.connect()
    with pytest.raises(AssertionError, match="unexpected request"):
        await gw.client(functions.help.GetNearestDcRequest())
    await gw.disconnect()
    assert sender.connects == 1


def test_the_gateway_satisfies_the_protocol() -> None:
    made: Gateway = gateway()  # checked by mypy: the Protocol's signatures
    assert isinstance(made.credential, bytes | None)
