"""Single-task children a supervisor runs: :class:`Actor` (a bounded mailbox) and
:class:`Service` (one long-running coroutine, e.g. an aiohttp server).

An actor owns exactly one task that takes messages from its bounded mailbox and hands them
to :meth:`Actor.handle` one at a time. Others :meth:`~Actor.tell` it (awaits space:
backpressure), :meth:`~Actor.try_tell` it (``False`` when full, counted in
``vibee_mailbox_full_total{queue}``) or :meth:`~Actor.ask` it (request, future, timeout).

Let it crash: an exception escaping :meth:`Actor.handle` ends the actor (its supervisor
logs and restarts it); an ``ask`` caller receives that same exception instead of waiting
for its timeout. Handlers return values for expected failures. Messages still in the
mailbox of an actor that ended are dropped (pending asks fail with :class:`ActorStopped`):
durable work lives in the database, not in mailboxes.

Stopping (:meth:`Actor.stop`) refuses new messages, lets the actor drain its mailbox for up
to the timeout, then cancels its task; ``on_stop`` runs in every case.

Exceptions::

    ActorError
     └── ActorStopped      tell/try_tell/ask on an actor that is stopping or has stopped,
                           and asks still queued when it stopped
    TimeoutError           (builtin) ask not answered in time
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from vibee.runtime import metrics

__all__ = ["Actor", "ActorError", "ActorStopped", "Service", "spawn", "stop_task"]

log = logging.getLogger("vibee.runtime")

M = TypeVar("M")
R = TypeVar("R")

#: How long a task gets to finish once cancelled before we give up waiting for it.
CANCEL_GRACE = 1.0


class ActorError(Exception):
    """Base class of the actor errors."""


class ActorStopped(ActorError):
    """The actor is stopping or has stopped: the message was not (and will not be) handled."""

    def __init__(self, name: str) -> None:
        """``name`` is the actor's name."""
        super().__init__(f"actor {name!r} is stopped")
        self.actor = name


class _Control:
    """Base of the mailbox items that are not user messages (one isinstance per message)."""

    __slots__ = ()


class _Ask(_Control, Generic[M, R]):
    __slots__ = ("future", "message")

    def __init__(self, message: M, future: asyncio.Future[R]) -> None:
        self.message = message
        self.future = future


class _Wake(_Control):
    """Wakes an idle actor so that it notices a stop request."""

    __slots__ = ()


_WAKE = _Wake()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("ask timed out"))


async def spawn(body: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
    """Run ``body`` in a new task and return the task once ``body`` has begun to run.

    A task cancelled before its first step never enters its coroutine, so its
    ``try``/``finally`` (``on_stop``, stopping children) would never run. Returning only
    once ``body`` is inside it closes that window: every later cancel reaches the cleanup.
    """
    loop = asyncio.get_running_loop()
    entered: asyncio.Future[None] = loop.create_future()

    async def runner() -> None:
        entered.set_result(None)
        await body

    task = loop.create_task(runner(), name=name)
    try:
        await asyncio.wait((entered,))
    except asyncio.CancelledError:
        await asyncio.wait((entered,))
        task.cancel()
        await asyncio.wait((task,), timeout=CANCEL_GRACE)
        raise
    return task


async def stop_task(
    task: asyncio.Task[Any], timeout: float, *, name: str, grace: float = CANCEL_GRACE
) -> None:
    """Wait up to ``timeout`` s (``inf``: no limit) for ``task`` to end, then cancel it
    and give its clean-up ``grace`` s before reporting it as still running.

    Never raises the task's own exception (its owner reads that from the task). When the
    caller is cancelled, ``task`` is cancelled too and the ``CancelledError`` propagates.
    """
    if task.done():
        return
    try:
        if timeout > 0:
            await asyncio.wait((task,), timeout=None if math.isinf(timeout) else timeout)
            if not task.done():
                log.warning(
                    "did not stop in time: cancelling", extra={"actor": name, "timeout": timeout}
                )
        if not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=grace)
            if not task.done():
                log.error("still running after cancellation", extra={"actor": name})
    except asyncio.CancelledError:
        task.cancel()  # our caller is going away: so does the task, before we report back
        await asyncio.wait((task,), timeout=CANCEL_GRACE)
        raise


class Actor(Generic[M, R]):
    """A named actor: bounded mailbox of ``M`` messages, one task, replies of type ``R``.

    Subclass it and override :meth:`handle` (and optionally :meth:`on_start`,
    :meth:`on_stop`). ``queue_label`` is the ``queue`` label of its metrics: give the
    10,000 ``session:<id>`` actors one shared label such as ``session``.
    """

    def __init__(
        self, name: str, *, mailbox_size: int = 1000, queue_label: str | None = None
    ) -> None:
        """An actor named ``name`` whose mailbox holds at most ``mailbox_size`` messages."""
        if mailbox_size <= 0:
            raise ValueError("an actor's mailbox must be bounded (mailbox_size > 0)")
        self._name = name
        self._queue_label = queue_label or name
        self._mailbox: asyncio.Queue[M | _Control] = asyncio.Queue(mailbox_size)
        self._task: asyncio.Task[None] | None = None
        self._accepting = True  # False once a stop was requested or the task ended
        self._closed = False  # the task ended: whatever is still queued is dropped
        self._draining = False  # stop requested: end once the mailbox is empty

    @property
    def name(self) -> str:
        """The actor's name (unique among its supervisor's children)."""
        return self._name

    @property
    def queue_label(self) -> str:
        """The bounded ``queue`` label of ``vibee_queue_depth`` and ``vibee_mailbox_full_total``."""
        return self._queue_label

    @property
    def done(self) -> asyncio.Future[None]:
        """The actor's task: done when the actor has ended (its exception if it crashed)."""
        if self._task is None:
            raise RuntimeError(f"actor {self._name!r} was not started")
        return self._task

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and the end of the actor's task."""
        return self._task is not None and not self._task.done()

    def qsize(self) -> int:
        """Messages waiting in the mailbox."""
        return self._mailbox.qsize()

    async def on_start(self) -> None:
        """Hook run by :meth:`start` before the first message; raising fails the start."""

    async def on_stop(self) -> None:
        """Hook run in the actor's task when it ends for any reason (stop, crash, cancel)."""

    async def handle(self, message: M) -> R:
        """Handle one message; the return value answers an :meth:`ask`."""
        raise NotImplementedError

    async def start(self) -> None:
        """Run :meth:`on_start` (in the caller's task), then start the actor's task."""
        if self._task is not None or self._closed:
            raise RuntimeError(f"actor {self._name!r} was already started")
        await self.on_start()
        metrics.track_mailbox(self)
        self._task = await spawn(self._run(), name=f"actor:{self._name}")

    def request_stop(self) -> None:
        """Refuse new messages and end (normally) once the mailbox is empty; does not wait.
        An actor may call it on itself to exit."""
        self._accepting = False
        if not self._draining:
            self._draining = True
            if not self._mailbox.qsize():
                self._mailbox.put_nowait(_WAKE)

    async def stop(self, timeout: float) -> None:
        """Refuse new messages, drain the mailbox for up to ``timeout`` s, then cancel."""
        task = self._task
        if task is None:
            self._close()
            return
        self.request_stop()
        await stop_task(task, timeout, name=self._name)

    async def wait(self) -> None:
        """Wait for the actor to end; raises what it crashed with (never cancels it)."""
        await asyncio.shield(self.done)

    async def tell(self, message: M) -> None:
        """Queue ``message``, waiting for space while the mailbox is full."""
        if not self._accepting:
            raise ActorStopped(self._name)
        try:
            self._mailbox.put_nowait(message)
        except asyncio.QueueFull:
            await self._put_waiting(message)

    def try_tell(self, message: M) -> bool:
        """Queue ``message`` if there is room; ``False`` (and counted) when the mailbox is full."""
        if not self._accepting:
            raise ActorStopped(self._name)
        try:
            self._mailbox.put_nowait(message)
        except asyncio.QueueFull:
            metrics.MAILBOX_FULL.labels(self._queue_label).inc()
            return False
        return True

    async def ask(self, message: M, timeout: float) -> R:
        """Send ``message`` and wait for :meth:`handle`'s answer; ``TimeoutError`` after
        ``timeout`` s (waiting for mailbox space included). A message whose caller has given
        up by the time the actor reaches it is skipped."""
        if not self._accepting:
            raise ActorStopped(self._name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        envelope = _Ask(message, future)
        try:
            self._mailbox.put_nowait(envelope)
        except asyncio.QueueFull:
            async with asyncio.timeout(timeout):
                await self._put_waiting(envelope)
                return await future
        timer = loop.call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def _put_waiting(self, item: M | _Control) -> None:
        await self._mailbox.put(item)
        if self._closed:
            # The actor ended while we waited: nobody will read this mailbox again. Draining
            # it wakes the next waiting producers, who find it closed and drain in turn.
            self._drain()
            raise ActorStopped(self._name)

    async def _run(self) -> None:
        mailbox = self._mailbox
        qsize = mailbox.qsize
        get_nowait = mailbox.get_nowait
        get = mailbox.get
        handle = self.handle
        try:
            while True:
                item = get_nowait() if qsize() else await get()
                if isinstance(item, _Control):
                    if isinstance(item, _Ask):
                        await self._answer(item)
                else:
                    await handle(item)
                if self._draining and not qsize():
                    return
        finally:
            self._close()
            try:
                await self.on_stop()
            finally:
                self._drain()

    async def _answer(self, envelope: _Ask[M, R]) -> None:
        future = envelope.future
        if future.done():  # the caller timed out or was cancelled
            return
        try:
            result = await self.handle(envelope.message)
        except BaseException as exc:
            if not future.done():
                error = exc if isinstance(exc, Exception) else ActorStopped(self._name)
                future.set_exception(error)
            raise
        if not future.done():
            future.set_result(result)

    def _close(self) -> None:
        self._accepting = False
        self._closed = True
        metrics.untrack_mailbox(self)

    def _drain(self) -> None:
        mailbox = self._mailbox
        dropped = 0
        while mailbox.qsize():
            item = mailbox.get_nowait()
            if isinstance(item, _Ask):
                if not item.future.done():
                    item.future.set_exception(ActorStopped(self._name))
            elif isinstance(item, _Wake):
                continue
            dropped += 1
        if dropped:
            log.warning(
                "actor ended with messages in its mailbox",
                extra={"actor": self._name, "dropped": dropped},
            )


class Service:
    """A child that runs one coroutine: :meth:`run` (override it, or pass ``run=``).

    :meth:`on_start` runs in the caller of :meth:`start` (bind sockets there, so that the
    next sibling starts after this one is ready); :meth:`run` runs in the service's task and
    :meth:`on_stop` in that task's ``finally``. A return from :meth:`run` is a normal exit.

    By default :meth:`stop` cancels :meth:`run` at once. With ``graceful=True`` it sets
    :attr:`stopping` and gives :meth:`run` up to the shutdown timeout to return on its own.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]] | None = None,
        *,
        graceful: bool = False,
    ) -> None:
        """A service named ``name`` running ``run()`` (or the overridden :meth:`run`)."""
        self._name = name
        self._run_fn = run
        self._graceful = graceful
        self._task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()

    @property
    def name(self) -> str:
        """The service's name."""
        return self._name

    @property
    def done(self) -> asyncio.Future[None]:
        """The service's task."""
        if self._task is None:
            raise RuntimeError(f"service {self._name!r} was not started")
        return self._task

    @property
    def running(self) -> bool:
        """True while the service's task runs."""
        return self._task is not None and not self._task.done()

    async def on_start(self) -> None:
        """Hook run by :meth:`start` before :meth:`run`; raising fails the start."""

    async def on_stop(self) -> None:
        """Hook run when :meth:`run` ends for any reason."""

    async def run(self) -> None:
        """The service's body: runs until it returns, raises or is cancelled."""
        if self._run_fn is None:
            raise NotImplementedError("pass run= or override Service.run")
        await self._run_fn()

    async def start(self) -> None:
        """Run :meth:`on_start`, then :meth:`run` in a new task."""
        if self._task is not None:
            raise RuntimeError(f"service {self._name!r} was already started")
        await self.on_start()
        self._task = await spawn(self._main(), name=f"service:{self._name}")

    async def stop(self, timeout: float) -> None:
        """Set :attr:`stopping`; cancel :meth:`run` (after ``timeout`` s if graceful,
        else at once, its clean-up then having up to ``timeout`` s)."""
        self.stopping.set()
        if self._task is not None:
            if self._graceful:
                await stop_task(self._task, timeout, name=self._name)
            else:
                grace = CANCEL_GRACE if math.isinf(timeout) else max(CANCEL_GRACE, timeout)
                await stop_task(self._task, 0, name=self._name, grace=grace)

    async def wait(self) -> None:
        """Wait for the service to end; raises what it crashed with (never cancels it)."""
        await asyncio.shield(self.done)

    async def _main(self) -> None:
        try:
            await self.run()
        finally:
            await self.on_stop()
