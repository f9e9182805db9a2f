"""``TelethonSession``: Telethon's session in memory, written through to Postgres.

Telethon v1 calls its session synchronously (``save()``, ``set_update_state``,
``process_entities`` and the lookups return plain values), so everything is served from
memory and every change is written to Postgres afterwards, by one task this object owns:

* a change marks its item dirty and wakes the writer through a one-slot queue (a wake-up
  while one is pending is dropped: writes coalesce). The writer takes every dirty item,
  writes them in one transaction (:func:`vibee.store.telethon_state.save`) and repeats
  until nothing is dirty. When Postgres fails it keeps the items, backs off and retries;
* :meth:`flush` waits until every change made before the call is written;
  :meth:`aclose` flushes (bounded by a timeout) and stops the writer.

What is stored where: the dc, server, port and 256-byte auth key, with the account's user
id, are one :class:`~vibee.telegram.telethon_credential.TelethonCredential`, sealed with
the session keyring (AES-256-GCM, associated data ``telegram_session:<id>``) into
``telegram_sessions.credential`` — the same blob :attr:`TelethonGateway.credential`
returns, so the auth key exists at rest only encrypted, and is never logged. The update
state (entity 0 = the account's common state, other ids = channels) and the entities go
to ``telethon_update_state`` and ``telethon_entities``. At most ``max_entities`` entities
stay in memory (least recently used dropped first; Postgres keeps them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from telethon import utils
from telethon.sessions import MemorySession
from telethon.tl import types

from vibee.secrets import Keyring
from vibee.store import DB_ERRORS, Executor, telethon_state
from vibee.store.telethon_state import EntityRow, SessionWrite, UpdateStateRow
from vibee.telegram.session_store import seal
from vibee.telegram.telethon_credential import credential_of

log = logging.getLogger("vibee.telegram.telethon_session")

DEFAULT_MAX_ENTITIES = 10_000
BASE_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
_DB_ERRORS = DB_ERRORS


@dataclass(frozen=True, slots=True)
class _Batch:
    version: int
    write: SessionWrite
    credential: bytes | None  # the plaintext written, to skip rewriting the same one


class TelethonSession(MemorySession):  # type: ignore[misc]  # telethon is untyped
    """A Telethon session for Telegram session row ``session_id`` (see the module doc)."""

    def __init__(
        self,
        session_id: int,
        keyring: Keyring,
        db: Executor,
        *,
        max_entities: int = DEFAULT_MAX_ENTITIES,
    ) -> None:
        super().__init__()
        self.session_id = session_id
        self._keyring = keyring
        self._db = db
        self._max_entities = max_entities
        self._user_id = 0
        self._entities: OrderedDict[int, EntityRow] = OrderedDict()
        self._by_username: dict[str, int] = {}
        self._by_phone: dict[str, int] = {}
        self._dirty_credential = False
        self._dirty_states: dict[int, UpdateStateRow] = {}
        self._dirty_entities: OrderedDict[int, EntityRow] = OrderedDict()
        self._clear = False
        self._written_credential: bytes | None = None
        self._version = 0
        self._written = 0
        self._wakeups: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._flushed: asyncio.Condition | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._gone = False

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self, *, fresh: bool) -> None:
        """Load the stored update state and entities (or, for a ``fresh`` auth key, forget
        them: they belong to an older key), then start the writer."""
        if fresh:
            self.delete()
        else:
            for s in await telethon_state.load_states(self._db, self.session_id):
                state = types.updates.State(
                    pts=s.pts, qts=s.qts, date=s.date, seq=s.seq, unread_count=0
                )
                self._update_states[s.entity_id] = state
            for row in await telethon_state.load_entities(
                self._db, self.session_id, self._max_entities
            ):
                self._remember(row)
        self.start()

    def start(self) -> None:
        """Start the writer task (in the running loop). Idempotent."""
        if self._writer is None or self._writer.done():
            self._stopping = False
            self._flushed = asyncio.Condition()
            self._writer = asyncio.create_task(
                self._run(), name=f"telethon-session-{self.session_id}"
            )
            self._wake()

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every change made before this call is in Postgres. False on timeout
        or when the writer is not running."""
        target = self._version
        if self._written >= target:
            return True
        if self._writer is None or self._writer.done() or self._flushed is None:
            return False
        self._wake()
        cond = self._flushed
        try:
            async with asyncio.timeout(timeout), cond:
                await cond.wait_for(lambda: self._written >= target or self._gone)
        except TimeoutError:
            return False
        return self._written >= target

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write what is pending (waiting at most ``timeout`` s), then stop the writer."""
        writer = self._writer
        if writer is None:
            return
        self._stopping = True
        self._wake()
        await asyncio.wait([writer], timeout=timeout)
        if not writer.done():
            log.warning(
                "telethon session: pending state not written before close",
                extra={"session_id": self.session_id},
            )
            writer.cancel()
            await asyncio.wait([writer])
        self._writer = None

    # --- what the gateway tells it ----------------------------------------------------------

    @property
    def user_id(self) -> int:
        """The account's user id once authorized (0 before), stored in the credential."""
        return self._user_id

    @user_id.setter
    def user_id(self, value: int) -> None:
        if value != self._user_id:
            self._user_id = value
            self._credential_changed()

    # --- Telethon's session interface -------------------------------------------------------

    def set_dc(self, dc_id: int, server_address: str, port: int) -> None:
        """Telethon moved to another data centre (or set the first one)."""
        if (dc_id or 0, server_address, port) != (self._dc_id, self._server_address, self._port):
            super().set_dc(dc_id, server_address, port)
            self._credential_changed()

    @property
    def auth_key(self) -> Any:
        """The MTProto auth key (a ``telethon.crypto.AuthKey``)."""
        return self._auth_key

    @auth_key.setter
    def auth_key(self, value: Any) -> None:
        self._auth_key = value
        self._credential_changed()

    def set_update_state(self, entity_id: int, state: Any) -> None:
        """Remember an update box's position (0: the account; else a channel id)."""
        self._update_states[entity_id] = state
        date = state.date if isinstance(state.date, datetime) else datetime.now(UTC)
        row = UpdateStateRow(entity_id, state.pts, state.qts, date, state.seq)
        self._dirty_states[entity_id] = row
        self._changed()

    def process_entities(self, tlo: Any) -> None:
        """Remember the users and chats in a Telegram result (only changed rows are written)."""
        changed = False
        for row in self._entities_to_rows(tlo):
            if self._remember(row):
                self._dirty_entities.pop(row[0], None)
                self._dirty_entities[row[0]] = row
                changed = True
        while len(self._dirty_entities) > self._max_entities:
            self._dirty_entities.popitem(last=False)
        if changed:
            self._changed()

    def get_entity_rows_by_phone(self, phone: str) -> tuple[int, int] | None:
        """(marked id, hash) of the entity with this phone."""
        return self._hit(self._by_phone.get(phone))

    def get_entity_rows_by_username(self, username: str) -> tuple[int, int] | None:
        """(marked id, hash) of the entity with this (lowercased) username."""
        return self._hit(self._by_username.get(username.lower()))

    def get_entity_rows_by_name(self, name: str) -> tuple[int, int] | None:
        """(marked id, hash) of the first entity with this display name."""
        return self._hit(next((r[0] for r in self._entities.values() if r[4] == name), None))

    def get_entity_rows_by_id(self, id: int, exact: bool = True) -> tuple[int, int] | None:
        """(marked id, hash) by marked id; ``exact=False`` also tries the bare id as a user,
        a basic group and a channel."""
        if exact:
            return self._hit(id)
        for peer in (types.PeerUser(id), types.PeerChat(id), types.PeerChannel(id)):
            found = self._hit(utils.get_peer_id(peer))
            if found is not None:
                return found
        return None

    def save(self) -> None:
        """Telethon asks to persist: wake the writer (it writes without blocking Telethon)."""
        self._wake()

    def close(self) -> None:
        """Telethon disconnected: write what is pending (:meth:`aclose` stops the writer)."""
        self._wake()

    def delete(self) -> None:
        """Forget the update state and entities, here and in Postgres (not the credential)."""
        self._update_states.clear()
        self._entities.clear()
        self._by_username.clear()
        self._by_phone.clear()
        self._dirty_states.clear()
        self._dirty_entities.clear()
        self._clear = True
        self._changed()

    def clone(self, to_instance: Any = None) -> Any:
        """A plain in-memory copy (Telethon clones only for CDN downloads)."""
        copy = to_instance or MemorySession()
        copy.set_dc(self.dc_id, self.server_address, self.port)
        copy.auth_key = self.auth_key
        return copy

    # --- memory -----------------------------------------------------------------------------

    def _remember(self, row: EntityRow) -> bool:
        """Keep ``row`` (most recently used); True when it differs from what was known."""
        old = self._entities.pop(row[0], None)
        self._entities[row[0]] = row
        if old is not None:
            self._unindex(old)
        if row[2]:
            self._by_username[row[2]] = row[0]
        if row[3]:
            self._by_phone[row[3]] = row[0]
        while len(self._entities) > self._max_entities:
            _, evicted = self._entities.popitem(last=False)
            self._unindex(evicted)
        return old != row

    def _unindex(self, row: EntityRow) -> None:
        if row[2] and self._by_username.get(row[2]) == row[0]:
            del self._by_username[row[2]]
        if row[3] and self._by_phone.get(row[3]) == row[0]:
            del self._by_phone[row[3]]

    def _hit(self, entity_id: int | None) -> tuple[int, int] | None:
        row = self._entities.get(entity_id) if entity_id is not None else None
        if row is None:
            return None
        self._entities.move_to_end(row[0])
        return row[0], row[1]

    # --- writing through --------------------------------------------------------------------

    def _credential_changed(self) -> None:
        self._dirty_credential = True
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._wake()

    def _wake(self) -> None:
        # a wake-up already pending covers this change too: writes coalesce
        with contextlib.suppress(asyncio.QueueFull):
            self._wakeups.put_nowait(None)

    def _take(self) -> _Batch:
        plain = None
        sealed = None
        if self._dirty_credential:
            cred = credential_of(self, self._user_id)
            if cred is not None:
                plain = cred.encode()
                if plain != self._written_credential:
                    sealed = seal(self._keyring, self.session_id, plain)
        batch = _Batch(
            self._version,
            SessionWrite(
                clear=self._clear,
                credential=sealed,
                states=tuple(self._dirty_states.values()),
                entities=tuple(self._dirty_entities.values()),
            ),
            plain if sealed is not None else None,
        )
        self._dirty_credential = False
        self._dirty_states = {}
        self._dirty_entities = OrderedDict()
        self._clear = False
        return batch

    def _restore(self, batch: _Batch) -> None:
        """A write failed: mark its items dirty again (newer changes win)."""
        write = batch.write
        if batch.credential is not None:
            self._dirty_credential = True
        if self._clear and not write.clear:
            return  # a later delete() supersedes what this batch held
        self._clear = self._clear or write.clear
        for state in write.states:
            self._dirty_states.setdefault(state.entity_id, state)
        for row in write.entities:
            self._dirty_entities.setdefault(row[0], row)

    async def _run(self) -> None:
        failures = 0
        while True:
            if self._written >= self._version:
                if self._stopping:
                    return
                await self._wakeups.get()
                continue
            batch = self._take()
            try:
                alive = await telethon_state.save(self._db, self.session_id, batch.write)
            except _DB_ERRORS as exc:
                self._restore(batch)
                failures += 1
                delay = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2 ** min(failures, 8))
                log.warning(
                    "telethon session: cannot write state, retrying",
                    extra={"session_id": self.session_id, "error": type(exc).__name__},
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            if not alive:
                log.info(
                    "telethon session: the session row is gone; its state is not kept",
                    extra={"session_id": self.session_id},
                )
                self._gone = True
                self._dirty_credential = False
                self._dirty_states.clear()
                self._dirty_entities.clear()
                await self._mark_written(self._version)
                return
            if batch.credential is not None:
                self._written_credential = batch.credential
            await self._mark_written(batch.version)

    async def _mark_written(self, version: int) -> None:
        self._written = max(self._written, version)
        if self._flushed is not None:
            async with self._flushed:
                self._flushed.notify_all()
