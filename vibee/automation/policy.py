"""The automation policy: whether VIBEE answers one incoming message, and why.

Pure and deterministic: no I/O, no clock, no global randomness. The pipeline gathers the
facts (:class:`Facts`), the chat's settings (:class:`ChatPolicy`), the time and the last
reply's time, and :func:`decide` returns a :class:`Decision` whose ``reason`` is a stable
code (:data:`REASONS`) to record as the analytics event that answers "why didn't it
answer?". The rules, in order (the first that applies decides):

1. Loop guards, whatever the mode: ``own_message`` (outgoing, the owner's other devices
   included), ``bot``, ``channel`` (broadcast channels), ``service``,
   ``addressed_to_other`` (in a group: the message mentions someone and not us, or replies
   to someone else without mentioning us; a reply to us is addressed to us), ``backlog``
   (older than ``connected_at - backlog_grace_s`` and not already in our inbox before this
   connect).
2. ``disabled`` and ``observe`` (stored, never answered) skip.
3. ``sniper``: no trigger, ``no_trigger``; a trigger, a lead (``action="lead"``), always:
   leads are recorded whatever the hour. With ``sniper_reply`` the invitation goes through
   the same reply gates as the twin (quiet hours, cooldown, probability): if one holds it
   back, the lead keeps ``also_reply=False`` and ``reason`` is that gate's code; otherwise
   ``also_reply=True``, ``reason="trigger"`` and a ``delay_s``.
4. ``digital_twin``: ``empty`` (no text to answer); in a group, ``not_addressed`` unless
   the message mentions us, replies to us or contains a trigger (private chats: always
   addressed); then the reply gates ``quiet_hours``, ``cooldown``, ``probability``; then
   ``action="reply"``, ``reason="twin"``.

Randomness: ``rng`` is drawn only once a decision has passed every gate before the
probability gate: one ``rng.random()`` (the reply is held back when it is not below
``response_probability``, so 0 never replies and 1 always does), then, only when
replying, one ``rng.uniform(reply_delay_min_s, reply_delay_max_s)`` for ``delay_s``.
Nothing else touches it, so a seeded ``random.Random`` replays the same decisions.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
from dataclasses import dataclass
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vibee.automation.triggers import compile_triggers, find_trigger

__all__ = [
    "MODES",
    "REASONS",
    "Action",
    "ChatPolicy",
    "ChatType",
    "Decision",
    "Facts",
    "Mode",
    "PolicyError",
    "Reason",
    "decide",
    "in_quiet_hours",
]

Mode = Literal["digital_twin", "sniper", "observe", "disabled"]
Action = Literal["reply", "lead", "skip"]
ChatType = Literal["private", "group", "channel"]
Reason = Literal[
    # loop guards
    "own_message",
    "bot",
    "channel",
    "service",
    "addressed_to_other",
    "backlog",
    # modes
    "disabled",
    "observe",
    "no_trigger",
    "empty",
    "not_addressed",
    # reply gates
    "quiet_hours",
    "cooldown",
    "probability",
    # answered (or a lead)
    "trigger",
    "twin",
]
MODES: Final[tuple[str, ...]] = get_args(Mode)
REASONS: Final[frozenset[str]] = frozenset(get_args(Reason))


class PolicyError(ValueError):
    """An invalid chat setting; ``field`` names it (the API's 422 points at it)."""

    def __init__(self, field: str, message: str) -> None:
        """``field``: the setting's name, e.g. ``"response_probability"``."""
        super().__init__(f"{field}: {message}")
        self.field = field


@functools.lru_cache(maxsize=512)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


@dataclass(frozen=True, slots=True)
class ChatPolicy:
    """One chat's automation settings (a ``chat_configs`` row, or the user's defaults).

    Checked on construction: :class:`PolicyError` (a ValueError) names the bad field.
    ``quiet_hours`` is ``(start, end)``, naive times in ``tz``, the interval ``[start,
    end)``; it wraps midnight when ``start > end``; ``start == end`` is rejected (say
    None for "never quiet"). ``trigger_words``: see :mod:`vibee.automation.triggers`.
    """

    mode: Mode = "observe"
    trigger_words: tuple[str, ...] = ()
    response_probability: float = 1.0
    cooldown_s: int = 0
    reply_delay_min_s: float = 2.0
    reply_delay_max_s: float = 8.0
    quiet_hours: tuple[dt.time, dt.time] | None = None
    tz: str = "UTC"
    sniper_reply: bool = False

    def __post_init__(self) -> None:
        """Validate every field (lists from the database are accepted as tuples)."""
        object.__setattr__(self, "trigger_words", tuple(self.trigger_words))
        if self.quiet_hours is not None:
            object.__setattr__(self, "quiet_hours", tuple(self.quiet_hours))
        if self.mode not in MODES:
            raise PolicyError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        self._check_triggers()
        p = self.response_probability
        if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
            raise PolicyError("response_probability", f"must be between 0 and 1, got {p!r}")
        if not (isinstance(self.cooldown_s, int) and self.cooldown_s >= 0):
            raise PolicyError("cooldown_s", f"must be a whole number ≥ 0, got {self.cooldown_s!r}")
        self._check_delays()
        self._check_quiet_hours()

    def _check_triggers(self) -> None:
        for i, trigger in enumerate(self.trigger_words):
            if not isinstance(trigger, str) or not trigger.strip():
                raise PolicyError("trigger_words", f"item {i} is empty")
        try:
            compile_triggers(self.trigger_words)
        except ValueError as exc:
            raise PolicyError("trigger_words", str(exc)) from None

    def _check_delays(self) -> None:
        for name in ("reply_delay_min_s", "reply_delay_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise PolicyError(name, f"must be a finite number of seconds ≥ 0, got {value!r}")
        if self.reply_delay_min_s > self.reply_delay_max_s:
            raise PolicyError(
                "reply_delay_min_s",
                f"must not exceed reply_delay_max_s ({self.reply_delay_min_s} > "
                f"{self.reply_delay_max_s})",
            )

    def _check_quiet_hours(self) -> None:
        try:
            _zone(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise PolicyError("tz", f"unknown time zone {self.tz!r}") from None
        if self.quiet_hours is None:
            return
        if len(self.quiet_hours) != 2 or not all(
            isinstance(t, dt.time) and t.tzinfo is None for t in self.quiet_hours
        ):
            raise PolicyError("quiet_hours", "must be two times of day (start, end) without zone")
        if self.quiet_hours[0] == self.quiet_hours[1]:
            raise PolicyError("quiet_hours", "start and end are equal; use none for no quiet hours")


@dataclass(frozen=True, slots=True)
class Facts:
    """One incoming message as the pipeline saw it.

    ``mentions``: the usernames the message mentions, with or without "@", any case, and
    ``id:<user id>`` for a mention of a user without a username (as the Telegram adapter
    reports them). ``reply_to_us`` / ``reply_to_other``: it replies to one of the
    account's messages / to somebody else's (both False when unknown). ``our_username`` /
    ``our_user_id`` identify the account in ``mentions``. ``connected_at``: when this
    session connected (None: no backlog guard); ``stored_before``: the message was already
    in our inbox before that (recovery), so it is not backlog.
    """

    text: str
    date: dt.datetime
    outgoing: bool
    from_bot: bool
    chat_type: ChatType
    service: bool = False
    mentions: tuple[str, ...] = ()
    reply_to_us: bool = False
    reply_to_other: bool = False
    our_username: str | None = None
    our_user_id: int | None = None
    connected_at: dt.datetime | None = None
    stored_before: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message, and why (``reason``: one of :data:`REASONS`).

    ``action``: ``reply`` (twin), ``lead`` (sniper hit; ``also_reply`` when the invitation
    is to be sent too), ``skip``. ``detail`` is a sentence for people; ``trigger`` the
    trigger as configured that matched, if any; ``delay_s`` the human-like wait before
    replying (0 when nothing is sent).
    """

    action: Action
    reason: Reason
    detail: str = ""
    trigger: str | None = None
    also_reply: bool = False
    delay_s: float = 0.0


def in_quiet_hours(policy: ChatPolicy, now: dt.datetime) -> bool:
    """Whether ``now`` (aware) falls in the policy's quiet hours, read in its ``tz``."""
    if policy.quiet_hours is None:
        return False
    start, end = policy.quiet_hours
    local = now.astimezone(_zone(policy.tz)).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _skip(reason: Reason, detail: str, trigger: str | None = None) -> Decision:
    return Decision("skip", reason, detail, trigger=trigger)


def _ours(facts: Facts) -> set[str]:
    names = set()
    if facts.our_username:
        names.add(facts.our_username.lstrip("@").casefold())
    if facts.our_user_id is not None:
        names.add(f"id:{facts.our_user_id}")
    return names


def _at(name: str) -> str:
    return name if name.startswith("id:") else "@" + name.lstrip("@")


def _loop_guard(facts: Facts, backlog_grace_s: float) -> Decision | None:
    if facts.outgoing:
        return _skip("own_message", "the account sent this message itself")
    if facts.from_bot:
        return _skip("bot", "the sender is a bot")
    if facts.chat_type == "channel":
        return _skip("channel", "broadcast channel posts are never answered")
    if facts.service:
        return _skip("service", "a service message, not written by a person")
    if (
        facts.chat_type == "group"
        and not facts.reply_to_us
        and (facts.mentions or facts.reply_to_other)
    ):
        ours = _ours(facts)
        if not any(m.lstrip("@").casefold() in ours for m in facts.mentions):
            us = " or ".join(_at(n) for n in sorted(ours)) or "us"
            if facts.mentions:
                others = ", ".join(_at(m) for m in facts.mentions)
                detail = f"the message mentions {others}, not {us}"
            else:
                detail = f"the message replies to someone else and does not mention {us}"
            return _skip("addressed_to_other", detail)
    if facts.connected_at is not None and not facts.stored_before:
        horizon = facts.connected_at - dt.timedelta(seconds=backlog_grace_s)
        if facts.date < horizon:
            return _skip(
                "backlog",
                f"sent at {facts.date.isoformat()}, before the session connected "
                f"({facts.connected_at.isoformat()}) minus {backlog_grace_s:g} s",
            )
    return None


def _reply_gate(
    policy: ChatPolicy, now: dt.datetime, last_reply_at: dt.datetime | None, rng: random.Random
) -> tuple[Reason, str] | None:
    if in_quiet_hours(policy, now):
        assert policy.quiet_hours is not None
        start, end = policy.quiet_hours
        return "quiet_hours", f"quiet hours {start:%H:%M}–{end:%H:%M} ({policy.tz})"
    if last_reply_at is not None and policy.cooldown_s > 0:
        elapsed = (now - last_reply_at).total_seconds()
        if elapsed < policy.cooldown_s:
            return "cooldown", f"replied {elapsed:.0f} s ago; cooldown is {policy.cooldown_s} s"
    draw = rng.random()
    if draw >= policy.response_probability:
        return "probability", (
            f"random draw {draw:.3f} ≥ response probability {policy.response_probability:g}"
        )
    return None


LEAD_RECORDED = "lead recorded"
"""What a sniper decision says of its lead; the pipeline, which records the lead (at most
one per sender per chat per hour), puts :data:`NO_NEW_LEAD` in its place when it did not."""
NO_NEW_LEAD = "no new lead: this sender already has one in this chat this hour"


def _delay(policy: ChatPolicy, rng: random.Random) -> float:
    return rng.uniform(policy.reply_delay_min_s, policy.reply_delay_max_s)


def _sniper(
    policy: ChatPolicy,
    facts: Facts,
    now: dt.datetime,
    last_reply_at: dt.datetime | None,
    rng: random.Random,
) -> Decision:
    trigger = find_trigger(facts.text, policy.trigger_words)
    if trigger is None:
        return _skip("no_trigger", "no trigger word in the message")
    lead = f"trigger {trigger!r} matched; {LEAD_RECORDED}"
    if not policy.sniper_reply:
        return Decision("lead", "trigger", lead, trigger=trigger)
    gate = _reply_gate(policy, now, last_reply_at, rng)
    if gate is not None:
        reason, why = gate
        return Decision("lead", reason, f"{lead}; no invitation: {why}", trigger=trigger)
    return Decision(
        "lead",
        "trigger",
        f"{lead}; invitation reply",
        trigger=trigger,
        also_reply=True,
        delay_s=_delay(policy, rng),
    )


def _twin(
    policy: ChatPolicy,
    facts: Facts,
    now: dt.datetime,
    last_reply_at: dt.datetime | None,
    rng: random.Random,
) -> Decision:
    if not facts.text.strip():
        return _skip("empty", "the message has no text to answer")
    trigger: str | None = None
    if facts.chat_type == "private":
        why = "a private message"
    elif facts.reply_to_us:
        why = "a reply to us"
    elif facts.mentions and any(m.lstrip("@").casefold() in _ours(facts) for m in facts.mentions):
        why = "mentions us"
    else:
        trigger = find_trigger(facts.text, policy.trigger_words)
        if trigger is None:
            return _skip("not_addressed", "a group message not addressed to us, no trigger word")
        why = f"trigger {trigger!r} matched"
    gate = _reply_gate(policy, now, last_reply_at, rng)
    if gate is not None:
        return _skip(*gate, trigger=trigger)
    return Decision(
        "reply", "twin", f"{why}; answering", trigger=trigger, delay_s=_delay(policy, rng)
    )


def decide(
    policy: ChatPolicy,
    facts: Facts,
    *,
    now: dt.datetime,
    last_reply_at: dt.datetime | None,
    rng: random.Random,
    backlog_grace_s: float = 120.0,
) -> Decision:
    """Whether and how to answer ``facts`` under ``policy`` (rules in the module doc).

    ``now`` (aware) is the decision time, for quiet hours and the cooldown;
    ``last_reply_at`` the time of the account's last reply in this chat (None: never);
    ``rng`` is drawn only at the probability gate and for the delay (module doc).
    """
    guard = _loop_guard(facts, backlog_grace_s)
    if guard is not None:
        return guard
    if policy.mode == "disabled":
        return _skip("disabled", "automation is disabled in this chat")
    if policy.mode == "observe":
        return _skip("observe", "observe mode: messages are stored, never answered")
    if policy.mode == "sniper":
        return _sniper(policy, facts, now, last_reply_at, rng)
    return _twin(policy, facts, now, last_reply_at, rng)
