"""The tree's own children that have no module of their own, and the registry of the
current incarnation of each child the others call into (a restarted child is a new
object: callers go through :class:`Current`, never hold the old one)."""

from __future__ import annotations

import asyncio
import logging

from vibee.ai.embeddings import EmbeddingsClient
from vibee.ai.router import Router
from vibee.ai.service import build_embeddings, build_router
from vibee.automation.events import EventBus
from vibee.automation.history_jobs import HistoryJobs
from vibee.automation.ingest import Ingest
from vibee.automation.pipeline import Pipeline
from vibee.automation.rag import Rag
from vibee.config import Config
from vibee.coord.bus import Message
from vibee.coord.coordinator import Coordinator
from vibee.runtime import Service, Supervisor
from vibee.secrets import SecretStore
from vibee.store.db import Database
from vibee.telegram.manager import SessionManager
from vibee.telegram.qr import QrLogins

log = logging.getLogger("vibee.app")


class DatabaseService(Service):
    """Owns the pool (and the embedded server): opened and migrated on start, closed on
    stop. While it runs, readiness pings the database; the pool reconnects by itself when
    the server comes back."""

    def __init__(self, db: Database) -> None:
        super().__init__("database")
        self._db = db

    async def on_start(self) -> None:
        """Start the embedded server if needed, migrate, open the pool; when that fails or
        is interrupted (Ctrl-C while starting), stop the embedded server it started."""
        try:
            await self._db.open()
        except BaseException:
            try:
                await self._db.close()
            except Exception:  # the failure to open is the one to report
                log.exception("cannot close the database after a failed start")
            raise

    async def run(self) -> None:
        """Nothing to do but hold the pool open until stopped."""
        await asyncio.Event().wait()

    async def on_stop(self) -> None:
        """Close the pool and stop the embedded server this process runs."""
        await self._db.close()


class AIService(Service):
    """The ``ai`` child: owns the router (providers, breakers, cache, quota) for the pipeline."""

    def __init__(
        self, config: Config, secrets: SecretStore, db: Database, coord: Coordinator
    ) -> None:
        super().__init__("ai")
        self._config, self._secrets, self._db = config, secrets, db
        self._cache = coord.cache if coord.mode == "redis" else None
        self.router: Router | None = None
        self.rag: Rag | None = None
        self._embeddings: EmbeddingsClient | None = None

    async def on_start(self) -> None:
        """Build the chain; say which providers are left out and why."""
        self.router, skipped = build_router(
            self._config, self._secrets, pool=self._db.pool, cache=self._cache
        )
        self._embeddings = build_embeddings(self._config, self._secrets)
        self.rag = Rag(self._embeddings, self._db.pool) if self._embeddings else None
        for gone in skipped:
            log.warning(
                "AI provider left out of the chain",
                extra={"provider": gone.name, "reason": gone.reason},
            )

    async def run(self) -> None:
        """Nothing to do but keep the router open until stopped."""
        await asyncio.Event().wait()

    async def on_stop(self) -> None:
        """Close the providers' connections."""
        if self.router is not None:
            await self.router.close()
        if self._embeddings is not None:
            await self._embeddings.close()


class Current:
    """The current incarnation of the children others hold on to across restarts."""

    def __init__(self) -> None:
        self.ai: AIService | None = None
        self.ingest: Ingest | None = None
        self.pipeline: Pipeline | None = None
        self.sessions: Supervisor | None = None
        self.manager: SessionManager | None = None
        self.qr: QrLogins | None = None
        self.events = EventBus()
        self.history: HistoryJobs | None = None

    def notify(self, keys: set[tuple[int, int]]) -> None:
        """Tell the pipeline which chats got new messages."""
        if self.pipeline is not None:
            self.pipeline.notify(keys)

    def owns(self, session_id: int) -> bool:
        """True while this instance runs the session (holds its lease)."""
        return self.manager is not None and self.manager.owns(session_id)

    async def gained(self, session_id: int) -> None:
        """This instance just took a session: finish what its previous owner left."""
        if self.pipeline is not None:
            await self.pipeline.recover(session_id)

    def on_bus(self, message: Message) -> None:
        """A notice from another instance (or from this one, looped back)."""
        kind = message.get("t")
        if kind in ("history", "resync") and self.history is not None:
            self.history.wake()  # a history import was queued: claim it if the session is here
        if kind in ("sessions", "resync") and self.manager is not None:
            self.manager.wake()
        if kind == "resync" and self.pipeline is not None:
            self.pipeline.wake()
        if kind == "chat" and self.pipeline is not None:
            session_id, chat = message.get("s"), message.get("c")
            if isinstance(session_id, int) and isinstance(chat, int) and self.owns(session_id):
                self.pipeline.notify([(session_id, chat)])

    def members_changed(self) -> None:
        """An instance came or went: placement may have moved sessions."""
        if self.manager is not None:
            self.manager.wake()
