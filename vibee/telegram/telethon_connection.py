"""One Telethon client's connection lifecycle: connect, watch, reconnect, log out.

:class:`TelethonConnection` is the half of ``TelethonGateway`` that owns the
``TelegramClient`` and its tasks; the gateway adds the Protocol's calls on top of
:meth:`~TelethonConnection.call` / :meth:`~TelethonConnection.guarded`.

* :meth:`connect`: ``client.connect()`` (Telethon retries the socket
  ``connection_retries`` times), then ``users.getUsers([self])``: our user, or None while
  the key is not signed in yet (a login in progress).
* A watcher task awaits ``client.disconnected``. If the connection ended without us
  asking, the reason is Telethon's update-loop error or the sender's last error: one that
  ends the session (a revoked, unregistered or duplicated key, a deactivated account)
  logs out; anything else signals :class:`Disconnected` and starts the reconnector
  (exponential backoff with full jitter, then :class:`Reconnected`). A disconnect with no
  reason is Telethon switching data centre by itself: it is given time to come back.
* Logging out closes the event stream with :class:`LoggedOut`, cancels every task this
  object owns, disconnects, and makes every later call — ``connect`` included — raise the
  same error. Nothing reconnects a dead credential.

Telethon's handlers (registered here) only convert and enqueue
(:mod:`vibee.telegram.telethon_events`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from telethon import events, functions
from telethon.tl import types

from vibee.runtime.retry import RetryPolicy
from vibee.telegram import telethon_values as values
from vibee.telegram.gateway import (
    AuthKeyDuplicated,
    Disconnected,
    GatewayError,
    LoggedOut,
    NetworkError,
    NotConnected,
    PasswordNeeded,
    Reconnected,
    Unauthorized,
    Update,
    User,
)
from vibee.telegram.telethon_errors import map_error
from vibee.telegram.telethon_events import (
    EventStream,
    Me,
    SeqClock,
    deleted_from,
    edited_from,
    new_message_from,
)
from vibee.telegram.telethon_session import TelethonSession

log = logging.getLogger("vibee.telegram.telethon")

T = TypeVar("T")
DC_SWITCH_GRACE_S = 15.0


def account_pts(client: Any) -> int:
    """The account pts Telethon's MessageBox holds right now (0 when it has none)."""
    try:
        state, _ = client._message_box.session_state()
        return max(0, int(state["pts"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        return 0


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("telethon gateway task failed", exc_info=task.exception())


class TelethonConnection:
    """The client, its event stream and the tasks that keep it connected."""

    def __init__(
        self,
        client: Any,
        session: Any,
        *,
        user_id: int,
        fresh: bool,
        retry_delay: float,
        max_reconnect_delay: float,
        call_timeout: float,
        event_buffer: int,
    ) -> None:
        self.client = client
        self.session = session
        self.user_id = user_id
        self.authorized = user_id != 0
        self.stream = EventStream(event_buffer)
        self.last_seq: int | None = None
        self.dead: GatewayError | None = None
        self._fresh = fresh
        self._policy = RetryPolicy(base_delay=retry_delay, max_delay=max_reconnect_delay)
        self._call_timeout = call_timeout
        self._buffer = event_buffer
        self._clock = SeqClock()
        self._me = Me(user_id)
        self._closing = False
        self._session_open = False
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        client.add_event_handler(self._on_new_message, events.NewMessage())
        client.add_event_handler(self._on_edited, events.MessageEdited())
        client.add_event_handler(self._on_deleted, events.MessageDeleted())

    # --- lifecycle --------------------------------------------------------------------------

    async def connect(self, last_seq: int | None) -> User | None:
        """Connect and check who we are (see the module docstring)."""
        if self.dead is not None:
            raise self.dead
        if self.client.is_connected():
            raise RuntimeError("connect() called twice without disconnect()")
        self._closing = False
        if self.stream.closed:
            self.stream = EventStream(self._buffer)
        if isinstance(self.session, TelethonSession) and not self._session_open:
            await self.session.open(fresh=self._fresh)
            self._session_open = True
            self._fresh = False  # what it saves from now on belongs to this key
        # A new stream: numbering restarts from where this connection's catch-up starts
        # (a floor left from an earlier stream could number fetched messages too high).
        self._clock = SeqClock()
        self.last_seq = last_seq
        if last_seq:
            self._rewind(last_seq)
        return await self._open(reconnecting=False)

    def _rewind(self, last_seq: int) -> None:
        """Make Telethon's catch-up start at ``last_seq`` when the saved state is newer (or
        when none was saved: a crash before Telethon's first save, or a new session)."""
        state = self.session.get_update_state(0)
        if state is None or state.pts <= 0:
            qts, date, seq = 0, datetime.now(UTC), 0
        elif last_seq < state.pts:
            qts, date, seq = state.qts, state.date, state.seq
        else:
            return
        self.session.set_update_state(
            0, types.updates.State(pts=last_seq, qts=qts, date=date, seq=seq, unread_count=0)
        )

    async def _open(self, *, reconnecting: bool) -> User | None:
        try:
            await self.client.connect()
        except Exception as exc:
            await self._drop_client()
            lost = map_error(exc) or NetworkError()
            if lost.ends_session:
                await self._logged_out(lost)
            raise lost from exc
        # Nothing has yielded since client.connect() started its update loop: the catch-up
        # has not run yet, so the floor is the pts it starts from and Reconnected comes first.
        self._clock.raise_to(account_pts(self.client))
        if reconnecting:
            self.stream.signal(Reconnected(self.last_seq or 0))
        try:
            users = await self._invoke(functions.users.GetUsersRequest(id=[types.InputUserSelf()]))
        except Exception as exc:
            mapped = map_error(exc)
            if isinstance(mapped, PasswordNeeded) or (
                isinstance(mapped, Unauthorized) and not self.authorized
            ):
                self._start_watch()  # connected, not signed in (yet): log in next
                return None
            error = await self.fail(exc)
            if self.dead is None:
                await self._drop_client()
                if reconnecting:  # it said Reconnected above: the connection is gone again
                    self.stream.signal(Disconnected(getattr(error, "message", "lost")))
            if error is None:
                raise
            raise error from exc
        user = self.became_authorized(users[0])
        self._start_watch()
        return user

    async def disconnect(self) -> None:
        """Close the connection, write the session state, end the stream. Idempotent."""
        self._closing = True
        await self._cancel_tasks()
        await self._drop_client()
        if self._session_open:
            await self.session.aclose()
            self._session_open = False
        self.stream.close()

    async def _drop_client(self) -> None:
        """Disconnect the Telethon client (it saves its update state into the session)."""
        try:
            await self.client.disconnect()
        except (OSError, RuntimeError) as exc:
            log.debug("telethon disconnect: %s", type(exc).__name__)

    def own(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Keep ``task`` until it ends; it is cancelled on disconnect and on log-out."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _start_watch(self) -> None:
        watcher = self._watcher
        if watcher is None or watcher.done() or watcher is asyncio.current_task():
            self._watcher = asyncio.create_task(self._watch(), name="telethon-watch")
            self.own(self._watcher)

    async def _watch(self) -> None:
        """Wait for the connection to end without us asking; decide what it means."""
        client = self.client
        while True:
            error: BaseException | None = None
            try:
                await client.disconnected
            except Exception as exc:  # the sender gave up: its reason
                error = exc
            if self._closing or self.dead is not None:
                return
            cause = getattr(client, "_updates_error", None) or error
            if cause is None and await self._came_back(client):
                continue  # Telethon switched data centre by itself
            mapped = (map_error(cause) if cause is not None else None) or NetworkError(
                "The connection to Telegram closed."
            )
            if mapped.ends_session:
                await self._logged_out(mapped)
                return
            log.info("telegram connection lost, reconnecting", extra={"error": mapped.code})
            self.stream.signal(Disconnected(mapped.message))
            self.own(asyncio.create_task(self._reconnect(), name="telethon-reconnect"))
            return

    async def _came_back(self, client: Any) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DC_SWITCH_GRACE_S
        while loop.time() < deadline and not self._closing:
            await asyncio.sleep(0.25)
            if client.is_connected():
                return True
        return False

    async def _reconnect(self) -> None:
        """Reconnect with exponential backoff and full jitter until it works or ends."""
        attempt = 0
        while not self._closing and self.dead is None:
            attempt += 1
            await asyncio.sleep(random.random() * self._policy.backoff_cap(attempt))
            if self._closing or self.dead is not None:
                return
            await self._drop_client()
            try:
                await self._open(reconnecting=True)
            except GatewayError as exc:
                if exc.ends_session:
                    await self._logged_out(exc)
                    return
                log.info("reconnect failed", extra={"attempt": attempt, "error": exc.code})
                continue
            return

    async def _logged_out(self, error: GatewayError) -> None:
        """The credential is dead: LoggedOut is the last event, nothing reconnects."""
        if self.dead is not None:
            return
        self.dead = error
        self.authorized = False
        log.warning("telegram session ended", extra={"error": error.code})
        self.stream.close(LoggedOut(error))
        await self._cancel_tasks()
        await self._drop_client()

    # --- calls ------------------------------------------------------------------------------

    async def _invoke(self, request: Any) -> Any:
        async with asyncio.timeout(self._call_timeout):
            return await self.client(request)

    async def guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Telethon call with the call timeout, its errors mapped to the gateway's."""
        if self.dead is not None:
            raise self.dead
        if not self.client.is_connected():
            raise NotConnected()
        try:
            async with asyncio.timeout(self._call_timeout):
                return await call()
        except Exception as exc:
            error = await self.fail(exc)
            if error is None:
                raise
            raise error from exc

    async def call(self, request: Any) -> Any:
        """Invoke one TL request (see :meth:`guarded`)."""
        return await self.guarded(lambda: self.client(request))

    async def fail(self, exc: BaseException) -> GatewayError | None:
        """Map ``exc``; an error that ends an authorized session logs it out. (Before the
        key is signed in, "unauthorized" is just the answer to expect.)"""
        mapped = map_error(exc)
        if (
            mapped is not None
            and mapped.ends_session
            and (self.authorized or isinstance(mapped, AuthKeyDuplicated))
        ):
            await self._logged_out(mapped)
        return mapped

    def became_authorized(self, tl_user: Any) -> User:
        """Remember who we are (a ``types.User``), in here and in the session."""
        user = values.user_from(tl_user)
        self.authorized = True
        self.user_id = user.id
        self._me = Me(user.id, user.username)
        if isinstance(self.session, TelethonSession):
            self.session.user_id = user.id
        self._clock.raise_to(account_pts(self.client))
        return user

    # --- Telethon's handlers: convert and enqueue, nothing else -----------------------------

    async def _emit(self, update: Update) -> None:
        if await self.stream.put(update):
            self.last_seq = update.seq

    async def _on_new_message(self, event: Any) -> None:
        seq = self._clock.next(event.original_update)
        await self._emit(new_message_from(event, seq, self._me))

    async def _on_edited(self, event: Any) -> None:
        seq = self._clock.next(event.original_update)
        await self._emit(edited_from(event, seq, self._me))

    async def _on_deleted(self, event: Any) -> None:
        seq = self._clock.next(event.original_update)
        await self._emit(deleted_from(event, seq))
