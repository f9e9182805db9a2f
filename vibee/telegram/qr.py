"""QR logins over HTTP: the connection that shows the code must stay open until it is
scanned, so this child keeps one waiting task per pending QR login.

``begin`` opens a gateway, asks for a code and returns it at once; a task then waits for
the scan, showing a fresh code (``current``) each time one expires, until the login is
authorized, needs the 2FA password (finished with the ordinary password step, on any
instance: the credential is stored), or ``timeout_s`` passes. A pending QR login's
connection lives on the instance that began it; with several instances its current code
is also written to the coordinator's shared store, so that :meth:`QrLogins.shown` answers
on any instance (and raises :class:`~vibee.coord.base.CoordinationUnavailable` when
Redis is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from vibee.coord.base import Cache, CoordinationUnavailable
from vibee.runtime import Service
from vibee.store import Executor, sessions
from vibee.telegram.gateway import Gateway, GatewayError, PasswordRequired, QrLogin
from vibee.telegram.login import LoginFlow

log = logging.getLogger("vibee.telegram.qr")


class QrBusy(Exception):
    """Too many QR logins are waiting on this instance."""


class QrLogins(Service):
    """The ``qr-logins`` child: owns every pending QR login's connection and task."""

    def __init__(
        self,
        flow: Callable[[Executor], LoginFlow],
        db: Callable[[], Executor],
        gateways: Callable[[int, bytes | None], Gateway],
        *,
        limit: int = 100,
        timeout_s: float = 300.0,
        shared: Cache | None = None,
    ) -> None:
        super().__init__("qr-logins")
        self._shared = shared
        self._flow = flow
        self._db = db
        self._gateways = gateways
        self._limit = limit
        self._timeout_s = timeout_s
        self._tokens: dict[int, tuple[int, QrLogin]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def begin(self, user_id: int) -> tuple[int, QrLogin]:
        """Start a QR login for ``user_id``: (session id, the first code to show)."""
        if len(self._tasks) >= self._limit:
            raise QrBusy(f"{self._limit} QR logins are already waiting; try again shortly")
        row = await sessions.create(self._db(), user_id, None)
        gateway = self._gateways(row.id, None)
        try:
            await gateway.connect()
            token = await gateway.qr_start()
        except BaseException:
            await gateway.disconnect()
            raise
        self._tokens[row.id] = (user_id, token)
        await self._share(user_id, row.id, token)
        task = asyncio.create_task(self._wait(user_id, row.id, gateway), name=f"qr:{row.id}")
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return row.id, token

    def current(self, user_id: int, session_id: int) -> QrLogin | None:
        """The code to show now for the user's pending QR login, if this instance has it."""
        found = self._tokens.get(session_id)
        return found[1] if found is not None and found[0] == user_id else None

    async def shown(self, user_id: int, session_id: int) -> QrLogin | None:
        """The code to show now, from this instance or (several instances) the shared
        store. Raises CoordinationUnavailable when that store cannot answer."""
        local = self.current(user_id, session_id)
        if local is not None or self._shared is None:
            return local
        raw = await self._shared.get(f"qr:{session_id}")
        if not raw:
            return None
        data = json.loads(raw)
        if data.get("user") != user_id:
            return None
        return QrLogin(data["url"], datetime.fromtimestamp(data["expires"], UTC))

    async def _share(self, user_id: int, session_id: int, token: QrLogin | None) -> None:
        """Publish the code for the other instances (None: the login ended)."""
        if self._shared is None:
            return
        if token is None:
            value, ttl = b"", 1.0
        else:
            payload = {"user": user_id, "url": token.url, "expires": token.expires_at.timestamp()}
            value = json.dumps(payload).encode()
            ttl = max(1.0, token.expires_at.timestamp() - time.time())
        with contextlib.suppress(CoordinationUnavailable):  # the local code still works
            await self._shared.set(f"qr:{session_id}", value, ttl)

    async def _wait(self, user_id: int, session_id: int, gateway: Gateway) -> None:
        deadline = time.monotonic() + self._timeout_s
        flow = self._flow(self._db())
        try:
            while time.monotonic() < deadline:
                token = self._tokens[session_id][1]
                left = min(deadline - time.monotonic(), token.expires_at.timestamp() - time.time())
                result = await gateway.qr_wait(max(1.0, left))
                if result is None:
                    fresh = await gateway.qr_start()
                    self._tokens[session_id] = (user_id, fresh)
                    await self._share(user_id, session_id, fresh)
                    continue
                if isinstance(result, PasswordRequired):
                    await flow.save_step(user_id, session_id, "password_needed", None, gateway)
                else:
                    await flow.authorized(user_id, session_id, result)
                return
            log.info("QR login not scanned in time", extra={"session_id": session_id})
        except GatewayError as exc:
            log.warning("QR login failed", extra={"session_id": session_id, "error": exc.code})
        finally:
            self._tokens.pop(session_id, None)
            await gateway.disconnect()
            await self._share(user_id, session_id, None)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("QR login task failed", exc_info=task.exception())

    async def run(self) -> None:
        """Own the waiting tasks until stopped."""
        await asyncio.Event().wait()

    async def on_stop(self) -> None:
        """Cancel and await every pending QR login (their connections close)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
