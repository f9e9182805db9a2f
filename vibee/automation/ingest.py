"""Ingest: the sessions' new messages, stored in Postgres in batches.

Sessions hand messages over through a bounded queue (``workers.queue_size``); one task
takes up to ``workers.batch_size`` at a time and stores them in one transaction
(:func:`vibee.store.inbox.store_batch`): one commit per batch, never one per message.
A batch that cannot be stored (the database is down) is retried with backoff and never
dropped; meanwhile the queue fills and the sessions stop reading, so Telegram keeps the
updates until they can be stored. Nothing is acknowledged (``last_seq``) before it is
stored: after a crash, Telegram redelivers and the insert is a no-op. Right after each
commit the new rows are handed to the pipeline (:class:`Stored`), which then need not read
them back.

:data:`WRITERS` batches are stored at once, each by its own task on its own pool
connection (held while messages keep coming): one writer keeps Postgres half idle while
its statement runs. A session's messages always go to the same writer, so they are stored
in the order they came and a session's ``last_seq`` never runs ahead of what is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Counter

from vibee.automation.events import NO_EVENTS, EventSink, event
from vibee.obs import tracing
from vibee.runtime import Service
from vibee.runtime.metrics import track_mailbox, untrack_mailbox
from vibee.store import DB_ERRORS
from vibee.store.db import hand_back
from vibee.store.inbox import (
    FLAG_BOT,
    FLAG_CHANNEL,
    FLAG_GROUP,
    FLAG_MENTIONED,
    FLAG_OUTGOING,
    InboxRow,
    StoredRow,
    store_new,
)
from vibee.store.outbox import InboundRow
from vibee.telegram.session_actor import Inbound

log = logging.getLogger("vibee.automation.ingest")

RECEIVED = Counter("vibee_messages_received", "Messages received and stored (new ones only).")
MAX_BACKOFF_S = 10.0
LINGER_S = 0.25
"""A writer's connection goes back to the pool once no message came for this long."""
WRITERS = 2
"""Batches stored at once (the queue is split evenly between them)."""


def to_row(inbound: Inbound) -> InboxRow:
    """The row stored for one inbound message."""
    m = inbound.message
    flags = (
        (FLAG_OUTGOING if m.outgoing else 0)
        | (FLAG_BOT if m.from_bot else 0)
        | (FLAG_GROUP if m.is_group else 0)
        | (FLAG_CHANNEL if m.is_channel else 0)
        | (FLAG_MENTIONED if m.mentions else 0)
    )
    return InboxRow(
        user_id=inbound.user_id,
        session_id=inbound.session_id,
        tg_chat_id=m.chat_id,
        chat_kind=str(m.chat_type),
        message_id=m.message_id,
        direction="out" if m.outgoing else "in",
        sender_id=m.sender_id,
        text=m.text,
        reply_to_msg_id=m.reply_to_msg_id,
        seq=m.seq,
        flags=flags,
        tg_date=m.date,
        sender_username=m.sender_username,
    )


class Stored(set[tuple[int, int]]):
    """What ``on_stored`` gets after each commit: the (session, chat) pairs that got
    inbound messages in the batch — a plain set to whoever wants only that — carrying the
    rows that were new, so that the pipeline need not read them back: ``inbound`` (to
    decide, each with ``stored_at``) and ``outbound`` (the account's own messages, for the
    dialog: ``((session, chat), (row id, "out", text, message id))``)."""

    def __init__(self, rows: Iterable[InboxRow], new: Iterable[StoredRow], stored_at: float):
        super().__init__((r.session_id, r.tg_chat_id) for r in rows if r.direction == "in")
        self.inbound: list[InboundRow] = []
        self.outbound: list[tuple[tuple[int, int], tuple[int, str, str, int | None]]] = []
        for stored in new:
            r = stored.row
            if r.direction == "in":
                self.inbound.append(
                    InboundRow(
                        stored.id,
                        r.user_id,
                        r.session_id,
                        r.tg_chat_id,
                        r.message_id,
                        r.sender_id,
                        r.text,
                        r.flags,
                        r.tg_date,
                        stored.created_at,
                        r.reply_to_msg_id,
                        r.sender_username,
                        stored_at,
                    )
                )
            else:
                key = (r.session_id, r.tg_chat_id)
                self.outbound.append((key, (stored.id, "out", r.text, r.message_id)))


class _Writer:
    """A queue of the messages of some sessions, and the connection they are stored on."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=queue_size)
        self.conn: PoolConnectionProxy[asyncpg.Record] | None = None
        """Held while messages keep coming (handing it back costs a round trip)."""


class Ingest(Service):
    """The ``ingest`` child: bounded queues in, batched transactions out."""

    queue_label = "ingest"

    def __init__(
        self,
        pool: asyncpg.Pool,
        batch_size: int = 100,
        queue_size: int = 10_000,
        on_stored: Callable[[set[tuple[int, int]]], None] | None = None,
        *,
        events: EventSink | None = None,
    ) -> None:
        """Store into ``pool`` in batches of ``batch_size`` from a queue of ``queue_size``;
        after each commit, call ``on_stored`` with the (session, chat) pairs that got
        inbound messages (a :class:`Stored`, which also carries the new rows) and publish
        ``message.received`` for each to ``events``."""
        super().__init__("ingest", graceful=True)
        self._events = events if events is not None else NO_EVENTS
        self._pool = pool
        self._on_stored = on_stored
        self._batch_size = batch_size
        share = max(1, queue_size // WRITERS)
        self._writers = [_Writer(share) for _ in range(WRITERS)]

    def qsize(self) -> int:
        """Messages waiting to be stored."""
        return sum(w.queue.qsize() for w in self._writers)

    async def deliver(self, inbound: Inbound) -> None:
        """Queue one message; waits while its writer's queue is full (backpressure)."""
        tracing.remember(inbound.session_id, inbound.message.chat_id, inbound.message.message_id)
        await self._writers[inbound.session_id % len(self._writers)].queue.put(inbound)

    async def on_start(self) -> None:
        """Export the queue depth."""
        track_mailbox(self)

    async def on_stop(self) -> None:
        """Stop exporting the queue depth."""
        untrack_mailbox(self)

    async def run(self) -> None:
        """Store batches until stopped; on a graceful stop, store what is queued first."""
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            async with asyncio.TaskGroup() as group:
                for n, writer in enumerate(self._writers):
                    group.create_task(self._drain(writer, stopper), name=f"ingest:{n}")
        finally:
            stopper.cancel()

    async def _drain(self, writer: _Writer, stopper: asyncio.Future[Any]) -> None:
        """One writer's batches, one after another, until stopped and its queue empty."""
        try:
            while not (self.stopping.is_set() and writer.queue.empty()):
                batch = await self._next_batch(writer.queue, stopper)
                if batch:
                    links = ((i.session_id, i.message.chat_id, i.message.message_id) for i in batch)
                    with tracing.span("ingest.batch", links=links, messages=len(batch)):
                        await self._store(writer, batch)
                elif writer.conn is not None:  # idle for LINGER_S
                    await self._release(writer)
        finally:
            await self._release(writer)

    async def _next_batch(
        self, queue: asyncio.Queue[Inbound], stopper: asyncio.Future[Any]
    ) -> list[Inbound]:
        """Up to ``batch_size`` queued messages; none when stopping or idle for
        :data:`LINGER_S`."""
        if queue.empty():
            getter = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait(
                    (getter, stopper), timeout=LINGER_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if not getter.done():
                    getter.cancel()
                    await asyncio.wait((getter,))
            if getter.cancelled():
                return []
            batch = [getter.result()]
        else:
            batch = [queue.get_nowait()]
        while len(batch) < self._batch_size and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def _release(self, writer: _Writer, *, broken: bool = False) -> None:
        """Hand the writer's connection back to the pool (which resets it: one round
        trip), or close it when ``broken`` (the pool opens a fresh one)."""
        conn, writer.conn = writer.conn, None
        if conn is not None:
            await hand_back(self._pool, conn, broken=broken)

    def _publish(self, rows: list[InboxRow]) -> None:
        """``message.received`` for each inbound row of a committed batch (a redelivered
        message that was already stored is announced again)."""
        for r in rows:
            if r.direction == "in":
                found = event(
                    "message.received",
                    session_id=r.session_id,
                    chat=r.tg_chat_id,
                    message_id=r.message_id,
                )
                self._events.publish(r.user_id, found)

    async def _store(self, writer: _Writer, batch: list[Inbound]) -> None:
        rows = [to_row(inbound) for inbound in batch]
        failures = 0
        while True:
            try:
                if writer.conn is None:
                    writer.conn = await self._pool.acquire()
                new = await store_new(writer.conn, rows)
            except asyncio.CancelledError:
                await self._release(writer, broken=True)  # the statement may still run
                raise
            except DB_ERRORS as exc:
                # (seen when Postgres restarts): a fresh connection for the next try
                await self._release(writer, broken=True)
                failures += 1
                delay = min(MAX_BACKOFF_S, 0.1 * 2 ** min(failures, 10))
                log.warning(
                    "cannot store inbound messages; retrying",
                    extra={"batch": len(rows), "error": repr(exc), "delay": delay},
                )
                await asyncio.sleep(delay)
                continue
            if self._on_stored is not None:
                self._on_stored(Stored(rows, new, time.time()))
            RECEIVED.inc(len(new))
            self._publish(rows)
            return
