"""Which chat a pipeline worker takes next: each chat at most once at a time, when due.

A chat is *due* at a time (now, after its reply delay, after a failure); the scheduler's
task moves due chats to a bounded queue the workers take from (it waits while every
worker is busy), or a chat due now goes straight there when it has room. A chat being
processed is *busy*: work that arrives for it meanwhile is remembered and the chat is due
again as soon as its turn ends — at once for new work, after :data:`RETRY_S` when the turn
failed. So at most one worker handles a chat, and replies in a chat keep their order.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterable

ChatKey = tuple[int, int]
"""(session id, Telegram chat id)."""

RETRY_S = 1.0
"""A chat whose turn failed is due again after this long."""


class Scheduler:
    """Due times of chats and the queue of chats to process (``ready_size`` long)."""

    def __init__(self, ready_size: int) -> None:
        self._heap: list[tuple[float, ChatKey]] = []
        self._due: dict[ChatKey, float] = {}
        self._busy: set[ChatKey] = set()
        self._again: set[ChatKey] = set()
        self._retry: set[ChatKey] = set()
        self._ready: asyncio.Queue[ChatKey] = asyncio.Queue(maxsize=ready_size)
        self._wake = asyncio.Event()

    def pinned(self, key: ChatKey) -> bool:
        """Whether the chat is being processed or waits for its time."""
        return key in self._busy or key in self._due

    def schedule(self, keys: Iterable[ChatKey], delay_s: float = 0.0) -> None:
        """These chats are due in ``delay_s`` (or sooner, if they already were)."""
        at = time.monotonic() + delay_s
        for key in keys:
            if key in self._busy:
                self._again.add(key)
                continue
            if delay_s <= 0 and key not in self._due and not self._ready.full():
                self._busy.add(key)  # due now and the workers' queue has room: no detour
                self._ready.put_nowait(key)
                continue
            known = self._due.get(key)
            if known is None or at < known:
                self._due[key] = at
                heapq.heappush(self._heap, (at, key))
        self._wake.set()

    def later(self, key: ChatKey, delay_s: float) -> None:
        """The chat being processed is due again in ``delay_s`` (its reply waits), and is
        not busy any more: new work may bring it forward."""
        self._again.discard(key)
        self._busy.discard(key)
        self.schedule([key], delay_s)

    def failed(self, key: ChatKey) -> None:
        """The chat's turn failed: due again after :data:`RETRY_S` once it ends."""
        self._retry.add(key)

    async def take(self) -> ChatKey:
        """The next chat to process (busy until :meth:`done`)."""
        return await self._ready.get()

    def done(self, key: ChatKey) -> None:
        """The chat's turn ended."""
        self._busy.discard(key)
        if key in self._retry:
            self._retry.discard(key)
            self._again.discard(key)
            self.schedule([key], RETRY_S)
        elif key in self._again:  # new work arrived during the turn
            self._again.discard(key)
            self.schedule([key], 0.0)

    async def run(self) -> None:
        """Move chats to the workers' queue as they come due, until cancelled."""
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                at, key = heapq.heappop(self._heap)
                if self._due.get(key) != at:
                    continue  # superseded by an earlier time
                del self._due[key]
                self._busy.add(key)
                await self._ready.put(key)  # bounded: waits while every worker is busy
            self._wake.clear()
            timeout = self._heap[0][0] - time.monotonic() if self._heap else None
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
