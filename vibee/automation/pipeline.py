"""The pipeline: stored messages → policy → context → AI → outbox → the session's send.

Postgres is the source of truth and the unit of work is a chat: a worker takes a chat
(:mod:`vibee.automation.scheduler`), finishes its unsent replies, decides its undecided
messages and answers them (:mod:`vibee.automation.decide`). Ingest hands over the rows
it has just stored (:class:`vibee.automation.ingest.Stored`) and the pipeline keeps what
a turn needs in memory (:mod:`vibee.automation.memory`: the messages to decide, the
chat's config, the recent dialog), so a turn usually reads nothing; what it writes goes
through lanes (:mod:`vibee.automation.lanes`) that group the statements of many chats
into one round trip. A chat config changed anywhere is announced through Postgres
(:mod:`vibee.automation.notices`) and forgotten at once. A sweep (and recovery at start)
finds every chat with unfinished work in Postgres and makes the pipeline read it again,
so nothing depends on memory surviving a crash — or being right: whatever may be stale
is read again.

Delivery guarantee, stated plainly: every message is decided at least once; a reply is
written to the outbox with a ``random_id`` derived from the message it answers **before**
it is sent — that write is an ordinary synchronous commit — and Telegram refuses a reused
``random_id``, so a resend after a crash cannot produce a second reply. The decisions and
the "sent" marks are committed asynchronously (:mod:`vibee.store.turns` says why nothing
is lost). At most one worker handles a chat at a time, so replies in a chat keep their
order; several messages arriving within the reply delay are answered once, together.
``workers.worker_count`` workers bound the concurrent AI calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable

import asyncpg
from prometheus_client import Gauge

from vibee.ai.base import ProviderError
from vibee.ai.router import Router
from vibee.automation.context import Profiles
from vibee.automation.decide import Decider, Lanes
from vibee.automation.events import NO_EVENTS, EventSink
from vibee.automation.ingest import Stored
from vibee.automation.memory import CONFIG_TTL_S, Chats
from vibee.automation.notices import ConfigNotices
from vibee.automation.rag import Rag
from vibee.automation.scheduler import RETRY_S, Scheduler
from vibee.obs import tracing
from vibee.runtime import Service, Supervisor
from vibee.store import DB_ERRORS, automation, embeddings, outbox
from vibee.store.turns import DIALOG_TURNS

log = logging.getLogger("vibee.automation.pipeline")

ChatKey = tuple[int, int]
"""(session id, Telegram chat id)."""

DEAD_LETTERS = Gauge("vibee_dead_letters", "Dead letters waiting for an operator.")


class Pipeline(Service):
    """The ``pipeline`` child: a scheduler of chats, ``worker_count`` workers, a sweep,
    the lanes the workers read and write through, and a listener for config changes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        router: Callable[[], Router | None],
        sessions: Callable[[], Supervisor | None],
        *,
        worker_count: int = 10,
        max_retries: int = 3,
        sweep_s: float = 5.0,
        seed: int | None = None,
        rag: Callable[[], Rag | None] = lambda: None,
        events: EventSink | None = None,
        owns: Callable[[int], bool] | None = None,
    ) -> None:
        """``owns(session_id)``: whether this instance handles that session's chats; when
        given, the sweep and recovery schedule only those (None: every session)."""
        super().__init__("pipeline")
        self._pool = pool
        self._workers = worker_count
        self._sweep_s = sweep_s
        self._owns = owns
        self._rag = rag
        self._sweep_now = asyncio.Event()
        self._scheduler = Scheduler(worker_count * 4)
        self._chats = Chats(DIALOG_TURNS, self._scheduler.pinned)
        self._profiles = Profiles(pool, CONFIG_TTL_S)
        self._lanes = Lanes.on(pool, lambda key: self.notify([key], RETRY_S))
        self._notices = ConfigNotices(pool, self._changed, self._missed_changes, self.wake)
        self._decider = Decider(
            pool,
            router,
            sessions,
            self._chats,
            self._lanes,
            profiles=self._profiles,
            listening=lambda: self._notices.listening,
            later=self._scheduler.later,
            notify=self.notify,
            seed=random.getrandbits(64) if seed is None else seed,
            max_retries=max_retries,
            rag=rag,
            events=events if events is not None else NO_EVENTS,
        )

    # -- what others call ----------------------------------------------------------------------

    def notify(self, keys: Iterable[ChatKey], delay_s: float = 0.0) -> None:
        """These chats have work (safe to call from any task, never blocks). From ingest
        (a :class:`Stored`), the new rows come along; from anywhere else, the chats are
        read again from Postgres at their next turn."""
        if isinstance(keys, Stored):
            self._hand_over(keys)
        else:
            keys = list(keys)
            for key in keys:
                self._chats.get(key).work_changed()
        self._scheduler.schedule(keys, delay_s)

    def wake(self) -> None:
        """Sweep for unfinished work now (a dead letter was replayed, say)."""
        self._sweep_now.set()

    async def recover(self, session_id: int) -> None:
        """Schedule every chat of the session with unfinished work now (whatever ``owns``
        says), reading each from Postgres: this instance just gained the session, and
        what it remembers of it may be stale. Call it before the session's actor starts
        here (until then, a chat of it met for the first time is taken to have no work
        but what ingest hands over; the sweep corrects that within ``sweep_s``)."""
        self._chats.unknown(lambda s: s.key[0] == session_id)
        self.notify(await outbox.chats_with_work(self._pool, session_id))

    # -- inside ----------------------------------------------------------------------------------

    def _changed(self, user_id: int, session_id: int | None, tg_chat_id: int | None) -> None:
        if session_id is None:  # the user's persona, or the defaults of the user's chats
            self._profiles.forget(user_id)
            self._chats.forget(lambda s: s.user_id in (user_id, None))
        else:
            self._chats.forget(lambda s: s.key == (session_id, tg_chat_id))

    def _missed_changes(self) -> None:
        self._chats.forget(lambda _s: True)

    def _hand_over(self, stored: Stored) -> None:
        new = set()
        for row in stored.inbound:
            self._chats.hand_over(row)
            new.add((row.session_id, row.tg_chat_id))
        for key, own in stored.outbound:
            self._chats.hand_over_own(key, own)
        for key in stored - new:  # only messages stored before (redelivered): read the chat
            self._chats.get(key).work_changed()

    async def _work(self) -> None:
        while True:
            key = await self._scheduler.take()
            try:
                with tracing.span("pipeline.decide", session_id=key[0], chat=key[1]):
                    await self._decider.process(key)
            except DB_ERRORS as exc:
                log.warning("chat not processed (%r); retrying", exc)
                self._failed(key)
            except Exception:
                log.exception("chat not processed", extra={"chat": key[1]})
                self._failed(key)
            finally:
                self._scheduler.done(key)

    def _failed(self, key: ChatKey) -> None:
        self._scheduler.failed(key)
        state = self._chats.peek(key)
        if state is not None:
            state.unknown()

    async def _sweep(self) -> None:
        while True:
            try:
                found = await outbox.chats_with_work(self._pool)
                owned = [k for k in found if self._owns is None or self._owns(k[0])]
                self.notify(owned)
                self._chats.trusted = True  # every chat with work was just seen
                DEAD_LETTERS.set(await automation.count_dead_letters(self._pool))
                await self._index()
            except DB_ERRORS as exc:
                log.warning("pipeline sweep failed", extra={"error": repr(exc)})
            self._sweep_now.clear()
            try:
                async with asyncio.timeout(self._sweep_s):
                    await self._sweep_now.wait()
            except TimeoutError:
                pass

    async def _index(self) -> None:
        """Embed the owners' new messages for retrieval (a bounded amount per sweep)."""
        rag = self._rag()
        if rag is None:
            return
        for user_id in await embeddings.users_with_pending(self._pool, limit=20):
            try:
                await rag.index_pending(user_id, limit=200)
            except ProviderError as exc:
                log.warning("cannot embed messages now", extra={"reason": exc.reason})
                return

    async def run(self) -> None:
        """Recover unfinished work, then schedule, work and sweep until stopped."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._scheduler.run(), name="pipeline:scheduler")
            group.create_task(self._sweep(), name="pipeline:sweep")  # the first sweep recovers
            group.create_task(self._notices.run(), name="pipeline:config-notices")
            for lane in self._lanes.all():
                group.create_task(lane.run(), name=f"pipeline:lane:{lane.name}")
            for n in range(self._workers):
                group.create_task(self._work(), name=f"pipeline:decide:{n}")
