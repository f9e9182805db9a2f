"""Config changes announced through Postgres, so every instance's pipeline forgets at once.

:func:`vibee.store.automation.set_chat_config` (what the API calls) ends with
``pg_notify('vibee_chat_config', 'user:session:chat')``, delivered when its write commits.
:class:`ConfigNotices` holds one pooled connection that ``LISTEN``s on that channel and
calls ``on_change(user, session, chat)`` for each notice (session and chat None: the
user's persona, :func:`vibee.store.automation.announce_persona_change`) — on every
instance, whichever wrote the change — and ``on_sweep()`` for a replayed dead letter
(:data:`vibee.store.automation.SWEEP_NOTICE`: each instance sweeps its own sessions).
While it listens, the pipeline can keep chat configs for long
(:data:`vibee.automation.memory.LISTENING_TTL_S`); when the connection drops, notices may
have been missed: ``on_gap()`` is called (forget every config) and configs are kept only
:data:`vibee.automation.memory.CONFIG_TTL_S` again until it listens anew. It holds its
connection for good, so it does not listen at all when the pool has fewer than
:data:`MIN_POOL` connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import asyncpg

from vibee.store import DB_ERRORS
from vibee.store.automation import CONFIG_CHANNEL, SWEEP_NOTICE, parse_config_notice

log = logging.getLogger("vibee.automation.notices")

MAX_BACKOFF_S = 10.0
MIN_POOL = 4
"""A pool smaller than this is not asked for a connection to hold (configs are then
kept only ``CONFIG_TTL_S``)."""


class ConfigNotices:
    """Run :meth:`run` in a task the caller owns; :attr:`listening` says whether notices
    arrive now."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_change: Callable[[int, int | None, int | None], None],
        on_gap: Callable[[], None],
        on_sweep: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_sweep()``: work was put back in some outbox (a dead letter replayed)."""
        self._pool = pool
        self._on_change = on_change
        self._on_gap = on_gap
        self._on_sweep = on_sweep
        self.listening = False

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        if self._pool.get_max_size() < MIN_POOL:
            log.info("pool too small to listen for config changes: they apply within a TTL")
            await asyncio.Event().wait()
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0
            except DB_ERRORS as exc:
                failures += 1
                log.warning("not listening for config changes", extra={"error": repr(exc)})
            delay = min(MAX_BACKOFF_S, 0.1 * 2 ** min(failures, 10))
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _listen(self) -> None:
        conn = await self._pool.acquire()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CONFIG_CHANNEL, self._notice)
            self.listening = True
            self._on_gap()  # what changed before this LISTEN took effect is not known
            await lost.wait()
        finally:
            self.listening = False
            self._on_gap()
            try:
                if lost.is_set():
                    conn.terminate()
                else:
                    await conn.remove_listener(CONFIG_CHANNEL, self._notice)
                await self._pool.release(conn)
            except Exception as exc:  # the connection is gone already: the pool knows
                log.debug("listener connection not handed back", extra={"error": repr(exc)})

    def _notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == SWEEP_NOTICE:
            self._on_sweep()
            return
        notice = parse_config_notice(str(payload))
        if notice is None:
            log.warning("unreadable config notice", extra={"payload": str(payload)[:100]})
            self._on_gap()
            return
        self._on_change(*notice)
