"""Lanes: statements from many workers, run together on a few connections (group commit).

A worker calls :meth:`Lane.call` and waits for its result as if it ran the statement
itself — and when the lane has a connection free and nothing queued, it does: it runs its
request at once on that connection. The requests that arrive while every connection of
the lane is busy queue up, and the lane's task runs all of them (up to ``max_batch``) in
the next round, in one statement — one round trip and one commit however many workers
asked. Under light load a round holds one request and costs what a direct call costs;
under heavy load the rounds grow instead of the queue. A lane may be ``width``
connections wide: a caller who finds nothing queued and the first connection busy runs its
round on another one, while what queues still runs in growing rounds on the first. The
reply writes, each a synchronous commit, use two: under moderate load a reply then rarely
waits for a round in flight, and under a load Postgres cannot keep up with the rounds
still grow instead of splitting.

A lane whose requests nobody waits for (``gather_s``: the "sent" marks) takes them with
:meth:`Lane.submit`, which returns at once, and never runs a round at once: each round
waits ``gather_s`` after its first request for others to join, so that many workers share
one statement even under light load, and the CPU the statements cost stays small. A
submitted request that fails is passed to ``on_failed``; the ones still queued when the
lane stops run in one last round.

The lane holds a pool connection while it has work and for ``linger_s`` after (handing a
connection back makes asyncpg reset it: one more round trip), then returns it, so a small
pool is never starved by an idle pipeline; the plans of its statements are made again
every :data:`REPLAN_S` (see :meth:`Lane._connection`). Every queue is bounded
(``queue_size``): a worker waits for room. A round that fails fails every request in it
(each worker retries its chat) and the connection is dropped for a fresh one — unless the
server refused the statement for its data (say a row whose session was deleted
meanwhile): then the round runs again one request at a time, so that one bad request
does not fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from vibee.store import Conn
from vibee.store.db import hand_back

log = logging.getLogger("vibee.automation.lanes")

LAST_ROUND_S = 2.0
"""How long a stopping lane gives the requests submitted and still queued."""
REPLAN_S = 1.0
"""How long a lane's connection keeps the plans of its statements (see :meth:`Lane._connection`)."""

T = TypeVar("T")
R = TypeVar("R")

_NOT_THE_DATA = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)
"""Server errors that are about the connection or the server, not about the data."""


def _about_the_data(exc: BaseException) -> bool:
    """Whether running the requests of a failed round one by one may help: the server
    refused the statement for what was in it (a constraint, a bad value)."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _NOT_THE_DATA)


class _Slot:
    """One of a lane's connections, and who may use it now."""

    def __init__(self) -> None:
        self.conn: PoolConnectionProxy[asyncpg.Record] | None = None
        self.lock = asyncio.Lock()
        """Held by whoever runs a round on this connection (a lane task or a caller)."""
        self.used = 0.0
        self.planned = 0.0


class Lane(Generic[T, R]):
    """Requests of type ``T`` run in rounds by ``run_batch(conn, items) -> results`` (one
    result per item, in order), on up to ``width`` connections at once. Run :meth:`run`
    in a task the caller owns."""

    def __init__(
        self,
        name: str,
        pool: asyncpg.Pool,
        run_batch: Callable[[Conn, list[T]], Awaitable[Sequence[R]]],
        *,
        width: int = 1,
        max_batch: int = 256,
        queue_size: int = 4096,
        linger_s: float = 0.25,
        gather_s: float = 0.0,
        on_failed: Callable[[T, BaseException], None] | None = None,
    ) -> None:
        if width < 1:
            raise ValueError(f"a lane needs at least one connection, not {width}")
        self.name = name
        self._pool = pool
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._gather_s = gather_s
        self._on_failed = on_failed
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(queue_size)
        self._slots = [_Slot() for _ in range(width)]
        self._taken: list[tuple[T, asyncio.Future[R]]] = []
        """Taken from the queue by the lane's task, which was cancelled before their round:
        run in the last round (a gathering lane) or cancelled."""
        self.rounds = 0
        self.requests = 0

    async def call(self, item: T) -> R:
        """Run ``item`` in the next round and return its result (or raise its error).
        When nothing is queued and a connection is free (and the lane does not gather),
        the caller runs its own round on it at once (no hand-off)."""
        if not self._gather_s and self._queue.empty():
            for slot in self._slots:
                if not slot.lock.locked():
                    async with slot.lock:
                        return await self._lead(slot, item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def submit(self, item: T) -> None:
        """Queue ``item`` for the next round without waiting for its result (waits only
        while the queue is full); a failure goes to ``on_failed``."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._settled(item, done))
        await self._queue.put((item, future))

    def _settled(self, item: T, future: asyncio.Future[R]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.warning(
                "a queued statement failed", extra={"lane": self.name, "error": repr(error)}
            )
            if self._on_failed is not None:
                self._on_failed(item, error)

    async def run(self) -> None:
        """Serve rounds until cancelled (then hand the connections back). The queued
        requests run on the first connection; the others serve only callers who found
        nothing queued (see :meth:`call`), so that under a load the lane cannot keep up
        with, its rounds grow rather than split (each round costs the server as much as
        its requests together)."""
        first_slot = self._slots[0]
        try:
            while True:
                try:
                    async with asyncio.timeout(self._linger_s):
                        first = await self._queue.get()
                except TimeoutError:
                    await self._release_idle(self._slots)
                    continue
                if self._gather_s:
                    try:
                        await asyncio.sleep(self._gather_s)  # let others join this round
                    except asyncio.CancelledError:
                        self._taken.append(first)  # for the last round, or cancelled below
                        raise
                batch = [first]
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                batch = [(item, future) for item, future in batch if not future.done()]
                if not batch:
                    continue
                try:
                    await first_slot.lock.acquire()  # a caller may be running a round on it
                except asyncio.CancelledError:
                    self._taken.extend(batch)  # for the last round, or cancelled below
                    raise
                try:
                    await self._round(first_slot, batch)
                finally:
                    first_slot.lock.release()
                # the queue may never be quiet for long: the other connections, which only
                # callers use, go back to the pool once they have been idle that long
                await self._release_idle(self._slots[1:])
        finally:
            try:
                if self._gather_s and (self._taken or not self._queue.empty()):
                    await self._last_round(first_slot)
            finally:
                while not self._queue.empty():
                    self._taken.append(self._queue.get_nowait())
                for _, future in self._taken:
                    future.cancel()
                self._taken.clear()
                for slot in self._slots:
                    self._drop(slot)

    async def _last_round(self, slot: _Slot) -> None:
        """Run what was submitted and is still queued, once, briefly (the lane stops)."""
        batch, self._taken = self._taken, []
        while not self._queue.empty() and len(batch) < self._max_batch:
            batch.append(self._queue.get_nowait())
        try:
            async with asyncio.timeout(LAST_ROUND_S):
                await self._round(slot, batch)  # a failure goes to each request's future
        except TimeoutError:
            log.warning(
                "queued statements not run at stop",
                extra={"lane": self.name, "requests": len(batch)},
            )

    async def _release_idle(self, slots: Sequence[_Slot]) -> None:
        """Give each of ``slots``' connections back to the pool once unused for
        ``linger_s``."""
        for slot in slots:
            idle = time.monotonic() - slot.used >= self._linger_s
            if slot.conn is not None and idle and not slot.lock.locked():
                async with slot.lock:
                    await self._release(slot)

    async def _lead(self, slot: _Slot, item: T) -> R:
        """A round of one, run by its caller (holding the slot's lock)."""
        self.rounds += 1
        self.requests += 1
        try:
            conn = await self._connection(slot)
            (result,) = await self._run_batch(conn, [item])
        except asyncio.CancelledError:
            self._drop(slot)  # the statement may still run: the connection is not reusable
            raise
        except Exception as exc:
            if not _about_the_data(exc):
                await self._release(slot, broken=True)
            raise
        finally:
            slot.used = time.monotonic()
        return result

    async def _round(self, slot: _Slot, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.rounds += 1
        self.requests += len(batch)
        try:
            conn = await self._connection(slot)
            results = await self._run_batch(conn, [item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:  # the lane is going away: so are its callers' requests
                future.cancel()
            self._drop(slot)
            raise
        except Exception as exc:
            if not _about_the_data(exc):
                _fail(batch, exc)
                await self._release(slot, broken=True)  # a fresh connection next round
            elif len(batch) == 1:
                _fail(batch, exc)
            else:
                log.warning(
                    "a grouped statement failed; running its requests one by one",
                    extra={"lane": self.name, "requests": len(batch), "error": repr(exc)},
                )
                for one in batch:
                    await self._round(slot, [one])
            return
        finally:
            slot.used = time.monotonic()
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _connection(self, slot: _Slot) -> PoolConnectionProxy[asyncpg.Record]:
        """The slot's connection, its plans at most :data:`REPLAN_S` old.

        The lane's statements take arrays: a custom plan is no better than the generic
        one, and planning them costs more than running them, so the connection keeps one
        generic plan per statement (the pool's reset on release undoes the setting). A
        plan is made for the table sizes of its time, and a cached one is not made again
        until the next ANALYZE — up to a minute away: a plan made when ``messages`` was
        empty (a new installation) scans the table, and at 1,000 messages a second that
        scan grows by 60,000 rows before autovacuum looks. So the plans are discarded
        every second (made again at their next use, for the tables' size then: the
        planner scales the last statistics to the current number of pages)."""
        conn = slot.conn
        if conn is None:
            conn = await self._pool.acquire()
            try:
                await conn.execute("SET plan_cache_mode = force_generic_plan")
            except BaseException:
                await self._pool.release(conn)
                raise
            slot.conn, slot.planned = conn, time.monotonic()
        elif time.monotonic() - slot.planned >= REPLAN_S:
            await conn.execute("DISCARD PLANS")
            slot.planned = time.monotonic()
        return conn

    def _drop(self, slot: _Slot) -> None:
        """Forget the slot's connection, closing it (asyncpg then hands it back)."""
        conn, slot.conn = slot.conn, None
        if conn is not None:
            try:
                conn.terminate()
            except Exception as exc:  # already released by asyncpg when it broke
                log.debug("connection gone", extra={"lane": self.name, "error": repr(exc)})

    async def _release(self, slot: _Slot, *, broken: bool = False) -> None:
        conn, slot.conn = slot.conn, None
        if conn is not None:
            await hand_back(self._pool, conn, broken=broken)


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
