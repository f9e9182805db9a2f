"""One turn of one chat: unsent replies out, messages decided, an answer written and sent.

:class:`Decider` is what a pipeline worker runs for the chat it took (see
:mod:`vibee.automation.pipeline`). It reads what memory does not know of the chat in one
statement (:meth:`Decider._refresh`), decides each undecided message by the chat's
policy, records the decisions, and for the messages to answer asks the model, writes the
reply to the outbox (durably, before anything is sent) and hands it to the session.

The overhead it measures (``vibee_pipeline_latency_seconds``) runs from the moment the
last answered message was stored (ingest's commit returned; for a message read back from
the database, its ``created_at``) to the moment the reply is handed to the session's send,
less the model's call, the wait for "typing" and the part of the deliberate reply delay
that came after that message. Under load, the model's call also takes the time the event
loop spends on other chats meanwhile; that time is excluded with it. Its parts are
measured too (``vibee_pipeline_stage_seconds``, summing to it): *decide* — the turns'
own work up to the model's call (reads, policy, context: the answering turn's, and that
of the turn that began the reply delay), after the message was stored; *write* — the
reply's durable write; *queued* — the rest: waiting for a worker (before the first turn,
and once the reply delay is over) and for the event loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from vibee.ai.base import Completion
from vibee.ai.router import Router
from vibee.automation.context import Profiles, compose_request, similar_replies
from vibee.automation.events import EventSink, event
from vibee.automation.facts import facts_of, lead_card, random_id_for
from vibee.automation.lanes import Lane
from vibee.automation.memory import CONFIG_TTL_S, LISTENING_TTL_S, Chats, ChatState, Line
from vibee.automation.policy import LEAD_RECORDED, NO_NEW_LEAD, Decision, PolicyError, decide
from vibee.automation.rag import Rag
from vibee.obs import tracing
from vibee.runtime import Supervisor
from vibee.store import automation, outbox, turns
from vibee.store.inbox import FLAG_CHANNEL, FLAG_GROUP
from vibee.telegram.gateway import GatewayError
from vibee.telegram.session_actor import SessionActor

ChatKey = tuple[int, int]
"""(session id, Telegram chat id)."""

REPLIES = Counter("vibee_replies", "Replies written to the outbox, by chat mode.", ["mode"])
SENT = Counter("vibee_messages_sent", "Replies handed to Telegram and confirmed.")
OVERHEAD_BUCKETS = (
    *(ms / 1000 for ms in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 25, 50)),
    *(0.1, 0.25, 0.5, 1, 2.5),
)
"""Fine around the targets (p50 ≤ 1 ms, p99 ≤ 5 ms): the benchmark's figures are these
bounds, and a bucket from 1 to 2.5 ms could not tell 1.1 ms from 2.4 ms."""
LATENCY = Histogram(
    "vibee_pipeline_latency_seconds",
    "Inbound stored → reply handed to Telegram, AI time and the deliberate reply delay excluded.",
    buckets=OVERHEAD_BUCKETS,
)
STAGES = Histogram(
    "vibee_pipeline_stage_seconds",
    "The pipeline overhead by part, summing to it: decide (the turns' own work up to the "
    "model's call), write (the reply's durable write to the outbox), queued (the rest: "
    "waiting for a worker and for the event loop).",
    ["stage"],
    buckets=OVERHEAD_BUCKETS,
)
MAX_TEXT = 4096
ANSWERING = frozenset({"digital_twin", "sniper"})
"""Modes that may reply: their chats keep a dialog in memory."""
SENT_GATHER_S = 0.005
"""How long the "sent" marks of many chats wait for each other to share a statement
(nobody waits for them: see :meth:`Lanes.on`)."""
REPLY_WIDTH = 2
"""Connections the reply writes may use at once: a reply that finds nothing queued and the
first one busy is written on the second (each write is a synchronous commit, the slowest
statement of a turn); what queues still goes in growing rounds on the first."""
TYPING_AFTER_S = 0.5
""""typing…" is shown when the model has not answered within this long."""


@dataclass(frozen=True, slots=True)
class Lanes:
    """The statements a turn runs, each grouped across chats (:mod:`.lanes`)."""

    loads: Lane[turns.LoadRequest, turns.Loaded]
    replies: Lane[turns.ReplyWrite, turns.ReplyWritten]
    records: Lane[list[turns.Decided], None]
    sent: Lane[tuple[outbox.OutboxRow, int | None], None]

    @classmethod
    def on(cls, pool: asyncpg.Pool, unsent: Callable[[ChatKey], None]) -> Lanes:
        """The four lanes over ``pool``. The "sent" marks are submitted, not awaited: a
        turn does not wait for them, and one that fails (or is lost in a crash) leaves its
        reply pending, which ``unsent(chat)`` (and the sweep) sends again — Telegram
        refuses the ``random_id`` it has seen, and the reply is then marked sent."""

        def failed(sent: tuple[outbox.OutboxRow, int | None], _error: BaseException) -> None:
            unsent((sent[0].session_id, sent[0].tg_chat_id))

        return cls(
            Lane("load", pool, turns.load_batch),
            Lane("reply", pool, turns.write_replies, width=REPLY_WIDTH),
            Lane("record", pool, turns.record_batch),
            Lane("sent", pool, turns.mark_sent_batch, gather_s=SENT_GATHER_S, on_failed=failed),
        )

    def all(self) -> tuple[Lane[Any, Any], ...]:
        """Every lane (to run their tasks)."""
        return (self.loads, self.replies, self.records, self.sent)


class Decider:
    """What a worker does with the chat it took (see the module doc)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        router: Callable[[], Router | None],
        sessions: Callable[[], Supervisor | None],
        chats: Chats,
        lanes: Lanes,
        *,
        profiles: Profiles,
        listening: Callable[[], bool],
        later: Callable[[ChatKey, float], None],
        notify: Callable[[Iterable[ChatKey]], None],
        seed: int,
        max_retries: int,
        rag: Callable[[], Rag | None],
        events: EventSink,
    ) -> None:
        """``listening()``: config changes are announced now (configs may be kept long);
        ``later(key, s)``: the chat is due again in ``s`` (its reply waits);
        ``notify(keys)``: these chats have new work in the database (a lead card)."""
        self._pool = pool
        self._router = router
        self._sessions = sessions
        self._chats = chats
        self._lanes = lanes
        self._profiles = profiles
        self._listening = listening
        self._later = later
        self._notify = notify
        self._seed = seed
        self._max_retries = max_retries
        self._rag = rag
        self._events = events

    def _actor(self, session_id: int) -> SessionActor | None:
        sessions = self._sessions()
        child = sessions.get(f"session:{session_id}") if sessions is not None else None
        return child if isinstance(child, SessionActor) else None

    async def _refresh(self, state: ChatState) -> list[outbox.OutboxRow]:
        """Read what memory does not know of the chat, in one round trip (none when it
        knows everything; two when a config just read says the chat now answers and its
        dialog is needed). Returns the unsent replies found."""
        pending: list[outbox.OutboxRow] = []
        for _ in range(2):
            now = time.monotonic()
            want_config = state.config is None or state.config_until <= now
            want_work = not state.work_known
            mode = state.config.mode if state.config is not None else None
            answering = mode is None or mode in ANSWERING
            want_dialog = answering and (state.dialog is None or not state.dialog.loaded)
            if not (want_config or want_work or want_dialog):
                break
            gen = self._chats.gen()
            epoch = state.config_epoch
            if want_dialog:
                self._chats.dialog(state)  # lines handed over during the read are kept
            loaded = await self._lanes.loads.call(
                turns.LoadRequest(state.key, want_config, want_work, want_dialog)
            )
            state.user_id = loaded.user_id if loaded.user_id is not None else state.user_id
            if want_config:
                config = loaded.config or automation.ChatConfig(chat_id=0)
                ttl = LISTENING_TTL_S if self._listening() else CONFIG_TTL_S
                if state.config_epoch != epoch:
                    ttl = 0.0  # changed while it was read: good for this turn only
                state.set_config(config, now + ttl)
            if want_work:
                self._chats.load_rows(state, loaded.received or [], gen)
                pending = loaded.pending or []
            if state.config is not None and state.config.mode not in ANSWERING:
                self._chats.drop_dialog(state)
            elif want_dialog and state.dialog is not None:
                state.dialog.load(loaded.dialog or [], gen)
        return pending

    async def process(self, key: ChatKey) -> None:
        """One turn of a chat: its unsent replies, then its undecided messages."""
        began = time.time()
        state = self._chats.get(key)
        actor = self._actor(key[0])
        for item in await self._refresh(state):
            if not await self._send(state, item, actor):
                state.work_known = False  # read it again next time
                return  # keep the order: nothing newer goes out before it
        rows = state.undecided()
        if not rows:
            return
        tracing.link_messages((r.session_id, r.tg_chat_id, r.message_id) for r in rows)
        state.user_id = rows[0].user_id
        config, policy = state.config, state.policy
        assert config is not None
        chat_id = config.chat_id or None
        if isinstance(policy, PolicyError) or policy is None:
            # written before validation existed: say so, do nothing
            detail = str(policy) if policy is not None else "no policy"
            await self._record(state, rows, "skipped", "decision", "invalid_config", detail)
            return
        ours = await self._ours(state, [r.reply_to_msg_id for r in rows if r.reply_to_msg_id])
        now = datetime.now(UTC)
        last = await self._last_reply(state) if policy.cooldown_s > 0 else None
        answer: list[outbox.InboundRow] = []
        skipped: list[turns.Decided] = []
        delay = 0.0
        for row in rows:
            # one generator per message: deciding it again (a coalescing pass, a recovery)
            # draws the same probability and delay
            rng = random.Random(f"{self._seed}:{row.id}")
            decision = decide(
                policy, facts_of(row, actor, ours), now=now, last_reply_at=last, rng=rng
            )
            if decision.action == "lead" and decision.trigger is not None:
                await self._lead(state, row, decision, config, actor)
                if decision.also_reply:
                    answer.append(row)
                    delay = max(delay, decision.delay_s)
            elif decision.action == "reply":
                answer.append(row)
                delay = max(delay, decision.delay_s)
            else:
                data = turns.payload(decision.detail)
                skipped.append(
                    turns.Decided([row], "skipped", "decision", decision.reason, chat_id, data)
                )
        if skipped:
            await self._lanes.records.call(skipped)
            self._chats.decided(state, [r for d in skipped for r in d.rows])
        if not answer:
            return
        if state.reply_at is None:
            state.reply_at = time.monotonic() + delay
            state.wait_from, state.wait_until = time.time(), time.time() + delay
            state.wait_began = began
        if time.monotonic() < state.reply_at:
            self._later(key, state.reply_at - time.monotonic())  # gather what comes meanwhile
            return
        state.reply_at = None
        await self._answer(state, answer, config, actor, began)

    async def _ours(self, state: ChatState, replied_to: list[int]) -> set[int]:
        """Which of ``replied_to`` are the account's own messages (memory, else Postgres)."""
        known = {m for m in replied_to if m in state.ours}
        unknown = [m for m in replied_to if m not in state.ours]
        if unknown:
            found = await outbox.ours_among(self._pool, *state.key, unknown)
            for message_id in found:
                state.add_ours(message_id)
            known |= found
        return known

    async def _last_reply(self, state: ChatState) -> datetime | None:
        if not state.last_reply_known:
            state.last_reply_at = await outbox.last_reply_at(self._pool, *state.key)
            state.last_reply_known = True
        return state.last_reply_at

    async def _record(
        self,
        state: ChatState,
        rows: Sequence[outbox.InboundRow],
        reason_state: str,
        kind: str,
        reason: str,
        detail: str = "",
    ) -> None:
        chat_id = (state.config.chat_id or None) if state.config is not None else None
        decided = turns.Decided(rows, reason_state, kind, reason, chat_id, turns.payload(detail))
        await self._lanes.records.call([decided])
        self._chats.decided(state, rows)

    async def _answer(
        self,
        state: ChatState,
        rows: list[outbox.InboundRow],
        config: automation.ChatConfig,
        actor: SessionActor | None,
        began: float,
    ) -> None:
        """Ask the model, write the reply to the outbox, send it (``began``: when the
        turn began, ``time.time()``)."""
        router = self._router()
        if router is None:
            return
        last = rows[-1]
        persona, examples = await self._profiles.get(last.user_id)
        dialog = state.dialog.render() if state.dialog is not None else []
        similar = await similar_replies(rows, config, self._rag())
        request = compose_request(rows, config, persona, examples, dialog, similar)
        typing = _Typing(actor, last.tg_chat_id)  # shown if the model takes a while
        try:
            ai_started, asked = time.monotonic(), time.time()
            answer = await router.complete(request, user_id=last.user_id)
            ai_s = time.monotonic() - ai_started
            if not isinstance(answer, Completion):
                if answer.reason == "quota":
                    self._events.publish(
                        last.user_id,
                        event("quota.exhausted", session_id=last.session_id, chat=last.tg_chat_id),
                    )
                await self._record(
                    state, rows, "skipped", "decision", f"ai_{answer.reason}", answer.detail
                )
                return
            text = answer.text[:MAX_TEXT]
            reply_to = last.message_id if (last.flags & (FLAG_GROUP | FLAG_CHANNEL)) else None
            random_id = random_id_for(last.session_id, last.id)
            data = {"provider": answer.provider, "canned": answer.canned, "answered": len(rows)}
            writing = time.monotonic()
            written = await self._lanes.replies.call(
                turns.ReplyWrite(
                    rows,
                    text,
                    random_id,
                    reply_to,
                    config.chat_id or None,
                    turns.payload(_replied(answer, len(rows)), data),
                    actor.epoch if actor is not None else None,
                )
            )
            write_s = time.monotonic() - writing
            self._chats.decided(state, rows)
            REPLIES.labels(config.mode).inc()
            if written.outbox_id is None:
                state.work_known = False  # written before: read its state again
                return
            state.last_reply_at, state.last_reply_known = written.created_at, True
            item = outbox.OutboxRow(
                written.outbox_id,
                last.user_id,
                last.session_id,
                last.tg_chat_id,
                text,
                random_id,
                reply_to,
                0,
            )
            if state.dialog is not None:
                line = Line(item.id, "out", text, None, False, self._chats.gen(), ours=True)
                state.dialog.add(line)
            telegram_s = await typing.finish()
            # stored → handed to the gateway, less what is not the pipeline's own doing:
            # the model, "typing" and the deliberate delay (the part of it after the message)
            stored = last.stored_at if last.stored_at is not None else last.created_at.timestamp()
            waited = max(0.0, state.wait_until - max(stored, state.wait_from))
            # decide: this turn's work up to the model's call, and that of the earlier turn
            # that began the reply delay (the part of each after the message was stored)
            decide_s = max(0.0, asked - max(began, stored))
            if state.wait_began != began:
                decide_s += max(0.0, state.wait_from - max(state.wait_began, stored))
            state.wait_from = state.wait_until = state.wait_began = 0.0
            if actor is not None and actor.connected.is_set():
                overhead = max(0.0, time.time() - stored - ai_s - telegram_s - waited)
                LATENCY.observe(overhead)
                STAGES.labels("decide").observe(decide_s)
                STAGES.labels("write").observe(write_s)
                STAGES.labels("queued").observe(max(0.0, overhead - decide_s - write_s))
            if not await self._send(state, item, actor):
                state.work_known = False  # the sweep (or the next message) comes back to it
        finally:
            await typing.cancel()

    async def _lead(
        self,
        state: ChatState,
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
        if lead_id is not None:
            reason, detail = "lead", decision.detail
        else:  # the policy could not know: the hourly limit is the database's
            reason = "lead_duplicate"
            detail = decision.detail.replace(LEAD_RECORDED, NO_NEW_LEAD)
        await self._record(state, [row], "done", "lead", reason, detail)
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
            self._notify([(row.session_id, target)])

    async def _send(
        self, state: ChatState, item: outbox.OutboxRow, actor: SessionActor | None
    ) -> bool:
        """Send one outbox row; True when it is settled (sent or dead), False to retry."""
        if actor is None or not actor.connected.is_set():
            return False  # this instance does not run the session now; the sweep comes back
        try:
            with tracing.span("telegram.send", session_id=item.session_id, outbox_id=item.id):
                message_id = await actor.send(
                    item.tg_chat_id, item.text, item.random_id, item.reply_to_msg_id
                )
        except GatewayError as exc:
            if exc.permanent or exc.ends_session:
                await outbox.dead_letter(self._pool, item, exc.message, item.attempts + 1)
            else:
                attempts = await outbox.count_attempt(self._pool, item.id, exc.message)
                if attempts < self._max_retries:
                    return False
                await outbox.dead_letter(self._pool, item, exc.message, attempts)
            if state.dialog is not None:
                state.dialog.drop(item.id)
            return True
        await self._lanes.sent.submit((item, message_id))  # see Lanes.on
        if message_id is not None:
            state.add_ours(message_id)
        if state.dialog is not None:
            state.dialog.sent(item.id, item.text, message_id, self._chats.gen())
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


def _replied(answer: Completion, messages: int) -> str:
    """The sentence that explains a "replied" decision."""
    who = "a predefined reply (no model answered)" if answer.canned else answer.provider
    together = f"; {messages} messages answered in one reply" if messages > 1 else ""
    return f"answered by {who}{together}"


class _Typing:
    """ "typing…" in a chat while the model writes — if it takes a while: shown only once
    the model has not answered within :data:`TYPING_AFTER_S` (a reply that comes at once
    needs none, and each is one more request to Telegram, which rate-limits them). Once
    shown, it is awaited before the send (the wait then is Telegram's time, not the
    pipeline's); cancelled otherwise."""

    def __init__(self, actor: SessionActor | None, chat_id: int) -> None:
        self._task: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if actor is not None and actor.connected.is_set():
            self._timer = asyncio.get_running_loop().call_later(
                TYPING_AFTER_S, self._show, actor, chat_id
            )

    def _show(self, actor: SessionActor, chat_id: int) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(actor.typing(chat_id))

    async def finish(self) -> float:
        """Wait for it to be shown, if it was begun; returns how long that took from now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None:
            return 0.0
        started = time.monotonic()
        await asyncio.shield(self._task)
        return time.monotonic() - started

    async def cancel(self) -> None:
        """Stop it if it still runs, and wait for it to end."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait((self._task,))
