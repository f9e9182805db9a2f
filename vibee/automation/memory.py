"""What the pipeline remembers of each chat, so that a chat turn need not ask Postgres.

Postgres stays the truth; this is a view of it that the pipeline keeps current itself and
throws away whenever it may be wrong. A :class:`ChatState` knows:

* ``rows``: the chat's messages waiting for a decision, as ingest handed them over right
  after storing them (``work_known``: nothing else is waiting — no other undecided
  message, no unsent reply — so the turn reads nothing);
* the chat's effective config, until a change is announced (:mod:`.notices`) or
  :meth:`Chats.forget` is called — at most :data:`LISTENING_TTL_S` seconds, or
  :data:`CONFIG_TTL_S` while changes are not being announced to this pipeline;
* the recent dialog, for chats that answer (:class:`Dialog`);
* the time of the last reply (for the cooldown) and the ids of the account's own
  messages seen lately (is a message a reply to us?).

When it can be wrong, it is marked unknown and the next turn loads the chat in one
statement: on a sweep or any outside notice (``notify`` from anywhere but ingest), after
any failed turn, when a send did not settle, when ingest's hand-over did not fit
(:data:`MAX_ROWS`), and for every chat until the pipeline's first sweep has run (work left
by a previous process). Everything here is bounded: :data:`MAX_ROWS` handed-over messages,
:data:`MAX_DIALOGS` dialogs, and :data:`MAX_CHATS` states — the least recently used idle
ones are forgotten first, and only chats with work in hand (a message to decide, a reply
being made) can hold the count above the bound.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from vibee.automation.policy import ChatPolicy, PolicyError
from vibee.store import automation
from vibee.store.inbox import FLAG_GROUP
from vibee.store.outbox import InboundRow
from vibee.store.turns import ChatKey, DialogRow, spoken

CONFIG_TTL_S = 5.0
"""How long a chat's config is kept while changes are not announced to this pipeline (its
listener is down): a change applies within this time."""
LISTENING_TTL_S = 300.0
"""How long a chat's config is kept while changes are announced (a change made through
:func:`vibee.store.automation.set_chat_config` applies at once; one written to the database
by hand, within this time)."""
MAX_CHATS = 20_000
MAX_DIALOGS = 4_096
MAX_ROWS = 100_000
MAX_OURS = 256
DIALOG_SLACK = 8
"""Lines kept beyond the turns the prompt shows (pending replies, copies)."""


@dataclass(slots=True)
class Line:
    """One message of the dialog; ``visible`` False for a reply not yet sent."""

    id: int
    direction: str
    text: str
    message_id: int | None
    visible: bool
    gen: int
    ours: bool = False
    """A reply of VIBEE's (an outbox row), not a message ingest stored."""


class Dialog:
    """The last messages of a chat in row-id order, as ``recent_dialog`` reads them."""

    def __init__(self, turns: int) -> None:
        self._turns = turns
        self.lines: list[Line] = []
        self.loaded = False

    def add(self, line: Line) -> None:
        """A message stored (or a reply written) since: keep it in order."""
        if not line.text:
            return
        at = bisect.bisect_left(self.lines, line.id, key=lambda x: x.id)
        if at < len(self.lines) and self.lines[at].id == line.id:
            self.lines[at] = line
        else:
            self.lines.insert(at, line)
        self._trim()

    def load(self, rows: Iterable[DialogRow], since_gen: int) -> None:
        """The chat's stored dialog, read after ``since_gen``: what was added to this
        dialog meanwhile (and the replies not yet sent) is kept beside it."""
        keep = {x.id: x for x in self.lines if x.gen > since_gen or not x.visible}
        merged = {r[0]: Line(r[0], r[1], r[2], r[3], True, since_gen) for r in rows}
        for line in merged.values():
            line.ours = line.id in keep and keep[line.id].ours
        merged.update(keep)
        self.lines = sorted(merged.values(), key=lambda x: x.id)
        self.loaded = True
        self._trim()

    def sent(self, outbox_id: int, text: str, message_id: int | None, gen: int) -> None:
        """Our reply reached Telegram: it is part of the dialog now, and the account's
        own copy of it (stored by ingest, deleted by ``mark_sent``) is not."""
        if message_id is not None:
            self.lines = [
                x
                for x in self.lines
                if not (x.message_id == message_id and x.direction == "out" and x.id != outbox_id)
            ]
        self.add(Line(outbox_id, "out", text, message_id, True, gen, ours=True))

    def sent_by_us(self, message_id: int) -> bool:
        """Whether ``message_id`` is one of our replies already in the dialog."""
        return any(x.ours and x.message_id == message_id for x in self.lines)

    def drop(self, row_id: int) -> None:
        """A reply given up on (dead): never part of the dialog."""
        self.lines = [x for x in self.lines if x.id != row_id]

    def render(self) -> list[tuple[str, str]]:
        """The last ``turns`` visible messages as (direction, text), oldest first."""
        shown = [(x.direction, x.text) for x in self.lines if x.visible]
        return shown[-self._turns :]

    def _trim(self) -> None:
        excess = len(self.lines) - (self._turns + DIALOG_SLACK)
        if excess > 0:
            del self.lines[:excess]


@dataclass(slots=True)
class ChatState:
    """One chat as the pipeline last knew it (see the module doc)."""

    key: ChatKey
    work_known: bool
    user_id: int | None = None
    rows: dict[int, tuple[int, InboundRow]] = field(default_factory=dict)
    """Undecided messages by row id, with the generation they were handed over in."""
    config: automation.ChatConfig | None = None
    policy: ChatPolicy | PolicyError | None = None
    config_until: float = 0.0
    config_epoch: int = 0
    """Counts :meth:`forget_config` calls: a config read before one is not kept."""
    dialog: Dialog | None = None
    last_reply_at: datetime | None = None
    last_reply_known: bool = False
    ours: dict[int, None] = field(default_factory=dict)
    reply_at: float | None = None
    """When the coalesced reply is due (monotonic), once a pass decided to wait."""
    wait_from: float = 0.0
    wait_until: float = 0.0
    """The deliberate wait (wall clock), not counted as pipeline overhead."""
    wait_began: float = 0.0
    """When the turn that began the wait began (wall clock): its work counts as *decide*."""

    def undecided(self) -> list[InboundRow]:
        """The messages waiting for a decision, in Telegram order."""
        return sorted((row for _, row in self.rows.values()), key=lambda r: r.message_id)

    def set_config(self, config: automation.ChatConfig, until: float) -> None:
        """The chat's effective config, trusted until ``until`` (monotonic)."""
        self.config = config
        self.config_until = until
        try:
            self.policy = _policy_of(config)
        except PolicyError as exc:
            self.policy = exc

    def forget_config(self) -> None:
        """Read the config again at the next turn."""
        self.config = None
        self.policy = None
        self.config_until = 0.0
        self.config_epoch += 1

    def work_changed(self) -> None:
        """Something was stored for the chat that was not handed over (a reply queued
        through the API, say): read its messages and replies again at the next turn."""
        self.work_known = False
        self.last_reply_known = False

    def unknown(self) -> None:
        """The memory may be wrong: read the chat again at the next turn."""
        self.work_known = False
        self.last_reply_known = False
        self.forget_config()
        if self.dialog is not None:
            self.dialog.loaded = False

    def add_ours(self, message_id: int) -> None:
        """A message id of the account's own (sent by us or by the owner)."""
        self.ours[message_id] = None
        if len(self.ours) > MAX_OURS:
            del self.ours[next(iter(self.ours))]

    def idle(self) -> bool:
        """Nothing here that is not also in Postgres, and nothing to read from it: safe
        to forget (a new state for the chat would know as much)."""
        return self.work_known and not self.rows and self.reply_at is None


class Chats:
    """Every :class:`ChatState`, bounded (see the module doc)."""

    def __init__(
        self,
        dialog_turns: int,
        pinned: Callable[[ChatKey], bool],
        *,
        max_chats: int = MAX_CHATS,
        max_dialogs: int = MAX_DIALOGS,
        max_rows: int = MAX_ROWS,
    ) -> None:
        """``pinned(key)``: the chat is being processed or is scheduled (kept)."""
        self._max_chats = max_chats
        self._max_dialogs = max_dialogs
        self._max_rows = max_rows
        self._states: OrderedDict[ChatKey, ChatState] = OrderedDict()
        self._dialogs: OrderedDict[ChatKey, None] = OrderedDict()
        self._turns = dialog_turns
        self._pinned = pinned
        self._gen = itertools.count(1)
        self.rows = 0
        self.trusted = False
        """Set once a sweep has seen every chat with work: from then on a chat not met
        before has no work but what ingest hands over."""

    def __len__(self) -> int:
        return len(self._states)

    def gen(self) -> int:
        """A new generation number (orders dialog lines against loads)."""
        return next(self._gen)

    def get(self, key: ChatKey) -> ChatState:
        """The chat's state (a new one: its work is known once :attr:`trusted`)."""
        state = self._states.get(key)
        if state is None:
            self._evict()
            state = ChatState(key, work_known=self.trusted)
            self._states[key] = state
        else:
            self._states.move_to_end(key)
        return state

    def peek(self, key: ChatKey) -> ChatState | None:
        """The chat's state if there is one (its place in the LRU order unchanged)."""
        return self._states.get(key)

    def dialog(self, state: ChatState) -> Dialog:
        """The chat's dialog, created (not loaded) if it had none."""
        if state.dialog is None:
            state.dialog = Dialog(self._turns)
        self._dialogs[state.key] = None
        self._dialogs.move_to_end(state.key)
        while len(self._dialogs) > self._max_dialogs:
            old, _ = self._dialogs.popitem(last=False)
            gone = self._states.get(old)
            if gone is not None and gone is not state:
                gone.dialog = None
        return state.dialog

    def drop_dialog(self, state: ChatState) -> None:
        """The chat does not answer (observe, disabled): keep no dialog for it."""
        state.dialog = None
        self._dialogs.pop(state.key, None)

    def hand_over(self, row: InboundRow) -> None:
        """An inbound message ingest just stored."""
        state = self.get((row.session_id, row.tg_chat_id))
        gen = self.gen()
        if self.rows >= self._max_rows:
            state.work_known = False  # too much in memory: read it from the database
        elif row.id not in state.rows:
            state.rows[row.id] = (gen, row)
            self.rows += 1
        if state.dialog is not None:
            speaker = row.sender_id if row.flags & FLAG_GROUP else None
            text = spoken(row.text, speaker, row.sender_username)
            state.dialog.add(Line(row.id, "in", text, row.message_id, True, gen))

    def hand_over_own(self, key: ChatKey, row: DialogRow) -> None:
        """An outgoing message of the account (its owner's, or our reply's copy)."""
        state = self._states.get(key)
        if state is None:
            return
        message_id = row[3]
        if message_id is not None:
            state.add_ours(message_id)
            if state.dialog is not None and state.dialog.sent_by_us(message_id):
                return  # the copy of a reply of ours: mark_sent deletes it
        if state.dialog is not None:
            state.dialog.add(Line(row[0], row[1], row[2], message_id, True, self.gen()))

    def decided(self, state: ChatState, rows: Iterable[InboundRow]) -> None:
        """These messages are decided (and the decision stored)."""
        for row in rows:
            if state.rows.pop(row.id, None) is not None:
                self.rows -= 1

    def load_rows(self, state: ChatState, rows: Iterable[InboundRow], since_gen: int) -> None:
        """The chat's undecided messages as stored (read after ``since_gen``), with those
        handed over meanwhile; the chat's work is known from now on."""
        kept = {i: v for i, v in state.rows.items() if v[0] > since_gen}
        for row in rows:
            kept.setdefault(row.id, (since_gen, row))
        self.rows += len(kept) - len(state.rows)
        state.rows = kept
        state.work_known = True

    def forget(self, match: Callable[[ChatState], bool]) -> None:
        """Read the config of every matching chat again at its next turn."""
        for state in self._states.values():
            if match(state):
                state.forget_config()

    def unknown(self, match: Callable[[ChatState], bool]) -> None:
        """Read every matching chat again at its next turn."""
        for state in self._states.values():
            if match(state):
                state.unknown()

    def _evict(self) -> None:
        """Make room for one more state: forget the least recently used idle ones (when
        none of the oldest is idle, the bound is exceeded until some are)."""
        if len(self._states) < self._max_chats:
            return
        for key in list(itertools.islice(self._states, 64)):
            state = self._states[key]
            if state.idle() and not self._pinned(key):
                del self._states[key]
                self._dialogs.pop(key, None)
                if len(self._states) < self._max_chats:
                    return


def _policy_of(config: automation.ChatConfig) -> ChatPolicy:
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
