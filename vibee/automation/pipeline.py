"""The pipeline: stored messages → policy → context → AI → outbox → the session's send.

Postgres is the source of truth and the unit of work is a chat: a worker takes a chat,
loads its unanswered messages and unsent replies, and finishes what it can. Ingest tells
the pipeline which chats got new messages; a sweep (and recovery at start) finds every
chat with unfinished work, so nothing depends on memory surviving a crash.

Delivery guarantee, stated plainly: every message is decided at least once; a reply is
written to the outbox with a ``random_id`` derived from the message it answers **before**
it is sent, and Telegram refuses a reused ``random_id``, so a resend after a crash cannot
produce a second reply. At most one worker handles a chat at a time, so replies in a chat
keep their order; several messages arriving within the reply delay are answered once,
together. ``workers.worker_count`` workers bound the concurrent AI calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from vibee.ai.base import ChatRequest, Completion, ProviderError
from vibee.ai.router import Router
from vibee.automation.context import build_request
from vibee.automation.events import NO_EVENTS, EventSink, event
from vibee.automation.policy import (
    ChatPolicy,
    ChatType,
    Decision,
    Facts,
    PolicyError,
    decide,
)
from vibee.automation.rag import Rag
from vibee.runtime import Service, Supervisor
from vibee.store import DB_ERRORS, automation, embeddings, outbox
from vibee.store.inbox import FLAG_BOT, FLAG_CHANNEL, FLAG_GROUP, FLAG_OUTGOING
from vibee.telegram.gateway import GatewayError
from vibee.telegram.session_actor import SessionActor

log = logging.getLogger("vibee.automation.pipeline")

ChatKey = tuple[int, int]
"""(session id, Telegram chat id)."""

REPLIES = Counter("vibee_replies", "Replies written to the outbox, by chat mode.", ["mode"])
SENT = Counter("vibee_messages_sent", "Replies handed to Telegram and confirmed.")
LATENCY = Histogram(
    "vibee_pipeline_latency_seconds",
    "Inbound stored → reply handed to Telegram, AI time and the deliberate reply delay excluded.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DEAD_LETTERS = Gauge("vibee_dead_letters", "Dead letters waiting for an operator.")
MAX_TEXT = 4096
CONFIG_TTL_S = 5.0
MAX_CACHED_CONFIGS = 100_000


def random_id_for(session_id: int, inbound_row_id: int) -> int:
    """The reply's ``random_id``: the same for the same message, on every instance."""
    digest = hashlib.sha256(f"vibee-reply:{session_id}:{inbound_row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True) or 1


def facts_of(
    row: outbox.InboundRow,
    actor: SessionActor | None,
    ours: set[int] | frozenset[int] = frozenset(),
) -> Facts:
    """What the policy needs to know about one stored message (``ours``: ids of the
    account's own messages in the chat that messages reply to)."""
    kind: ChatType = "private"
    if row.flags & FLAG_CHANNEL:
        kind = "channel"
    elif row.flags & FLAG_GROUP:
        kind = "group"
    return Facts(
        text=row.text,
        date=row.tg_date,
        outgoing=bool(row.flags & FLAG_OUTGOING),
        from_bot=bool(row.flags & FLAG_BOT),
        chat_type=kind,
        mentions=_mentions(row.text),
        reply_to_us=row.reply_to_msg_id is not None and row.reply_to_msg_id in ours,
        reply_to_other=row.reply_to_msg_id is not None and row.reply_to_msg_id not in ours,
        our_username=actor.username if actor is not None else None,
        connected_at=actor.connected_at if actor is not None else None,
        stored_before=actor is not None
        and actor.connected_at is not None
        and row.created_at < actor.connected_at,
    )


def lead_card(row: outbox.InboundRow, trigger: str) -> str:
    """The note the owner gets about a lead: who, where, what, which trigger."""
    quoted = row.text if len(row.text) <= 500 else row.text[:500] + "…"
    return (
        f"New lead (trigger: {trigger})\n"
        f"From user {row.sender_id} in chat {row.tg_chat_id}:\n"
        f"«{quoted}»"
    )


def _mentions(text: str) -> tuple[str, ...]:
    return tuple(w[1:].rstrip(".,:;!?") for w in text.split() if w.startswith("@") and len(w) > 1)


def policy_of(config: automation.ChatConfig) -> ChatPolicy:
    """The policy module's view of a chat config."""
    quiet = None
    if config.quiet_hours_start is not None and config.quiet_hours_end is not None:
        quiet = (config.quiet_hours_start, config.quiet_hours_end)
    return ChatPolicy(
        mode=config.mode,  # type: ignore[arg-type]
        trigger_words=config.trigger_words,
        response_probability=config.response_probability,
        cooldown_s=config.cooldown_s,
        reply_delay_min_s=config.reply_delay_min_s,
        reply_delay_max_s=config.reply_delay_max_s,
        quiet_hours=quiet,
        tz=config.tz,
        sniper_reply=config.sniper_reply,
    )


class Pipeline(Service):
    """The ``pipeline`` child: a scheduler of chats, ``worker_count`` workers, a sweep."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        router: Callable[[], Router | None],
        sessions: Callable[[], Supervisor | None],
        *,
        worker_count: int = 10,
        max_retries: int = 3,
        sweep_s: float = 5.0,
        seed: int | None = None,
        rag: Callable[[], Rag | None] = lambda: None,
        events: EventSink | None = None,
    ) -> None:
        super().__init__("pipeline")
        self._events = events if events is not None else NO_EVENTS
        self._pool = pool
        self._router = router
        self._sessions = sessions
        self._workers = worker_count
        self._max_retries = max_retries
        self._sweep_s = sweep_s
        self._configs: dict[ChatKey, tuple[float, automation.ChatConfig]] = {}
        self._rag = rag
        self._seed = random.getrandbits(64) if seed is None else seed
        self._heap: list[tuple[float, ChatKey]] = []
        self._due: dict[ChatKey, float] = {}
        self._busy: set[ChatKey] = set()
        self._again: set[ChatKey] = set()
        self._reply_at: dict[ChatKey, float] = {}
        self._ready: asyncio.Queue[ChatKey] = asyncio.Queue(maxsize=worker_count * 4)
        self._wake = asyncio.Event()
        self._sweep_now = asyncio.Event()

    # -- scheduling --------------------------------------------------------------------------

    def notify(self, keys: Iterable[ChatKey], delay_s: float = 0.0) -> None:
        """These chats have work (safe to call from any task, never blocks)."""
        at = time.monotonic() + delay_s
        for key in keys:
            if key in self._busy:
                self._again.add(key)
                continue
            known = self._due.get(key)
            if known is None or at < known:
                self._due[key] = at
                heapq.heappush(self._heap, (at, key))
        self._wake.set()

    def wake(self) -> None:
        """Sweep for unfinished work now (a dead letter was replayed, say)."""
        self._sweep_now.set()

    async def _schedule(self) -> None:
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

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            try:
                await self._process(key)
            except DB_ERRORS as exc:
                log.warning("chat not processed (%r); retrying", exc)
                self._again.add(key)
            except Exception:
                log.exception("chat processing failed", extra={"chat": key[1]})
                self._again.add(key)
            finally:
                self._busy.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.notify([key], 1.0)

    async def _sweep(self) -> None:
        while True:
            try:
                self.notify(await outbox.chats_with_work(self._pool))
                DEAD_LETTERS.set(await automation.count_dead_letters(self._pool))
                await self._index()
            except DB_ERRORS as exc:
                log.warning("pipeline sweep failed", extra={"error": repr(exc)})
            self._sweep_now.clear()
            try:
                async with asyncio.timeout(self._sweep_s):
                    await self._sweep_now.wait()
            except TimeoutError:
                pass

    async def _index(self) -> None:
        """Embed the owners' new messages for retrieval (a bounded amount per sweep)."""
        rag = self._rag()
        if rag is None:
            return
        for user_id in await embeddings.users_with_pending(self._pool, limit=20):
            try:
                await rag.index_pending(user_id, limit=200)
            except ProviderError as exc:
                log.warning("cannot embed messages now", extra={"reason": exc.reason})
                return

    async def run(self) -> None:
        """Recover unfinished work, then schedule, work and sweep until stopped."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._schedule(), name="pipeline:scheduler")
            group.create_task(self._sweep(), name="pipeline:sweep")  # the first sweep recovers
            for n in range(self._workers):
                group.create_task(self._work(), name=f"pipeline:decide:{n}")

    # -- one chat ----------------------------------------------------------------------------

    async def _config(self, user_id: int, key: ChatKey) -> automation.ChatConfig:
        """The chat's effective config, cached for ``CONFIG_TTL_S`` (a change made through
        the API applies within that time)."""
        now = time.monotonic()
        cached = self._configs.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await automation.chat_config(self._pool, user_id, *key)
        config = found or automation.ChatConfig(chat_id=0)
        self._configs[key] = (now + CONFIG_TTL_S, config)
        if len(self._configs) > MAX_CACHED_CONFIGS:
            self._configs.pop(next(iter(self._configs)))
        return config

    def _actor(self, session_id: int) -> SessionActor | None:
        sessions = self._sessions()
        child = sessions.get(f"session:{session_id}") if sessions is not None else None
        return child if isinstance(child, SessionActor) else None

    async def _process(self, key: ChatKey) -> None:
        session_id, tg_chat_id = key
        actor = self._actor(session_id)
        for item in await outbox.pending(self._pool, session_id, tg_chat_id):
            if not await self._send(item, actor):
                return  # keep the order: nothing newer goes out before it
        rows = await outbox.received(self._pool, session_id, tg_chat_id)
        if not rows:
            return
        config = await self._config(rows[0].user_id, key)
        try:
            policy = policy_of(config)
        except PolicyError as exc:  # written before validation existed: say so, do nothing
            await outbox.record(
                self._pool, rows, "skipped", "decision", "invalid_config", str(exc), config.chat_id
            )
            return
        replied_to = [r.reply_to_msg_id for r in rows if r.reply_to_msg_id is not None]
        ours = await outbox.ours_among(self._pool, session_id, tg_chat_id, replied_to)
        now = datetime.now(UTC)
        last = None
        if policy.cooldown_s > 0:
            last = await outbox.last_reply_at(self._pool, session_id, tg_chat_id)
        chat_id = config.chat_id or None
        answer: list[outbox.InboundRow] = []
        delay = 0.0
        for row in rows:
            # one generator per message: deciding it again (a coalescing pass, a recovery)
            # draws the same probability and delay
            rng = random.Random(f"{self._seed}:{row.id}")
            decision = decide(
                policy, facts_of(row, actor, ours), now=now, last_reply_at=last, rng=rng
            )
            if decision.action == "lead" and decision.trigger is not None:
                await self._lead(row, decision, config, actor)
                if decision.also_reply:
                    answer.append(row)
                    delay = max(delay, decision.delay_s)
            elif decision.action == "reply":
                answer.append(row)
                delay = max(delay, decision.delay_s)
            else:
                await outbox.record(
                    self._pool,
                    [row],
                    "skipped",
                    "decision",
                    decision.reason,
                    decision.detail,
                    chat_id,
                )
        if not answer:
            return
        reply_at = self._reply_at.setdefault(key, time.monotonic() + delay)
        if time.monotonic() < reply_at:
            self._again.discard(key)
            self._busy.discard(key)
            self.notify([key], reply_at - time.monotonic())  # gather what arrives meanwhile
            return
        self._reply_at.pop(key, None)
        await self._answer(answer, config, actor, deliberate_s=delay)

    async def _answer(
        self,
        rows: list[outbox.InboundRow],
        config: automation.ChatConfig,
        actor: SessionActor | None,
        deliberate_s: float,
    ) -> None:
        """Ask the model, write the reply to the outbox, send it. ``deliberate_s``: the
        human-like delay waited on purpose (not overhead)."""
        router = self._router()
        last = rows[-1]
        chat_id = config.chat_id or None
        if router is None:
            return
        request: ChatRequest = await build_request(self._pool, rows, config, self._rag())
        ai_started = time.monotonic()
        answer = await router.complete(request, user_id=last.user_id)
        ai_seconds = time.monotonic() - ai_started
        if not isinstance(answer, Completion):
            if answer.reason == "quota":
                self._events.publish(
                    last.user_id,
                    event("quota.exhausted", session_id=last.session_id, chat=last.tg_chat_id),
                )
            await outbox.record(
                self._pool,
                rows,
                "skipped",
                "decision",
                f"ai_{answer.reason}",
                answer.detail,
                chat_id,
            )
            return
        reply_to = last.message_id if (last.flags & (FLAG_GROUP | FLAG_CHANNEL)) else None
        async with self._pool.acquire() as conn:
            outbox_id = await outbox.write_reply(
                conn,
                rows,
                answer.text[:MAX_TEXT],
                random_id_for(last.session_id, last.id),
                reply_to,
                chat_id,
                {"provider": answer.provider, "canned": answer.canned, "answered": len(rows)},
            )
        REPLIES.labels(config.mode).inc()
        if outbox_id is None:
            return
        item = outbox.OutboxRow(
            outbox_id,
            last.user_id,
            last.session_id,
            last.tg_chat_id,
            answer.text[:MAX_TEXT],
            random_id_for(last.session_id, last.id),
            reply_to,
            0,
        )
        typing_started = time.monotonic()
        if actor is not None:
            await actor.typing(last.tg_chat_id)
        telegram_s = time.monotonic() - typing_started
        # stored → handed to the gateway, less what is not the pipeline's own doing
        since_stored = time.time() - last.created_at.timestamp()
        overhead = since_stored - ai_seconds - deliberate_s - telegram_s
        if await self._send(item, actor):
            LATENCY.observe(max(0.0, overhead))

    async def _lead(
        self,
        row: outbox.InboundRow,
        decision: Decision,
        config: automation.ChatConfig,
        actor: SessionActor | None,
    ) -> None:
        assert decision.trigger is not None
        lead_id = await automation.add_lead_if_new(
            self._pool,
            row.user_id,
            row.session_id,
            config.chat_id,
            row.sender_id,
            row.id,
            decision.trigger,
            row.text,
            datetime.now(UTC),
        )
        reason = "lead" if lead_id is not None else "lead_duplicate"
        await outbox.record(
            self._pool, [row], "done", "lead", reason, decision.detail, config.chat_id or None
        )
        if lead_id is None:
            return
        self._events.publish(
            row.user_id,
            event(
                "lead",
                lead_id=lead_id,
                session_id=row.session_id,
                chat=row.tg_chat_id,
                trigger=decision.trigger,
            ),
        )
        target = config.lead_chat_id or (actor.telegram_user_id if actor is not None else None)
        if target is None:
            return  # no lead chat and the session is not connected here: the lead is stored
        card = lead_card(row, decision.trigger)
        random_id = random_id_for(row.session_id, -lead_id)
        if await outbox.write_card(
            self._pool, row.user_id, row.session_id, target, card, random_id
        ):
            self.notify([(row.session_id, target)])

    async def _send(self, item: outbox.OutboxRow, actor: SessionActor | None) -> bool:
        """Send one outbox row; True when it is settled (sent or dead), False to retry."""
        if actor is None or not actor.connected.is_set():
            return False  # this instance does not run the session now; the sweep comes back
        try:
            message_id = await actor.send(
                item.tg_chat_id, item.text, item.random_id, item.reply_to_msg_id
            )
        except GatewayError as exc:
            if exc.permanent or exc.ends_session:
                await outbox.dead_letter(self._pool, item, exc.message, item.attempts + 1)
                return True
            attempts = await outbox.count_attempt(self._pool, item.id, exc.message)
            if attempts >= self._max_retries:
                await outbox.dead_letter(self._pool, item, exc.message, attempts)
                return True
            return False
        async with self._pool.acquire() as conn:
            await outbox.mark_sent(conn, item, message_id)
        SENT.inc()
        self._events.publish(
            item.user_id,
            event(
                "reply.sent",
                outbox_id=item.id,
                session_id=item.session_id,
                chat=item.tg_chat_id,
                message_id=message_id,
            ),
        )
        return True
