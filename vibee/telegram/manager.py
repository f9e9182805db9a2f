"""Which session actors run: one per runnable session, started at boot and on a sweep.

The manager reads the sessions that should be running (authorized, or connected before a
restart) and adds a ``session:<id>`` child to the ``sessions`` supervisor for each one
that has none, up to ``telegram.max_sessions``. It sweeps again every few seconds, which
is how a login finished elsewhere (another process, the CLI) gets its actor; a login
finished in this process calls :meth:`SessionManager.wake` to sweep at once. An actor
whose session is no longer wanted (deleted, its user disabled) is stopped by the sweep.
Session children are transient: one that ends normally (logged out) is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from vibee.automation.events import EventSink
from vibee.runtime import ChildSpec, Restart, Service, Supervisor
from vibee.runtime.supervisor import DuplicateChildError, NoSuchChild, SupervisorNotRunning
from vibee.secrets import DecryptError, Keyring
from vibee.store import DB_ERRORS, sessions
from vibee.telegram.login import GatewayFactory
from vibee.telegram.session_actor import InboundSink, SessionActor
from vibee.telegram.session_store import unseal

log = logging.getLogger("vibee.telegram.manager")


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
    ) -> None:
        super().__init__("session-manager")
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
        self._sweep_s = sweep_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Sweep now (a login just finished)."""
        self._wake.set()

    async def run(self) -> None:
        """Sweep at start, then every ``sweep_s`` seconds or when woken."""
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
        """Start an actor for every runnable session that has none. Returns how many."""
        supervisor = self._supervisor()
        if supervisor is None:
            return 0
        running = set(supervisor.names())
        started = 0
        rows = await sessions.list_runnable_all_users(self._pool)
        wanted = {f"session:{row.id}" for row in rows}
        for gone in running - wanted:  # deleted (or disabled) since: disconnect it
            if gone.startswith("session:"):
                log.info("session no longer wanted: stopping it", extra={"child": gone})
                with contextlib.suppress(NoSuchChild):
                    await supervisor.remove_child(gone)
        for row in rows:
            name = f"session:{row.id}"
            if name in running:
                continue
            if len(supervisor) >= self._max:
                log.warning("max_sessions reached", extra={"max_sessions": self._max})
                break
            if row.credential is None:
                continue
            try:
                credential = unseal(self._keyring, row.id, row.credential)
            except DecryptError:
                log.error("cannot decrypt the session's credential", extra={"session_id": row.id})
                await sessions.set_state(self._pool, row.id, "bad_credentials", "undecryptable")
                continue
            spec = ChildSpec(
                name,
                self._factory(row.id, row.user_id, row.last_seq, credential),
                restart=Restart.TRANSIENT,
                shutdown_timeout=5.0,
            )
            try:
                await supervisor.add_child(spec)
            except (DuplicateChildError, SupervisorNotRunning):
                continue
            started += 1
        return started

    def _factory(
        self, session_id: int, user_id: int, last_seq: int, credential: bytes
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
            )

        return build
