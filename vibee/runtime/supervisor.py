"""Supervisor: starts children in order, restarts them when they fail, stops them in reverse.

A child is anything that implements :class:`Child` (``name``, ``start()``,
``stop(timeout)``, ``done``): :class:`~vibee.runtime.actor.Actor`,
:class:`~vibee.runtime.actor.Service`, and :class:`Supervisor` itself, so supervisors nest
into a tree. A child is described by a :class:`ChildSpec`; its factory builds a fresh
child for every (re)start.

Restart types (OTP's): ``PERMANENT`` children are always restarted, ``TRANSIENT`` ones only
when they crash (an exception; a normal return or a cancellation from outside is not a
crash), ``TEMPORARY`` ones never. A child that is not restarted is removed. Strategies:
``ONE_FOR_ONE`` restarts the failed child, ``ONE_FOR_ALL`` stops the others (reverse order)
and restarts all, ``REST_FOR_ONE`` does that for the children started after the failed one.

Restart intensity: more than ``max_restarts`` restarts within ``period`` seconds (default
5 in 30 s) and the supervisor gives up: it stops its children in reverse order and its own
task fails with :class:`SupervisorGaveUp`, which its parent sees as a crash; at the root,
:meth:`Supervisor.wait` raises it and the caller exits non-zero. Between restarts of a
child the supervisor waits ``backoff_base * 2**(n-1)`` seconds (capped at ``backoff_max``),
``n`` being that child's restarts within the period. Restarts in progress do not make a
supervisor unhealthy: giving up does.

Every exit is seen through a done-callback on the child's ``done`` future and queued for
the supervisor's single task: no extra task per child, no O(n) work per event for
one_for_one (10,000 dynamic session children). Each queued event belongs to one child
incarnation, so the event queue is bounded by the number of children.

Exceptions::

    SupervisorError
     ├── ChildStartError       a child failed to start while the supervisor started it
     ├── SupervisorGaveUp      restart intensity exceeded (``__cause__``: the last failure)
     ├── SupervisorNotRunning  add_child on a supervisor that is not running
     ├── DuplicateChildError   a child with that name exists already (also a ValueError)
     └── NoSuchChild           remove_child of an unknown name (also a KeyError)
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from vibee.runtime import metrics
from vibee.runtime.actor import spawn, stop_task

__all__ = [
    "Child",
    "ChildSpec",
    "ChildStartError",
    "DuplicateChildError",
    "NoSuchChild",
    "Restart",
    "RestartPolicy",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
]

log = logging.getLogger("vibee.runtime")


class SupervisorError(Exception):
    """Base class of the supervisor errors."""


class ChildStartError(SupervisorError):
    """A child failed to start while its supervisor was starting (``__cause__``: why)."""


class SupervisorGaveUp(SupervisorError):
    """Restart intensity exceeded: the supervisor stopped its children and failed."""


class SupervisorNotRunning(SupervisorError):
    """The supervisor is not running (not started yet, stopping, stopped or failed)."""


class DuplicateChildError(SupervisorError, ValueError):
    """A child with that name is already supervised."""


class NoSuchChild(SupervisorError, KeyError):
    """No child has that name."""


class Child(Protocol):
    """What a supervisor can run: Actor, Service, Supervisor, or your own class."""

    @property
    def name(self) -> str:
        """The child's name."""
        ...

    @property
    def done(self) -> asyncio.Future[None]:
        """Completes when the child has ended: result (normal exit), exception (crash) or
        cancelled. Only valid after :meth:`start` returned."""
        ...

    async def start(self) -> None:
        """Start; return once the child is ready (raise if it cannot start)."""
        ...

    async def stop(self, timeout: float) -> None:
        """Stop gracefully within ``timeout`` s, then by cancellation; never raise the
        child's own failure."""
        ...


class Restart(enum.Enum):
    """When a child is restarted."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children restart when one fails."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to build and run one child. ``label`` is its bounded metric label; by default
    the name up to its first ``:`` (``session:42`` → ``session``)."""

    name: str
    factory: Callable[[], Child]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    label: str | None = None

    @property
    def metric_label(self) -> str:
        """The ``actor`` label of ``vibee_actor_restarts_total``."""
        return self.label or self.name.partition(":")[0]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Restart intensity (``max_restarts`` within ``period`` s) and backoff between restarts."""

    max_restarts: int = 5
    period: float = 30.0
    backoff_base: float = 0.1
    backoff_max: float = 10.0

    def backoff(self, restarts: int) -> float:
        """The delay before a child's ``restarts``-th restart within the period."""
        if self.backoff_base <= 0 or restarts <= 0:
            return 0.0
        return min(self.backoff_max, self.backoff_base * 2.0 ** min(restarts - 1, 60))


class _State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class _Entry:
    """One supervised name and its current incarnation."""

    __slots__ = ("child", "gen", "recent", "removed", "spec", "starting")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.child: Child | None = None
        self.gen = 0  # bumped at each start and each deliberate stop: older exits are stale
        self.starting = False
        self.removed = False
        self.recent: deque[float] | None = None  # this child's restart times in the period


@dataclass(slots=True)
class _Exited:
    entry: _Entry
    gen: int
    error: BaseException | None
    cancelled: bool


@dataclass(slots=True)
class _RestartDue:
    entries: tuple[_Entry, ...]


class _GiveUp(Exception):
    """Internal: raised inside the supervisor's task when restart intensity is exceeded."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__()
        self.cause = cause


class Supervisor:
    """A supervisor of an ordered, growable set of children; itself a :class:`Child`.

    ``concurrent_stop=True`` stops the children concurrently instead of in reverse order
    (for many independent dynamic children such as sessions). ``clock`` measures the
    restart-intensity window (inject one in tests).
    """

    def __init__(
        self,
        name: str,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        policy: RestartPolicy | None = None,
        concurrent_stop: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A supervisor named ``name`` that will start ``children`` in order."""
        self._name = name
        self._strategy = strategy
        self._policy = policy or RestartPolicy()
        self._concurrent_stop = concurrent_stop
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        for spec in children:
            self._register(spec)
        self._state = _State.IDLE
        self._events: deque[_Exited | _RestartDue] = deque()
        self._wakeup = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._history: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None

    # -- Child protocol ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The supervisor's name."""
        return self._name

    @property
    def done(self) -> asyncio.Future[None]:
        """The supervisor's task: result once stopped, :class:`SupervisorGaveUp` on failure."""
        if self._task is None:
            raise RuntimeError(f"supervisor {self._name!r} was not started")
        return self._task

    @property
    def healthy(self) -> bool:
        """True while running and not given up (restarts in progress are healthy)."""
        return self._state is _State.RUNNING and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the children in order; on a failure stop those started (reverse order) and
        raise :class:`ChildStartError`."""
        if self._state is not _State.IDLE:
            raise RuntimeError(f"supervisor {self._name!r} was already started")
        self._state = _State.STARTING
        current = ""
        try:
            for entry in list(self._entries.values()):
                current = entry.spec.name
                child = entry.spec.factory()
                await child.start()
                self._attach(entry, child)
                if self._state is not _State.STARTING:
                    raise SupervisorNotRunning(f"supervisor {self._name!r} stopped while starting")
        except BaseException as exc:
            stopped = isinstance(exc, SupervisorNotRunning)
            self._state = _State.STOPPED if stopped else _State.FAILED
            self._events.clear()
            await self._stop_all(kill=not isinstance(exc, Exception))
            if stopped:
                raise
            if isinstance(exc, Exception):
                raise ChildStartError(f"{self._name}: child {current!r} failed to start") from exc
            raise
        self._state = _State.RUNNING
        self._task = await spawn(self._monitor(), name=f"supervisor:{self._name}")

    async def stop(self, timeout: float = math.inf) -> None:
        """Stop the children in reverse order (each within its shutdown timeout); after
        ``timeout`` s in all, cancel whatever is left."""
        if self._task is None:
            if self._state is _State.IDLE:
                self._state = _State.STOPPED
            elif self._state is _State.STARTING:
                self._state = _State.STOPPING  # start() stops what it started and raises
            return
        self.request_stop()
        await stop_task(self._task, timeout, name=self._name)

    def request_stop(self) -> None:
        """Ask for a graceful stop without waiting for it (safe from callbacks)."""
        if self._state is _State.RUNNING:
            self._state = _State.STOPPING
            self._wakeup.set()

    async def wait(self) -> None:
        """Wait until the supervisor ends; raises :class:`SupervisorGaveUp` if it gave up."""
        await asyncio.shield(self.done)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        shutdown_timeout: float = 30.0,
        on_ready: Callable[[], object] | None = None,
    ) -> None:
        """Run as the root: start, call ``on_ready``, run until ``stop`` is set, then stop
        within ``shutdown_timeout`` s. Raises :class:`ChildStartError` or
        :class:`SupervisorGaveUp` (the caller exits non-zero); a cancel stops the tree too."""
        await self.start()
        try:
            if on_ready is not None:
                on_ready()
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((self.done, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                await asyncio.wait((stopping,))
        finally:
            await self.stop(shutdown_timeout)
        await self.wait()

    # -- children ------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of supervised names (running or waiting for a restart)."""
        return len(self._entries)

    def names(self) -> list[str]:
        """The children's names in start order."""
        return list(self._entries)

    def get(self, name: str) -> Child | None:
        """The running incarnation of child ``name`` (None while it restarts or if unknown)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.child

    async def add_child(self, spec: ChildSpec) -> Child:
        """Add a child after the others and start it; returns the started child."""
        if self._state is not _State.RUNNING:
            raise SupervisorNotRunning(f"supervisor {self._name!r} is {self._state.value}")
        entry = self._register(spec)
        entry.starting = True
        try:
            child = spec.factory()
            await child.start()
        except BaseException as exc:
            self._forget(entry)
            if isinstance(exc, Exception):
                raise ChildStartError(f"{self._name}: child {spec.name!r} failed to start") from exc
            raise
        finally:
            entry.starting = False
        if entry.removed or self._state is not _State.RUNNING:
            await child.stop(spec.shutdown_timeout)
            raise SupervisorNotRunning(f"child {spec.name!r} was removed while it started")
        self._attach(entry, child)
        return child

    async def remove_child(self, name: str) -> None:
        """Stop child ``name`` (within its shutdown timeout) and forget it."""
        entry = self._entries.get(name)
        if entry is None:
            raise NoSuchChild(name)
        self._forget(entry)
        await self._stop_entry(entry)

    # -- internals -----------------------------------------------------------------------

    def _register(self, spec: ChildSpec) -> _Entry:
        if spec.name in self._entries:
            raise DuplicateChildError(f"{self._name}: duplicate child name {spec.name!r}")
        entry = _Entry(spec)
        self._entries[spec.name] = entry
        return entry

    def _forget(self, entry: _Entry) -> None:
        entry.removed = True
        if self._entries.get(entry.spec.name) is entry:
            del self._entries[entry.spec.name]

    def _attach(self, entry: _Entry, child: Child) -> None:
        entry.gen += 1
        entry.child = child
        child.done.add_done_callback(partial(self._child_ended, entry, entry.gen))

    def _child_ended(self, entry: _Entry, gen: int, future: asyncio.Future[None]) -> None:
        cancelled = future.cancelled()
        error = None if cancelled else future.exception()
        if (
            entry.gen != gen
            or entry.removed
            or self._state not in (_State.STARTING, _State.RUNNING)
        ):
            if error is not None:  # stopped on purpose, but it failed on its way out
                log.warning(
                    "child failed while stopping",
                    exc_info=error,
                    extra={"actor": entry.spec.name, "supervisor": self._name},
                )
            return
        self._events.append(_Exited(entry, gen, error, cancelled))
        self._wakeup.set()

    def _post(self, event: _RestartDue, timer: asyncio.TimerHandle | None = None) -> None:
        if timer is not None:
            self._timers.discard(timer)
        self._events.append(event)
        self._wakeup.set()

    async def _monitor(self) -> None:
        try:
            while self._state is _State.RUNNING:
                if not self._events:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                event = self._events.popleft()
                if isinstance(event, _Exited):
                    await self._on_exit(event)
                else:
                    await self._restart_group(event.entries)
            await self._stop_all()
            self._state = _State.STOPPED
        except _GiveUp as give_up:
            self._state = _State.FAILED
            log.error(
                "restart intensity exceeded: stopping the subtree",
                extra={
                    "supervisor": self._name,
                    "max_restarts": self._policy.max_restarts,
                    "period": self._policy.period,
                },
            )
            await self._stop_all()
            raise SupervisorGaveUp(
                f"supervisor {self._name!r}: more than {self._policy.max_restarts} restarts "
                f"in {self._policy.period} s"
            ) from give_up.cause
        except BaseException:
            self._state = _State.FAILED
            await self._stop_all(kill=True)
            raise
        finally:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self._events.clear()

    async def _on_exit(self, event: _Exited) -> None:
        entry = event.entry
        if entry.gen != event.gen or entry.removed:
            return
        entry.child = None
        spec = entry.spec
        extra = {"actor": spec.name, "supervisor": self._name, "restart": spec.restart.value}
        if event.error is not None:
            log.error("child crashed", exc_info=event.error, extra=extra)
        elif event.cancelled:
            log.warning("child was cancelled", extra=extra)
        else:
            log.info("child exited", extra=extra)
        crashed = event.error is not None
        if spec.restart is Restart.TEMPORARY or (spec.restart is Restart.TRANSIENT and not crashed):
            self._forget(entry)
            return
        await self._restart(entry, event.error)

    async def _restart(self, entry: _Entry, cause: BaseException | None) -> None:
        now = self._clock()
        policy = self._policy
        history = self._history
        history.append(now)
        while now - history[0] > policy.period:
            history.popleft()
        if len(history) > policy.max_restarts:
            raise _GiveUp(cause)
        metrics.ACTOR_RESTARTS.labels(entry.spec.metric_label).inc()
        recent = entry.recent
        if recent is None:
            recent = entry.recent = deque(maxlen=max(1, policy.max_restarts + 1))
        recent.append(now)
        while now - recent[0] > policy.period:
            recent.popleft()
        delay = policy.backoff(len(recent))
        group = self._affected(entry)
        for other in reversed(group):
            if other is not entry:
                await self._stop_entry(other)
        for other in group:
            if other is not entry and other.spec.restart is Restart.TEMPORARY:
                self._forget(other)
        survivors = tuple(e for e in group if not e.removed)
        log.info(
            "restarting",
            extra={
                "actor": entry.spec.name,
                "supervisor": self._name,
                "delay": delay,
                "children": len(survivors),
            },
        )
        if delay <= 0:
            self._post(_RestartDue(survivors))
        else:
            loop = asyncio.get_running_loop()
            timer: asyncio.TimerHandle | None = None

            def due() -> None:
                self._post(_RestartDue(survivors), timer)

            timer = loop.call_later(delay, due)
            self._timers.add(timer)

    def _affected(self, entry: _Entry) -> list[_Entry]:
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [entry]
        entries = list(self._entries.values())
        if self._strategy is Strategy.ONE_FOR_ALL:
            return entries
        return entries[entries.index(entry) :]

    async def _restart_group(self, entries: tuple[_Entry, ...]) -> None:
        for entry in entries:
            if self._state is not _State.RUNNING:
                return
            if entry.removed or entry.starting or entry.child is not None:
                continue
            if not await self._start_entry(entry) and self._strategy is not Strategy.ONE_FOR_ONE:
                return  # the failure rescheduled the rest of the group

    async def _start_entry(self, entry: _Entry) -> bool:
        spec = entry.spec
        entry.starting = True
        try:
            child = spec.factory()
            await child.start()
        except Exception as exc:
            log.error(
                "child failed to start",
                exc_info=exc,
                extra={"actor": spec.name, "supervisor": self._name},
            )
            if spec.restart is Restart.TEMPORARY:
                self._forget(entry)
                return True
            await self._restart(entry, exc)
            return False
        finally:
            entry.starting = False
        if entry.removed or self._state is not _State.RUNNING:
            await child.stop(spec.shutdown_timeout)
            return True
        self._attach(entry, child)
        return True

    async def _stop_entry(self, entry: _Entry, *, kill: bool = False) -> None:
        child = entry.child
        if child is None:
            return
        entry.child = None
        entry.gen += 1
        await child.stop(0.0 if kill else entry.spec.shutdown_timeout)

    async def _stop_all(self, *, kill: bool = False) -> None:
        entries = list(self._entries.values())
        if self._concurrent_stop and not kill:
            await asyncio.gather(*(self._stop_entry(e) for e in entries))
        else:
            for entry in reversed(entries):
                await self._stop_entry(entry, kill=kill)
