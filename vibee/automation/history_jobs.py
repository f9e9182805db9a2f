"""The ``history-jobs`` child: runs the history imports users ask for over the API.

Telegram allows one connection per account, so an import must go through the gateway of
the session's running actor. A job (:mod:`vibee.store.history_jobs`) is therefore run by
the instance whose ``session:<id>`` actor is connected: every ``poll_s`` seconds, and at
once when :meth:`HistoryJobs.wake` is called (the API does after queueing a job), this
service

1. refreshes the claims of the jobs it runs (a job whose claim was lost — claimed again
   elsewhere, or deleted with its session — is cancelled here);
2. fails the queued jobs of sessions that were logged out (they could never run);
3. claims, atomically in Postgres, the queued jobs of its connected sessions, and the
   running ones whose claimant went silent for ``stale_after_s`` (a crashed instance),
   at most ``max_jobs`` at a time, and runs each in a task of its own.

A job runs :class:`~vibee.automation.history.HistoryImport` (idempotent and resumable:
a resumed job continues below what is stored and never stores a message twice), writes
its progress at most every ``progress_interval_s`` (and at the first and last chat), and
publishes ``history.progress`` {job_id, session_id, state, chats_done, chats_total,
messages}, then ``history.done`` {job_id, session_id, chats, messages, indexed} or
``history.failed`` {job_id, session_id, error} to the session's owner. ``messages``
counts what the job stored over all its attempts.

A connection that drops (a retryable gateway error) puts the job back in the queue with
its progress; it resumes once the session is connected again, here or elsewhere. A
permanent gateway error fails it. A database failure leaves it ``running``: its claim
grows stale and it is resumed. On stop, the jobs in progress are cancelled and put back
in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from vibee.ai.base import ProviderError
from vibee.automation.events import NO_EVENTS, EventSink, event
from vibee.automation.history import PAGE_SIZE, HistoryImport
from vibee.automation.rag import Rag
from vibee.obs.logging import bind
from vibee.runtime import Service, Supervisor
from vibee.store import DB_ERRORS
from vibee.store import history_jobs as store
from vibee.store.history_jobs import HistoryJob
from vibee.telegram.gateway import Gateway, GatewayError
from vibee.telegram.session_actor import SessionActor

log = logging.getLogger("vibee.automation.history_jobs")

RELEASE_TIMEOUT_S = 2.0


class ClaimLost(Exception):
    """Another claim holds the job now (or it was deleted): stop working on it."""


@dataclass(slots=True)
class _Running:
    job: HistoryJob
    task: asyncio.Task[None]


def default_instance() -> str:
    """This process's name in ``claimed_by``: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def live_gateway(actor: SessionActor) -> Gateway:
    """The gateway of a running session actor: the account's one connection."""
    return actor.gateway


class HistoryJobs(Service):
    """The ``history-jobs`` child (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sessions: Callable[[], Supervisor | None],
        *,
        rag: Callable[[], Rag | None] = lambda: None,
        events: EventSink | None = None,
        instance: str | None = None,
        poll_s: float = 5.0,
        stale_after_s: float = 60.0,
        max_jobs: int = 4,
        max_attempts: int = 20,
        progress_interval_s: float = 1.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        """Jobs run on ``pool`` through the actors of the ``sessions`` supervisor. The
        claim of a running job is refreshed every ``poll_s`` and taken over once older
        than ``stale_after_s`` (so ``stale_after_s`` must be well above ``poll_s``)."""
        if not stale_after_s > 2 * poll_s > 0:
            raise ValueError("stale_after_s must be more than twice poll_s")
        if max_jobs < 1 or max_attempts < 1:
            raise ValueError("max_jobs and max_attempts must be at least 1")
        super().__init__("history-jobs", graceful=True)
        self._pool = pool
        self._sessions = sessions
        self._rag = rag
        self._events = events if events is not None else NO_EVENTS
        self.instance = instance or default_instance()
        self._poll_s = poll_s
        self._stale_after_s = stale_after_s
        self._max_jobs = max_jobs
        self._max_attempts = max_attempts
        self._progress_interval_s = progress_interval_s
        self._page_size = page_size
        self._wake = asyncio.Event()
        self._running: dict[int, _Running] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for jobs now (one was just queued)."""
        self._wake.set()

    @property
    def running_jobs(self) -> list[int]:
        """The ids of the jobs running on this instance."""
        return sorted(self._running)

    async def stop(self, timeout: float) -> None:
        """Stop looking for jobs; cancel the running ones and queue them again."""
        self._wake.set()
        await super().stop(timeout)

    async def run(self) -> None:
        """Sweep at start, then every ``poll_s`` seconds or when woken, until stopped."""
        try:
            while not self.stopping.is_set():
                self._wake.clear()
                try:
                    await self.sweep()
                except DB_ERRORS as exc:
                    log.warning("history job sweep failed", extra={"error": repr(exc)})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()
        finally:
            await self._stop_jobs()

    async def _stop_jobs(self) -> None:
        running = list(self._running.values())
        for entry in running:
            entry.task.cancel()
        if running:
            await asyncio.wait([entry.task for entry in running])
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                for entry in running:
                    await store.release(
                        self._pool, entry.job.id, entry.job.attempts, "interrupted: VIBEE stopped"
                    )
        except (*DB_ERRORS, TimeoutError) as exc:
            # left running: its claim grows stale and the next claimant resumes it
            log.warning("could not queue history jobs again", extra={"error": repr(exc)})

    # -- the sweep ---------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Refresh claims, fail orphaned jobs, claim and start new ones. Returns how many
        jobs it started."""
        await self._heartbeat()
        for job in await store.fail_orphaned_all_users(self._pool):
            log.info("history import failed: session logged out", extra={"job_id": job.id})
            self._failed(job)
        actors = self._connected_actors()
        busy = {entry.job.session_id for entry in self._running.values()}
        free = self._max_jobs - len(self._running)
        candidates = [sid for sid in actors if sid not in busy]
        if free < 1 or not candidates:
            return 0
        claimed = await store.claim(
            self._pool,
            candidates,
            self.instance,
            stale_after_s=self._stale_after_s,
            limit=free,
        )
        started = 0
        for job in claimed:
            if job.attempts > self._max_attempts:
                gave_up = await store.fail(
                    self._pool,
                    job.id,
                    job.attempts,
                    f"gave up after {self._max_attempts} attempts",
                )
                if gave_up is not None:
                    self._failed(gave_up)
                continue
            self._start(job, actors[job.session_id])
            started += 1
        return started

    async def _heartbeat(self) -> None:
        if not self._running:
            return
        held = [(e.job.id, e.job.attempts) for e in self._running.values()]
        kept = await store.heartbeat(self._pool, held)
        for job_id, _ in held:
            entry = self._running.get(job_id)
            if job_id not in kept and entry is not None:
                log.warning("history job claim lost: stopping it", extra={"job_id": job_id})
                entry.task.cancel()

    def _connected_actors(self) -> dict[int, SessionActor]:
        tree = self._sessions()
        if tree is None:
            return {}
        found: dict[int, SessionActor] = {}
        for name in tree.names():
            if not name.startswith("session:"):
                continue
            child = tree.get(name)
            if isinstance(child, SessionActor) and child.connected.is_set():
                found[child.session_id] = child
        return found

    def _start(self, job: HistoryJob, actor: SessionActor) -> None:
        task = asyncio.create_task(self._run_job(job, actor), name=f"history-job:{job.id}")
        self._running[job.id] = _Running(job, task)
        task.add_done_callback(lambda done: self._ended(job.id, done))

    def _ended(self, job_id: int, task: asyncio.Task[None]) -> None:
        entry = self._running.get(job_id)
        if entry is not None and entry.task is task:
            del self._running[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "history job task crashed", exc_info=task.exception(), extra={"job_id": job_id}
            )

    # -- one job -----------------------------------------------------------------------------

    async def _run_job(self, job: HistoryJob, actor: SessionActor) -> None:
        with bind(session_id=job.session_id, user_id=job.user_id, job_id=job.id):
            log.info("history import started", extra={"attempt": job.attempts})
            try:
                await self._import(job, actor)
                return
            except ClaimLost:
                log.warning("history job claim lost: another claimant has it")
                return
            except GatewayError as exc:
                retry, error = exc.retryable, exc.message
            except DB_ERRORS as exc:
                log.warning(
                    "history import interrupted by the database; it will be resumed",
                    extra={"error": repr(exc)},
                )
                return
            except Exception as exc:
                log.exception("history import failed unexpectedly")
                retry, error = False, f"internal error ({type(exc).__name__})"
            try:
                if retry:
                    await self._release(job, f"interrupted: {error}")
                else:
                    await self._fail(job, error)
            except DB_ERRORS as exc:  # left running: its claim grows stale, then resumed
                log.warning("cannot record the history job's end", extra={"error": repr(exc)})

    async def _import(self, job: HistoryJob, actor: SessionActor) -> None:
        base = job.messages_stored
        loop = asyncio.get_running_loop()
        last = -float("inf")

        async def report(done: int, total: int, messages: int) -> None:
            nonlocal last
            now = loop.time()
            if 0 < done < total and now - last < self._progress_interval_s:
                return
            last = now
            stored = base + messages
            if not await store.progress(self._pool, job.id, job.attempts, done, total, stored):
                raise ClaimLost
            self._progress(job, "running", done, total, stored)

        importer = HistoryImport(
            self._pool, live_gateway(actor), job.user_id, job.session_id, page_size=self._page_size
        )
        result = await importer.run(limit=job.message_limit, progress=report)
        indexed = await self._index(job.user_id)
        done = await store.finish(
            self._pool, job.id, job.attempts, result.chats, base + result.messages, indexed
        )
        if done is None:
            raise ClaimLost
        log.info(
            "history import done",
            extra={"chats": result.chats, "messages": done.messages_stored, "indexed": indexed},
        )
        self._events.publish(
            job.user_id,
            event(
                "history.done",
                job_id=job.id,
                session_id=job.session_id,
                chats=result.chats,
                messages=done.messages_stored,
                indexed=indexed,
            ),
        )

    async def _index(self, user_id: int) -> int:
        """Embed the owner's imported messages; an embeddings failure is logged (the
        pipeline's periodic indexing catches up)."""
        rag = self._rag()
        if rag is None:
            return 0
        try:
            return await rag.index_pending(user_id)
        except (ProviderError, TimeoutError) as exc:
            log.warning("history import: embedding failed", extra={"error": repr(exc)})
            return 0

    async def _fail(self, job: HistoryJob, error: str) -> None:
        failed = await store.fail(self._pool, job.id, job.attempts, error)
        if failed is not None:
            log.warning("history import failed", extra={"error": error})
            self._failed(failed)

    async def _release(self, job: HistoryJob, reason: str) -> None:
        if await store.release(self._pool, job.id, job.attempts, reason):
            log.info("history import paused: queued again", extra={"reason": reason})
            current = await store.get(self._pool, job.user_id, job.id)
            if current is not None:
                self._progress(
                    current, "queued", current.chats_done, current.chats_total,
                    current.messages_stored,
                )  # fmt: skip

    # -- events ------------------------------------------------------------------------------

    def _progress(self, job: HistoryJob, state: str, done: int, total: int, messages: int) -> None:
        self._events.publish(
            job.user_id,
            event(
                "history.progress",
                job_id=job.id,
                session_id=job.session_id,
                state=state,
                chats_done=done,
                chats_total=total,
                messages=messages,
            ),
        )

    def _failed(self, job: HistoryJob) -> None:
        self._events.publish(
            job.user_id,
            event("history.failed", job_id=job.id, session_id=job.session_id, error=job.error),
        )
