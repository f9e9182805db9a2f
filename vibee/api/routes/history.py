"""Importing a session's past messages over HTTP.

``POST /api/v1/sessions/{id}/history/import``  {limit?} → 202 the import job
``GET  /api/v1/sessions/{id}/history/import``  → the newest import job and its progress

A POST queues a job in Postgres (``history_imports``) and wakes this instance's
``history-jobs`` child; the job runs on whichever instance runs the session's actor,
through that actor's connection (Telegram allows one per account). While a job is queued
or running, a POST answers that job again instead of starting another, so repeating it is
harmless. Progress arrives on ``GET /api/v1/events`` as ``history.progress``, then
``history.done`` or ``history.failed``. Another user's session is a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from vibee.api.errors import Conflict, NotFound
from vibee.api.ratelimit import Limit
from vibee.api.routes.params import Params, id_param, path_id
from vibee.api.routing import Call, Handler, Route, json_response
from vibee.api.schemas_history import HistoryImportOut, HistoryImportRequest, JobState
from vibee.store import history_jobs
from vibee.store.sessions import SessionNotFound

IMPORT_PATH = "/api/v1/sessions/{id}/history/import"
Wake = Callable[[], Awaitable[None]]
"""Tells the history-jobs children (this instance's, and the others' through the
coordinator's bus) to look for jobs now. It must not raise: the children's poll finds the
job anyway."""


async def no_wake() -> None:
    """The default :data:`Wake`: the children find the job at their next poll."""


def _out(job: history_jobs.HistoryJob) -> HistoryImportOut:
    return HistoryImportOut(
        id=job.id,
        session_id=job.session_id,
        state=cast(JobState, job.state),  # pydantic checks it
        limit=job.message_limit,
        chats_done=job.chats_done,
        chats_total=job.chats_total,
        messages_stored=job.messages_stored,
        indexed=job.indexed,
        attempts=job.attempts,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def handlers(wake: Wake) -> tuple[Handler, Handler]:
    """The start and status handlers, bound to ``wake``."""

    async def start(call: Call) -> web.Response:
        """Queue a history import (or answer the one queued or running)."""
        session_id = path_id(call, "session")
        body = call.body_as(HistoryImportRequest)
        try:
            job, created = await history_jobs.request(
                call.ctx.pool(), call.user.id, session_id, body.limit
            )
        except SessionNotFound:
            raise NotFound(f"no session {session_id}") from None
        except history_jobs.SessionNotRunnable as exc:
            raise Conflict(
                str(exc), title="Session not logged in", slug="session-not-logged-in"
            ) from None
        if created:
            await wake()
        return json_response(_out(job), 202)

    async def status(call: Call) -> web.Response:
        """The newest history import of the session."""
        session_id = path_id(call, "session")
        job = await history_jobs.latest(call.ctx.pool(), call.user.id, session_id)
        if job is None:
            raise NotFound(f"no history import for session {session_id}")
        return json_response(_out(job))

    return start, status


_SESSION_ID = id_param("The session's id.")
PARAMS: Params = {
    ("POST", IMPORT_PATH): [_SESSION_ID],
    ("GET", IMPORT_PATH): [_SESSION_ID],
}


def routes(wake: Wake = no_wake) -> list[Route]:
    """The history import routes; ``wake`` is called when a job was queued."""
    start, status = handlers(wake)
    tag = "sessions"
    api = (Limit.API,)
    return [
        Route(
            "POST",
            IMPORT_PATH,
            start,
            "start_history_import",
            "Import the account's past messages (every chat but broadcast channels; with "
            "`limit`, at most that many messages per chat). Answers 202 with the job; while "
            "one is queued or running, answers that one. Progress arrives on "
            "`GET /api/v1/events` as `history.progress`, then `history.done` or "
            "`history.failed`. Resumable: a stopped job resumes without storing a message "
            "twice. The body may be left out.",
            tag,
            ok=202,
            response=HistoryImportOut,
            body=HistoryImportRequest,
            body_required=False,
            limits=api,
            errors=(404, 409),
        ),
        Route(
            "GET",
            IMPORT_PATH,
            status,
            "get_history_import",
            "The session's newest history import: its state and progress.",
            tag,
            response=HistoryImportOut,
            limits=api,
            errors=(404,),
        ),
    ]
