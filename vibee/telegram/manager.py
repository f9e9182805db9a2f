"""Which session actors run here: one per session this instance is placed and leased.

The manager reads the sessions that should be running somewhere (authorized, or
connected before a restart), places them over the live instances by rendezvous hashing
(:func:`vibee.coord.membership.place`, at most ``telegram.max_sessions`` each), and for
each one placed here takes the session's lease, records its epoch in Postgres (the
fencing token) and adds a ``session:<id>`` child to the ``sessions`` supervisor. It
sweeps again every few seconds (every ``redis.retry_s`` with many instances), which is
how a login finished elsewhere gets its actor; a login finished in this process, a peer
joining or leaving, or a bus notice calls :meth:`SessionManager.wake` to sweep at once.
An actor whose session is no longer wanted here (deleted, its user disabled, placed on
another instance) is stopped, then its lease released.

Leases are renewed every ``retry_s`` in one Redis call. A lease another instance holds
now is lost: its actor stops at once. A lease not renewed for ``renew_deadline_s``
(Redis unreachable) stops its actor too — before the lease can expire, so that no peer
connects the session while this one still does. A graceful stop leaves the membership,
stops every actor, then releases the leases and tells the peers, which take over at once.

Session children are transient: one that ends normally (logged out) is not restarted,
and its lease is given up. With one instance (no Redis) every lease is granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from vibee.automation.events import EventSink
from vibee.config import RedisConfig
from vibee.coord.base import CoordinationUnavailable, Lease
from vibee.coord.coordinator import Coordinator
from vibee.coord.membership import place
from vibee.runtime import ChildSpec, Restart, Service, Supervisor
from vibee.runtime.supervisor import (
    ChildStartError,
    DuplicateChildError,
    NoSuchChild,
    SupervisorNotRunning,
)
from vibee.secrets import DecryptError, Keyring
from vibee.store import DB_ERRORS, sessions
from vibee.telegram.login import GatewayFactory
from vibee.telegram.session_actor import InboundSink, SessionActor
from vibee.telegram.session_store import unseal

log = logging.getLogger("vibee.telegram.manager")


@dataclass(slots=True)
class _Held:
    lease: Lease
    renewed_at: float
    """When the last successful renewal was *sent* (monotonic): the lease is valid at
    least ``lease_s`` past it."""


class SessionManager(Service):
    """The ``session-manager`` child (see the module docstring)."""

    def __init__(
        self,
        supervisor: Callable[[], Supervisor | None],
        pool: asyncpg.Pool,
        keyring: Keyring,
        gateways: GatewayFactory,
        sink: InboundSink,
        *,
        max_sessions: int = 1000,
        per_chat_per_minute: int = 10,
        circuit_threshold: int = 5,
        retry_delay_s: float = 1.0,
        sweep_s: float = 5.0,
        events: EventSink | None = None,
        coordinator: Coordinator | None = None,
        on_gained: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__("session-manager", graceful=True)
        self._events = events
        self._supervisor = supervisor
        self._pool = pool
        self._keyring = keyring
        self._gateways = gateways
        self._sink = sink
        self._max = max_sessions
        self._per_chat = per_chat_per_minute
        self._threshold = circuit_threshold
        self._retry_delay = retry_delay_s
        self._coord = coordinator or Coordinator.from_config(RedisConfig())
        self._sweep_s = sweep_s if self._coord.mode == "local" else self._coord.retry_s
        self._on_gained = on_gained
        self._held: dict[int, _Held] = {}
        self._capped = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def wake(self) -> None:
        """Sweep now (a login just finished, an instance came or went)."""
        self._wake.set()

    def owns(self, session_id: int) -> bool:
        """True while this instance holds the session's lease."""
        return session_id in self._held

    async def run(self) -> None:
        """Sweep and renew until asked to stop; then hand the sessions over."""
        async with asyncio.TaskGroup() as group:
            sweeper = group.create_task(self._sweep_loop(), name="session-manager:sweep")
            renewer = group.create_task(self._renew_loop(), name="session-manager:renew")
            await self.stopping.wait()
            sweeper.cancel()
            renewer.cancel()
        await self._hand_over()

    async def _sweep_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sweep()
            except DB_ERRORS as exc:
                log.warning("session sweep failed", extra={"error": repr(exc)})
            try:
                async with asyncio.timeout(self._sweep_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> int:
        """Start an actor for every session placed here that has none, stop those placed
        elsewhere or no longer wanted. Returns how many started."""
        async with self._lock:
            return await self._sweep()

    async def _sweep(self) -> int:
        supervisor = self._supervisor()
        if supervisor is None:
            return 0
        rows = await sessions.runnable_all_users(self._pool)
        epochs = {session_id: epoch for session_id, _, epoch in rows}
        me = self._coord.instance_id
        members = self._coord.members or [me]
        mine = {s for s, owner in place(epochs, members, self._max).items() if owner == me}
        if self._coord.mode == "redis" and not self._coord.up:
            mine = set(self._held)  # no new leases while Redis is away; the deadline rules
        running = {int(n.split(":", 1)[1]) for n in supervisor.names() if n.startswith("session:")}
        for ended in set(self._held) - running:  # logged out: its lease is no longer needed
            await self._release([ended])
        await self._stop([s for s in running if s not in mine], "placed elsewhere or not wanted")
        capped = len(epochs) > len(members) * self._max
        if capped and not self._capped:  # said once, not at every sweep
            log.warning(
                "max_sessions reached: some sessions run nowhere",
                extra={"max_sessions": self._max, "instances": len(members)},
            )
        self._capped = capped
        return await self._start(supervisor, sorted(mine - running), epochs)

    async def _start(
        self, supervisor: Supervisor, session_ids: list[int], floors: dict[int, int]
    ) -> int:
        """Lease, fence (one statement for all) and start these sessions; how many ran."""
        leases: dict[int, _Held] = {}
        for session_id in session_ids:
            try:
                lease = await self._coord.leases.acquire(session_id, floors[session_id])
            except CoordinationUnavailable:
                break
            if lease is not None:  # else: a peer still holds it, or Redis's grace period
                leases[session_id] = _Held(lease, time.monotonic())
        if not leases:
            return 0
        try:
            rows = await sessions.fence(self._pool, {s: h.lease.epoch for s, h in leases.items()})
        except BaseException:
            await self._give_back(list(leases.values()))
            raise
        fenced = {row.id: row for row in rows}
        stale = [h for s, h in leases.items() if s not in fenced]
        if stale:
            log.warning("stale lease epochs: giving them back", extra={"count": len(stale)})
            await self._give_back(stale)
        started = 0
        for row in rows:
            held = leases[row.id]
            if row.credential is None or not await self._add(supervisor, row, held):
                await self._give_back([held])
                continue
            started += 1
        return started

    async def _add(self, supervisor: Supervisor, row: sessions.SessionRow, held: _Held) -> bool:
        assert row.credential is not None
        try:
            credential = unseal(self._keyring, row.id, row.credential)
        except DecryptError:
            log.error("cannot decrypt the session's credential", extra={"session_id": row.id})
            await sessions.set_state(self._pool, row.id, "bad_credentials", "undecryptable")
            return False
        spec = ChildSpec(
            f"session:{row.id}",
            self._factory(row.id, row.user_id, row.last_seq, credential, held.lease.epoch),
            restart=Restart.TRANSIENT,
            shutdown_timeout=5.0,
        )
        self._held[row.id] = held
        if self._on_gained is not None:
            try:  # before the actor runs: what the previous owner left is scheduled first
                await self._on_gained(row.id)
            except DB_ERRORS as exc:  # the pipeline's sweep finds it instead
                log.warning("cannot recover the session's work now", extra={"error": repr(exc)})
        try:
            await supervisor.add_child(spec)
        except (DuplicateChildError, SupervisorNotRunning, ChildStartError):
            del self._held[row.id]
            return False
        log.info("session placed here", extra={"session_id": row.id, "epoch": held.lease.epoch})
        return True

    async def _give_back(self, held: list[_Held]) -> None:
        with contextlib.suppress(CoordinationUnavailable):
            await self._coord.leases.release([h.lease for h in held])

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._coord.retry_s)
            await self.renew()

    async def renew(self) -> None:
        """Renew every held lease; stop the actors whose lease is lost or past the renew
        deadline."""
        held = list(self._held.values())
        if not held:
            return
        sent = time.monotonic()
        lost: list[int] = []
        try:
            async with asyncio.timeout(self._coord.retry_s):
                results = await self._coord.leases.renew([h.lease for h in held])
        except (CoordinationUnavailable, TimeoutError):
            results = None
        answers: list[bool | None] = list(results) if results is not None else [None] * len(held)
        for entry, ok in zip(held, answers, strict=True):
            if ok:
                entry.renewed_at = sent
            elif ok is False:
                lost.append(entry.lease.session_id)
        deadline = time.monotonic() - self._coord.renew_deadline_s
        late = [h.lease.session_id for h in held if h.renewed_at < deadline]
        if lost:
            log.warning("leases taken by another instance", extra={"sessions": lost})
        if late:
            log.warning("leases not renewed in time: disconnecting", extra={"sessions": late})
        for session_id in lost + late:
            self._held.pop(session_id, None)  # not ours to release any more
        await self._stop(lost + late, "lease lost", release=False)

    async def _stop(self, session_ids: list[int], why: str, *, release: bool = True) -> None:
        """Stop these actors together, then (``release``) give their leases up."""
        supervisor = self._supervisor()
        if not session_ids or supervisor is None:
            return
        log.info("stopping sessions here", extra={"sessions": session_ids, "reason": why})

        async def stop_one(session_id: int) -> None:
            with contextlib.suppress(NoSuchChild):
                await supervisor.remove_child(f"session:{session_id}")

        async with asyncio.TaskGroup() as group:
            for session_id in session_ids:
                group.create_task(stop_one(session_id))
        if release:
            await self._release(session_ids)

    async def _release(self, session_ids: list[int]) -> None:
        await self._give_back([self._held.pop(s) for s in session_ids if s in self._held])

    async def _hand_over(self) -> None:
        """Leave, stop every actor, release the leases, tell the peers."""
        with contextlib.suppress(CoordinationUnavailable):
            await self._coord.membership.leave()
        async with self._lock:
            await self._stop(list(self._held), "shutting down")
        if self._coord.mode == "redis":
            await self._coord.bus.send(None, {"t": "sessions"})

    def _factory(
        self, session_id: int, user_id: int, last_seq: int, credential: bytes, epoch: int
    ) -> Callable[[], SessionActor]:
        def build() -> SessionActor:
            return SessionActor(
                session_id,
                user_id,
                last_seq,
                self._gateways(session_id, credential),
                self._pool,
                self._sink,
                per_chat_per_minute=self._per_chat,
                circuit_threshold=self._threshold,
                retry_delay_s=self._retry_delay,
                events=self._events,
                epoch=epoch,
                limiter=self._coord.limiter if self._coord.mode == "redis" else None,
            )

        return build
