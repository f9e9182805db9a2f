"""What the API tells the instances after it changed something in Postgres.

The change itself is already durable when a notice goes out; the notice only makes the
instance concerned act now rather than at its next sweep (a few seconds), so a lost
notice (Redis down) delays, never loses. Locally the bus loops back to this process.
(Changed chat configs and personas are announced by Postgres itself, ``NOTIFY`` from the
store: see :mod:`vibee.automation.notices`.)
"""

from __future__ import annotations

from typing import Protocol

from vibee.coord.base import CoordinationUnavailable
from vibee.coord.coordinator import Coordinator


class Notices(Protocol):
    """The notices the API sends (see the module docstring)."""

    async def chat_has_work(self, session_id: int, tg_chat_id: int) -> None:
        """A message was queued in the chat's outbox: the session's owner sends it."""
        ...

    async def sessions_changed(self) -> None:
        """A session was added, authorized or deleted: every instance sweeps."""
        ...


class NoNotices:
    """Nobody to tell (an API app without the daemon around it, in tests)."""

    async def chat_has_work(self, session_id: int, tg_chat_id: int) -> None:
        """Nothing."""

    async def sessions_changed(self) -> None:
        """Nothing."""


class BusNotices:
    """Notices over the coordinator's bus: to the owner, or to everyone."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coord = coordinator

    async def chat_has_work(self, session_id: int, tg_chat_id: int) -> None:
        """Tell the instance holding the session's lease (none holds it: nobody to tell)."""
        try:
            owner = await self._coord.leases.holder(session_id)
        except CoordinationUnavailable:
            return  # the owner's sweep finds the message
        if owner is not None:
            await self._coord.bus.send(owner, {"t": "chat", "s": session_id, "c": tg_chat_id})

    async def sessions_changed(self) -> None:
        """Tell everyone."""
        await self._coord.bus.send(None, {"t": "sessions"})
