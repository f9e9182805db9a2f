"""The sim's WebSocket wire format, shared by the server and the client (``docs/sim.md``).

Every WebSocket message holds one JSON value (UTF-8, usually in a binary frame): an object
or an array of objects (a batch). Both sides batch whatever is waiting into one message
of at most :data:`MAX_FRAME` bytes. :class:`Outbox` does that for one WebSocket: callers
``put`` encoded objects without awaiting, and its writer task sends them in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

log = logging.getLogger("vibee.sim")

WS_PATH = "/ws"
MAX_FRAME = 1 << 20
"""A writer starts a new WebSocket message once a batch reaches this many bytes."""
MAX_MESSAGE = 64 << 20
"""The largest WebSocket message either side accepts (``max_msg_size``)."""
DEFAULT_WINDOW = 256
"""Updates the sim may send a logical connection before the client grants more credit."""
MAX_WINDOW = 65536

DISCONNECTED = "DISCONNECTED"
"""The ``x`` code for a logical connection the sim dropped (a fault): reconnect and resume."""


class OutboxFull(Exception):
    """More items are waiting for the WebSocket than the outbox allows."""


def dumps(obj: Any) -> bytes:
    """``orjson.dumps`` copied into an exact-size ``bytes``: orjson's own results each keep
    a ~4 KiB buffer, too much for an update log or a burst of queued requests."""
    return bytes(memoryview(orjson.dumps(obj)))


def decode(data: bytes | str) -> list[dict[str, Any]]:
    """The objects in one WebSocket message (a single object or a batch)."""
    value = orjson.loads(data)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise ValueError("a sim frame is a JSON object or an array of objects")


class Outbox:
    """Encoded objects waiting for one WebSocket, sent in order in batches by :meth:`run`.

    ``high`` is the backlog above which :attr:`congested` is true (producers that can wait,
    such as update pumps, should stop); ``limit`` is the hard bound: :meth:`put` raises
    :class:`OutboxFull` beyond it. ``on_drained`` is called after a batch went out while
    the backlog is back below ``high``.
    """

    __slots__ = ("_items", "_send", "_wake", "high", "limit", "on_drained")

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        *,
        high: int = 4096,
        limit: int = 262_144,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self._items: deque[bytes] = deque()
        self._send = send
        self._wake = asyncio.Event()
        self.high = high
        self.limit = limit
        self.on_drained = on_drained

    def __len__(self) -> int:
        """Items waiting."""
        return len(self._items)

    @property
    def congested(self) -> bool:
        """Whether the backlog is above ``high``."""
        return len(self._items) >= self.high

    def put(self, item: bytes) -> None:
        """Queue one encoded object (never waits); raises OutboxFull past ``limit``."""
        if len(self._items) >= self.limit:
            raise OutboxFull(f"{len(self._items)} items waiting")
        self._items.append(item)
        self._wake.set()

    def put_obj(self, obj: Any) -> None:
        """Encode ``obj`` (:func:`dumps`) and queue it."""
        self.put(dumps(obj))

    def _take_frame(self) -> bytes:
        items = self._items
        batch: list[bytes] = []
        size = 0
        while items and size < MAX_FRAME:
            item = items.popleft()
            batch.append(item)
            size += len(item) + 1
        return batch[0] if len(batch) == 1 else b"[" + b",".join(batch) + b"]"

    async def run(self) -> None:
        """Send forever (until cancelled or the WebSocket fails: then it raises)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                await self._send(self._take_frame())
                if self.on_drained is not None and len(self._items) < self.high:
                    self.on_drained()


def log_task_failure(task: asyncio.Task[Any]) -> None:
    """A done-callback for tasks whose owner does not await them: log how they failed."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task %s failed", task.get_name(), exc_info=exc)
