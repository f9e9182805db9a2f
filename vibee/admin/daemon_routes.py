"""The daemon's admin routes (behind the admin token): its session actors and the
dead-letter queue.

``GET /admin/sessions``                  the session actors running on this instance
``GET /admin/dlq``                       dead letters of every user
``POST /admin/dlq/{id}/replay|drop``     back to the outbox, or forgotten
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from vibee.admin.server import json_response, problem
from vibee.runtime import Supervisor
from vibee.store import ID_MAX, automation
from vibee.telegram.session_actor import SessionActor


def daemon_routes(
    sessions: Callable[[], Supervisor | None],
    pool: Callable[[], asyncpg.Pool],
    replayed: Callable[[], Awaitable[None]],
) -> list[web.RouteDef]:
    """The routes; ``replayed`` is awaited after a dead letter went back to the outbox."""

    async def list_sessions(_: web.Request) -> web.Response:
        tree = sessions()
        children = [tree.get(name) for name in tree.names()] if tree is not None else []
        return json_response(
            {
                "sessions": [
                    {"session_id": c.session_id, "user_id": c.user_id, "state": c.state}
                    for c in children
                    if isinstance(c, SessionActor)
                ]
            }
        )

    async def list_dead_letters(_: web.Request) -> web.Response:
        letters = await automation.dead_letters_all_users(pool())
        return json_response(
            {
                "dead_letters": [
                    {
                        "id": d.id,
                        "user_id": d.user_id,
                        "session_id": d.session_id,
                        "error": d.error,
                        "attempts": d.attempts,
                        "created_at": d.created_at.isoformat(),
                    }
                    for d in letters
                ]
            }
        )

    async def act_on_dead_letter(request: web.Request) -> web.Response:
        try:
            letter_id = int(request.match_info["id"])
        except ValueError:
            return problem(400, "Bad dead letter id", "the id is an integer")
        if not 1 <= letter_id <= ID_MAX:
            return problem(404, "No such dead letter", f"no dead letter {letter_id}")
        replay = request.match_info["action"] == "replay"
        act = automation.replay_dead_letter if replay else automation.drop_dead_letter
        if not await act(pool(), letter_id):
            return problem(404, "No such dead letter", f"no dead letter {letter_id}")
        if replay:
            await replayed()
        return json_response({"id": letter_id, "done": request.match_info["action"]})

    return [
        web.get("/admin/sessions", list_sessions),
        web.get("/admin/dlq", list_dead_letters),
        web.post(r"/admin/dlq/{id}/{action:replay|drop}", act_on_dead_letter),
    ]
