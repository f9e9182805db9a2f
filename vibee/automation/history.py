"""History import for one session: old messages of each dialog into ``messages``.

Pages through :meth:`Gateway.history` newest first and stores each page in one
transaction (:func:`vibee.store.embeddings.store_history`): idempotent (a message stored
twice is a no-op), the owner's own messages as ``out``/``sent``, everyone else's as
``in``/``done`` so the pipeline never answers history. Resumable without any bookkeeping
table: a chat's import continues below the oldest message already imported into it (newer
messages arrive through live updates). Broadcast channels are skipped unless asked for by
id; a FloodWait is waited out (up to ``MAX_FLOOD_WAIT_S``). Afterwards the owner's messages
can be embedded (``rag.index_pending``).

``vibee history import`` runs it on a connection of its own (the session must not be
running); the API's import call runs it as a job through the live session actor's
gateway (:mod:`vibee.automation.history_jobs`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from vibee.automation.rag import Rag
from vibee.store import Executor
from vibee.store import embeddings as store
from vibee.store.inbox import FLAG_CHANNEL, FLAG_GROUP, FLAG_OUTGOING, InboxRow
from vibee.telegram.gateway import ChatType, Dialog, FloodWait, Gateway, Message

log = logging.getLogger("vibee.automation.history")

PAGE_SIZE = 100
DIALOG_PAGE = 100
FLOOD_RETRIES = 5
MAX_FLOOD_WAIT_S = 300.0

Progress = Callable[[int, int, int], Awaitable[None] | None]
"""``(chats_done, chats_total, messages_stored)``, called after each chat (and at 0)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one import did."""

    chats: int
    messages: int
    indexed: int


async def all_dialogs(gateway: Gateway) -> list[Dialog]:
    """Every dialog of the account, most recently active first."""
    found: list[Dialog] = []
    while True:
        page = await gateway.dialogs(limit=DIALOG_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < DIALOG_PAGE:
            return found


def to_row(user_id: int, session_id: int, dialog: Dialog, m: Message) -> InboxRow:
    """The row stored for one message of a chat's history (seq 0: never moves last_seq)."""
    kind = (FLAG_GROUP if dialog.chat_type is ChatType.GROUP else 0) | (
        FLAG_CHANNEL if dialog.chat_type is ChatType.CHANNEL else 0
    )
    return InboxRow(
        user_id=user_id,
        session_id=session_id,
        tg_chat_id=dialog.chat_id,
        chat_kind=str(dialog.chat_type),
        message_id=m.message_id,
        direction="out" if m.outgoing else "in",
        sender_id=m.sender_id,
        text=m.text,
        reply_to_msg_id=m.reply_to_msg_id,
        seq=0,
        flags=store.FLAG_IMPORTED | kind | (FLAG_OUTGOING if m.outgoing else 0),
        tg_date=m.date,
    )


class HistoryImport:
    """Imports one session's history through its (connected) gateway.

    ``conn`` is a connection (the CLI) or a pool (the daemon's import jobs: a connection
    is borrowed per page, never held while Telegram is asked or a FloodWait waited out).
    """

    def __init__(
        self,
        conn: Executor,
        gateway: Gateway,
        user_id: int,
        session_id: int,
        *,
        rag: Rag | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.conn = conn
        self.gateway = gateway
        self.user_id = user_id
        self.session_id = session_id
        self.rag = rag
        self.page_size = page_size

    async def run(
        self,
        *,
        chat_ids: Sequence[int] | None = None,
        limit: int | None = None,
        progress: Progress | None = None,
    ) -> ImportResult:
        """Import every dialog but broadcast channels (or exactly ``chat_ids``), at most
        ``limit`` messages per chat counting those imported before, then embed the owner's
        messages if RAG is on. Gateway errors other than FloodWait propagate: run again to
        resume."""
        dialogs = await all_dialogs(self.gateway)
        if chat_ids is not None:
            wanted = set(chat_ids)
            dialogs = [d for d in dialogs if d.chat_id in wanted]
        else:
            dialogs = [d for d in dialogs if d.chat_type is not ChatType.CHANNEL]
        stored = 0
        await _report(progress, 0, len(dialogs), 0)
        for done, dialog in enumerate(dialogs, 1):
            stored += await self.import_chat(dialog, limit)
            await _report(progress, done, len(dialogs), stored)
        indexed = await self.rag.index_pending(self.user_id) if self.rag is not None else 0
        return ImportResult(len(dialogs), stored, indexed)

    async def import_chat(self, dialog: Dialog, limit: int | None = None) -> int:
        """One chat, resuming below its oldest imported message. Returns the rows stored."""
        before_id, count = await store.imported_extent(self.conn, self.session_id, dialog.chat_id)
        stored = 0
        while limit is None or count < limit:
            size = self.page_size if limit is None else min(self.page_size, limit - count)
            page = await self._page(dialog.chat_id, size, before_id)
            if not page:
                break
            rows = [to_row(self.user_id, self.session_id, dialog, m) for m in page]
            stored += await self._store(rows)
            count += len(page)
            before_id = min(m.message_id for m in page)
            if len(page) < size:
                break
        log.info("history: chat %s: %d new messages", dialog.chat_id, stored)
        return stored

    async def _store(self, rows: list[InboxRow]) -> int:
        if isinstance(self.conn, asyncpg.Pool):
            async with self.conn.acquire() as conn:
                return await store.store_history(conn, rows)
        return await store.store_history(self.conn, rows)

    async def _page(self, chat_id: int, size: int, before_id: int | None) -> list[Message]:
        waits = 0
        while True:
            try:
                return await self.gateway.history(chat_id, limit=size, before_id=before_id)
            except FloodWait as exc:
                waits += 1
                if waits > FLOOD_RETRIES or exc.seconds > MAX_FLOOD_WAIT_S:
                    raise
                log.info("history: chat %s: flood wait %d s", chat_id, exc.seconds)
                await asyncio.sleep(exc.seconds)


async def _report(progress: Progress | None, done: int, total: int, messages: int) -> None:
    if progress is None:
        return
    result = progress(done, total, messages)
    if result is not None:
        await result
