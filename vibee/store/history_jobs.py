"""History import jobs (``history_imports``): requested by a user, run by the daemon.

A job is ``queued`` when requested, ``running`` once an instance claimed it, then ``done``
or ``failed``. At most one job per session is queued or running (a unique partial index),
so a second request returns the active job instead of making another. The claim sets
``claimed_by``/``claimed_at`` and increments ``attempts``; every later write of the
claimant names that attempt and matches nothing once the job was claimed again (after its
claimant went silent for ``stale_after_s``), was deleted with its session, or ended: the
attempt number is a fencing token. Time comes from Postgres's clock, the one clock every
instance shares.

The functions that serve a user take ``user_id`` and filter by it; the daemon's functions
(claim, progress, finish…) act on jobs of every user and say so in their docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

import asyncpg

from vibee.store import Executor
from vibee.store.sessions import RUNNABLE, SessionNotFound

STATES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
ENDED_SESSION = ("logged_out", "bad_credentials")
"""Session states in which a queued job can never run."""
MAX_ERROR_CHARS = 500


class SessionNotRunnable(Exception):
    """The session is not logged in (or was logged out): no import can run on it."""


@dataclass(frozen=True, slots=True)
class HistoryJob:
    """One history import job as stored."""

    id: int
    user_id: int
    session_id: int
    state: str
    message_limit: int | None
    chats_done: int
    chats_total: int
    messages_stored: int
    indexed: int
    attempts: int
    error: str | None
    claimed_by: str | None
    claimed_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None


_FIELDS = tuple(f.name for f in fields(HistoryJob))


def _job(record: asyncpg.Record) -> HistoryJob:
    """The job of a ``history_imports`` row (read as ``*``: columns added later are
    ignored)."""
    return HistoryJob(**{name: record[name] for name in _FIELDS})


def _error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


async def request(
    db: Executor, user_id: int, session_id: int, limit: int | None
) -> tuple[HistoryJob, bool]:
    """The session's queued or running job, or a new queued one: (job, created).

    Raises SessionNotFound (also for another user's session) and SessionNotRunnable when
    the session is not logged in. ``limit`` (messages per chat) only applies to a new job.
    """
    state = await db.fetchval(
        "SELECT CASE WHEN credential IS NULL THEN 'no_credential' ELSE state END "
        "FROM telegram_sessions WHERE id = $1 AND user_id = $2",
        session_id,
        user_id,
    )
    if state is None:
        raise SessionNotFound(f"no session {session_id}")
    if state not in RUNNABLE:
        raise SessionNotRunnable(
            f"session {session_id} is not logged in ({state}): connect it first"
        )
    for _ in range(5):  # an active job may end between the two statements: look again
        created = await db.fetchrow(
            "INSERT INTO history_imports (user_id, session_id, message_limit) "
            "SELECT user_id, id, $3 FROM telegram_sessions WHERE id = $1 AND user_id = $2 "
            "ON CONFLICT (session_id) WHERE state IN ('queued', 'running') DO NOTHING "
            "RETURNING *",
            session_id,
            user_id,
            limit,
        )
        if created is not None:
            return _job(created), True
        active = await db.fetchrow(
            "SELECT * FROM history_imports WHERE session_id = $1 AND user_id = $2 "
            "AND state IN ('queued', 'running')",
            session_id,
            user_id,
        )
        if active is not None:
            return _job(active), False
        if not await db.fetchval(
            "SELECT true FROM telegram_sessions WHERE id = $1 AND user_id = $2",
            session_id,
            user_id,
        ):
            raise SessionNotFound(f"no session {session_id}")  # deleted meanwhile
    raise RuntimeError(f"history import of session {session_id}: no stable job")


async def latest(db: Executor, user_id: int, session_id: int) -> HistoryJob | None:
    """The user's newest job for the session (None: none, or not the user's session)."""
    record = await db.fetchrow(
        "SELECT * FROM history_imports WHERE session_id = $1 AND user_id = $2 "
        "ORDER BY id DESC LIMIT 1",
        session_id,
        user_id,
    )
    return None if record is None else _job(record)


async def get(db: Executor, user_id: int, job_id: int) -> HistoryJob | None:
    """One of the user's jobs (None: no such job for this user)."""
    record = await db.fetchrow(
        "SELECT * FROM history_imports WHERE id = $1 AND user_id = $2",
        job_id,
        user_id,
    )
    return None if record is None else _job(record)


async def claim(
    db: Executor,
    session_ids: Sequence[int],
    instance: str,
    *,
    stale_after_s: float,
    limit: int,
) -> list[HistoryJob]:
    """Claim up to ``limit`` jobs of ``session_ids`` (all users: the daemon's sessions)
    that are queued, or running with a claim older than ``stale_after_s`` (their instance
    died). Atomic across instances: a job locked by another claim is skipped."""
    if not session_ids or limit < 1:
        return []
    rows = await db.fetch(
        "UPDATE history_imports SET state = 'running', claimed_by = $2, claimed_at = now(), "
        "attempts = attempts + 1, error = NULL, started_at = coalesce(started_at, now()), "
        "updated_at = now() "
        "WHERE id IN (SELECT id FROM history_imports WHERE session_id = ANY($1::bigint[]) "
        "AND (state = 'queued' OR (state = 'running' "
        "AND claimed_at < now() - make_interval(secs => $3))) "
        "ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) "
        "RETURNING *",
        list(session_ids),
        instance,
        float(stale_after_s),
        limit,
    )
    return sorted((_job(r) for r in rows), key=lambda j: j.id)


async def progress(
    db: Executor,
    job_id: int,
    attempt: int,
    chats_done: int,
    chats_total: int,
    messages_stored: int,
) -> bool:
    """Record a running job's progress and refresh its claim (all users: its claimant).
    False when ``attempt`` no longer holds the job."""
    found = await db.fetchval(
        "UPDATE history_imports SET chats_done = $3, chats_total = $4, messages_stored = $5, "
        "claimed_at = now(), updated_at = now() "
        "WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING true",
        job_id,
        attempt,
        chats_done,
        chats_total,
        messages_stored,
    )
    return bool(found)


async def heartbeat(db: Executor, held: Sequence[tuple[int, int]]) -> set[int]:
    """Refresh the claims of running jobs ``(id, attempt)`` (all users: their claimant).
    Returns the ids still held; the others were lost (claimed again, deleted, ended)."""
    if not held:
        return set()
    rows = await db.fetch(
        "UPDATE history_imports AS h SET claimed_at = now() "
        "FROM unnest($1::bigint[], $2::int[]) AS v(id, attempt) "
        "WHERE h.id = v.id AND h.attempts = v.attempt AND h.state = 'running' RETURNING h.id",
        [job_id for job_id, _ in held],
        [attempt for _, attempt in held],
    )
    return {r["id"] for r in rows}


async def finish(
    db: Executor,
    job_id: int,
    attempt: int,
    chats_total: int,
    messages_stored: int,
    indexed: int,
) -> HistoryJob | None:
    """Mark a running job done (all users: its claimant); None when ``attempt`` lost it."""
    record = await db.fetchrow(
        "UPDATE history_imports SET state = 'done', chats_done = $3, chats_total = $3, "
        "messages_stored = $4, indexed = $5, error = NULL, finished_at = now(), "
        "updated_at = now() "
        "WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING *",
        job_id,
        attempt,
        chats_total,
        messages_stored,
        indexed,
    )
    return None if record is None else _job(record)


async def fail(db: Executor, job_id: int, attempt: int, error: str) -> HistoryJob | None:
    """Mark a running job failed with ``error`` (all users: its claimant); None when
    ``attempt`` lost it."""
    record = await db.fetchrow(
        "UPDATE history_imports SET state = 'failed', error = $3, finished_at = now(), "
        "updated_at = now() "
        "WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING *",
        job_id,
        attempt,
        _error(error),
    )
    return None if record is None else _job(record)


async def release(db: Executor, job_id: int, attempt: int, reason: str) -> bool:
    """Put a running job back in the queue, its progress kept (all users: its claimant
    lost the connection or stops); False when ``attempt`` lost it."""
    found = await db.fetchval(
        "UPDATE history_imports SET state = 'queued', error = $3, claimed_by = NULL, "
        "claimed_at = NULL, updated_at = now() "
        "WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING true",
        job_id,
        attempt,
        _error(reason),
    )
    return bool(found)


async def fail_orphaned_all_users(db: Executor) -> list[HistoryJob]:
    """Fail the queued jobs whose session was logged out (all users: the daemon's sweep):
    they could never run. Returns them."""
    rows = await db.fetch(
        "UPDATE history_imports AS h SET state = 'failed', "
        "error = 'the session is logged out: log in again, then import again', "
        "finished_at = now(), updated_at = now() "
        "FROM telegram_sessions AS s "
        "WHERE h.session_id = s.id AND h.state = 'queued' AND s.state = ANY($1::text[]) "
        "RETURNING h.*",
        list(ENDED_SESSION),
    )
    return [_job(r) for r in rows]
