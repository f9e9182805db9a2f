"""One Telegram account under VIBEE: its connection, its update stream, its sends.

A session actor is a supervised child (``session:<id>`` under the ``sessions``
supervisor). It owns the account's gateway and:

* connects with the last stored update seq (so Telegram redelivers what was missed),
  reconnecting with exponential backoff behind a circuit breaker while Telegram or the
  network fails, and stops for good (state ``logged_out``) when the credential is dead —
  no reconnect loop on a revoked session;
* hands every new message to the pipeline through a bounded queue (:class:`InboundSink`)
  and never waits for the AI: a slow model must not stall the account's updates;
* sends replies through a per-chat limiter (``messages_per_minute_per_chat``), shows
  "typing", and waits out FloodWait / SlowModeWait before sending again — never dropping;
  the account's own copies of what it sent are not handed on (:mod:`.echoes`).

Its state (connecting, connected, transient_disconnect, logged_out, bad_credentials) is
written to the database and counted in ``vibee_sessions{state}``. With many instances the
actor runs under a lease: its state writes carry the lease's epoch, and a write refused
as stale (another instance took the session) ends the actor at once. The per-chat send
limit then lives in Redis, so it holds across a hand-over too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiolimiter import AsyncLimiter
from prometheus_client import Counter, Gauge

from vibee.automation.events import NO_EVENTS, EventSink
from vibee.automation.events import event as new_event
from vibee.coord.base import CoordinationUnavailable, RateLimiter
from vibee.obs import tracing
from vibee.obs.logging import bind
from vibee.runtime import CircuitBreaker, CircuitOpenError, Service
from vibee.store import DB_ERRORS, Executor, sessions
from vibee.store.sessions import StaleEpoch
from vibee.telegram.echoes import Echoes
from vibee.telegram.gateway import (
    Disconnected,
    FloodWait,
    Gateway,
    GatewayError,
    LoggedOut,
    NewMessage,
    RandomIdDuplicate,
    Reconnected,
    SlowModeWait,
)

log = logging.getLogger("vibee.telegram.session")

SESSIONS = Gauge("vibee_sessions", "Telegram sessions by state, on this instance.", ["state"])
ENDED = Counter(
    "vibee_sessions_ended",
    "Sessions that stopped for good (logged out, bad credentials) on this instance.",
    ["state"],
)
MAX_CHAT_LIMITERS = 4096
LIVE = ("connecting", "connected", "transient_disconnect")
"""States in which the actor holds (or tries to hold) the account's connection."""
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message that arrived on one of our accounts, as the pipeline sees it."""

    session_id: int
    user_id: int
    message: NewMessage


class InboundSink(Protocol):
    """Where new messages go (the pipeline's ingest). ``deliver`` awaits space in a bounded
    queue; the sink stores the message and the session's seq together."""

    async def deliver(self, inbound: Inbound) -> None:
        """Accept one message (backpressure: waits while the queue is full)."""
        ...


class SessionActor(Service):
    """The child that runs one Telegram account (see the module docstring)."""

    def __init__(
        self,
        session_id: int,
        user_id: int,
        last_seq: int,
        gateway: Gateway,
        db: Executor,
        sink: InboundSink,
        *,
        per_chat_per_minute: int = 10,
        circuit_threshold: int = 5,
        retry_delay_s: float = 1.0,
        events: EventSink | None = None,
        epoch: int | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(f"session:{session_id}")
        self.epoch = epoch
        self._shared_limiter = limiter
        self._events = events if events is not None else NO_EVENTS
        self.session_id = session_id
        self.user_id = user_id
        self._last_seq = last_seq
        self._gateway = gateway
        self._db = db
        self._sink = sink
        self._per_chat = per_chat_per_minute
        self._limiters: OrderedDict[int, AsyncLimiter] = OrderedDict()
        self._echoes = Echoes()
        self._breaker = CircuitBreaker(
            f"telegram:{session_id}",
            threshold=circuit_threshold,
            reset_timeout=30.0,
            export=False,  # session ids must not become label values; see SESSIONS
        )
        self._retry_delay = retry_delay_s
        self.state = "new"
        self.connected = asyncio.Event()
        self.username: str | None = None
        self.telegram_user_id: int | None = None
        self.connected_at: datetime | None = None
        """When this actor first connected: older messages fetched now are backlog."""

    @property
    def gateway(self) -> Gateway:
        """The account's live connection (a history import borrows it: Telegram allows one)."""
        return self._gateway

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, pump updates, reconnect with backoff; return once logged out."""
        with bind(session_id=self.session_id, user_id=self.user_id):
            try:
                await self._connect_and_pump()
            except StaleEpoch:
                log.warning("another instance took this session: disconnecting")
            finally:
                self.connected.clear()
                SESSIONS.labels(self.state).dec()
                if self.state in ("logged_out", "bad_credentials"):
                    ENDED.labels(self.state).inc()
                await self._gateway.disconnect()
                if self.state in LIVE:
                    await self._record_stopped()

    async def _connect_and_pump(self) -> None:
        SESSIONS.labels(self.state).inc()
        failures = 0
        while True:
            await self._set_state("connecting")
            try:
                with self._breaker.guard(is_failure=_counts):
                    me = await self._gateway.connect(self._last_seq)
            except CircuitOpenError as exc:
                await asyncio.sleep(max(exc.retry_after or 0.0, self._retry_delay))
                continue
            except GatewayError as exc:
                if exc.ends_session:
                    await self._set_state("logged_out", exc.message)
                    return
                if exc.permanent:
                    await self._set_state("bad_credentials", exc.message)
                    return
                failures += 1
                await self._set_state("transient_disconnect", exc.message)
                await asyncio.sleep(self._backoff(failures, exc.retry_after))
                continue
            if me is None:
                await self._set_state("bad_credentials", "the credential is not authorized")
                return
            failures = 0
            self.username = me.username
            self.telegram_user_id = me.id
            if self.connected_at is None:
                self.connected_at = datetime.now(UTC)
            await self._set_state("connected")
            self.connected.set()
            if await self._pump():
                return

    async def _pump(self) -> bool:
        """Feed updates to the sink. True when the session ended for good."""
        async for event in self._gateway.events():
            if isinstance(event, NewMessage):
                if not self._echoes.is_copy(event):  # our own send: the outbox holds it
                    with tracing.span(
                        "telegram.update",
                        session_id=self.session_id,
                        chat=event.chat_id,
                        message_id=event.message_id,
                    ):
                        await self._sink.deliver(Inbound(self.session_id, self.user_id, event))
                self._last_seq = max(self._last_seq, event.seq)
            elif isinstance(event, Disconnected):
                self.connected.clear()
                await self._set_state("transient_disconnect", event.reason)
            elif isinstance(event, Reconnected):
                await self._set_state("connected")
                self.connected.set()
            elif isinstance(event, LoggedOut):
                self.connected.clear()
                await self._set_state("logged_out", event.error.message)
                return True
        return False  # the stream ended without a verdict: connect again

    async def _record_stopped(self) -> None:
        """The actor stopped with the account logged in: the row says ``authorized`` (not
        connected) again, so that a ``vibee history import`` may use the session once
        VIBEE is stopped. A write refused as stale (another instance took the session over)
        or impossible (the database is down) is left: the row keeps the last state."""
        try:
            await sessions.set_state(self._db, self.session_id, "authorized", "stopped", self.epoch)
        except (StaleEpoch, *DB_ERRORS) as exc:
            log.info("cannot record the stop", extra={"error": repr(exc)})
        else:
            self.state = "authorized"

    def _backoff(self, failures: int, hinted: float | None) -> float:
        if hinted is not None:
            return hinted
        cap = min(MAX_BACKOFF_S, self._retry_delay * 2 ** min(failures - 1, 16))
        return random.uniform(cap / 2, cap)

    async def _set_state(self, state: str, reason: str | None = None) -> None:
        if state != self.state:
            SESSIONS.labels(self.state).dec()
            SESSIONS.labels(state).inc()
            level = logging.WARNING if state in ("logged_out", "bad_credentials") else logging.INFO
            log.log(level, "session %s", state, extra={"reason": reason} if reason else None)
            self._events.publish(
                self.user_id, new_event("session.state", session_id=self.session_id, state=state)
            )
        self.state = state
        try:
            await sessions.set_state(self._db, self.session_id, state, reason, self.epoch)
        except DB_ERRORS as exc:
            # the database is down: the connection matters more than the state column
            log.warning("cannot record session state", extra={"error": repr(exc)})

    # -- sending -----------------------------------------------------------------------------

    def _limiter(self, chat_id: int) -> AsyncLimiter:
        limiter = self._limiters.get(chat_id)
        if limiter is None:
            limiter = AsyncLimiter(self._per_chat, 60)
            self._limiters[chat_id] = limiter
            if len(self._limiters) > MAX_CHAT_LIMITERS:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(chat_id)
        return limiter

    async def typing(self, chat_id: int) -> None:
        """Show "typing…" in the chat (best effort)."""
        try:
            await self._gateway.send_typing(chat_id)
        except GatewayError as exc:
            log.debug("typing failed", extra={"chat": chat_id, "error": exc.code})

    async def send(
        self, chat_id: int, text: str, random_id: int, reply_to: int | None = None
    ) -> int | None:
        """Send with our ``random_id``. Returns the message id, or None when Telegram says
        this random_id was already sent. Waits out FloodWait/SlowModeWait (never drops);
        raises other GatewayErrors (the caller retries transient ones or dead-letters)."""
        while True:
            shared = await self._within_shared_limit(chat_id)
            async with contextlib.nullcontext() if shared else self._limiter(chat_id):
                try:
                    with self._breaker.guard(is_failure=_counts):
                        self._echoes.sending(chat_id, text)
                        sent: int | None = None
                        try:
                            sent = await self._gateway.send_message(
                                chat_id, text, random_id=random_id, reply_to=reply_to
                            )
                        finally:
                            self._echoes.done(chat_id, text, sent)
                        return sent
                except RandomIdDuplicate:
                    return None
                except (FloodWait, SlowModeWait) as exc:
                    log.info(
                        "telegram asks to wait before sending",
                        extra={"chat": chat_id, "seconds": exc.seconds, "kind": exc.code},
                    )
                    wait = exc.seconds
            await asyncio.sleep(wait)

    async def _within_shared_limit(self, chat_id: int) -> bool:
        """Wait until the chat's send limit shared by every instance allows a message.
        False when there is none here (one instance) or Redis cannot answer: then the
        in-process limit applies instead."""
        if self._shared_limiter is None:
            return False
        key = f"send:{self.session_id}:{chat_id}"
        while True:
            try:
                decision = await self._shared_limiter.hit(key, self._per_chat, 60.0)
            except CoordinationUnavailable:
                return False
            if decision.allowed:
                return True
            await asyncio.sleep(decision.retry_after_s)


def _counts(error: BaseException) -> bool:
    """Which failures count against the session's breaker: the transient ones."""
    if isinstance(error, GatewayError):
        return not error.permanent and not isinstance(error, FloodWait | SlowModeWait)
    return isinstance(error, OSError | TimeoutError)
