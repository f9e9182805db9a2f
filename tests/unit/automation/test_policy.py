"""decide(): loop guards, modes, quiet hours, cooldown, probability, delay, backlog."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vibee.automation.policy import (
    MODES,
    REASONS,
    ChatPolicy,
    Decision,
    Facts,
    Mode,
    PolicyError,
    decide,
    in_quiet_hours,
)

UTC = dt.UTC
NOW = dt.datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
CONNECTED = NOW - dt.timedelta(hours=1)

TWIN = ChatPolicy(mode="digital_twin", reply_delay_min_s=2.0, reply_delay_max_s=8.0)
SNIPER = ChatPolicy(mode="sniper", trigger_words=("бот", "want to buy"))


class NoDraws(random.Random):
    """An rng that fails the test if the decision draws from it."""

    def random(self) -> float:
        pytest.fail("rng.random() drawn")

    def uniform(self, a: float, b: float) -> float:
        pytest.fail("rng.uniform() drawn")


def facts(**changes: Any) -> Facts:
    base = Facts(
        text="привет, нужен бот",
        date=NOW - dt.timedelta(seconds=5),
        outgoing=False,
        from_bot=False,
        chat_type="private",
        our_username="alice",
        our_user_id=42,
        connected_at=CONNECTED,
    )
    return dataclasses.replace(base, **changes)


def run(
    policy: ChatPolicy,
    f: Facts,
    *,
    now: dt.datetime = NOW,
    last_reply_at: dt.datetime | None = None,
    rng: random.Random | None = None,
    backlog_grace_s: float = 120.0,
) -> Decision:
    decision = decide(
        policy,
        f,
        now=now,
        last_reply_at=last_reply_at,
        rng=rng if rng is not None else random.Random(0),
        backlog_grace_s=backlog_grace_s,
    )
    assert decision.reason in REASONS
    return decision


# --- loop guards ----------------------------------------------------------------------------

GUARDS = [
    ({"outgoing": True}, "own_message"),
    ({"from_bot": True}, "bot"),
    ({"chat_type": "channel"}, "channel"),
    ({"service": True}, "service"),
    ({"chat_type": "group", "mentions": ("bob",)}, "addressed_to_other"),
    ({"date": CONNECTED - dt.timedelta(hours=2)}, "backlog"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("changes", "reason"), GUARDS)
def test_loop_guards_apply_in_every_mode(mode: Mode, changes: dict[str, Any], reason: str) -> None:
    # the message is private (or mentions us) and contains a trigger: without the guard,
    # the twin would reply and the sniper would record a lead
    policy = ChatPolicy(mode=mode, trigger_words=("бот",), sniper_reply=True)
    assert run(policy, facts()).action in {"reply", "lead", "skip"}
    decision = run(policy, facts(**changes), rng=NoDraws())
    assert (decision.action, decision.reason) == ("skip", reason)
    assert decision.detail
    assert decision.delay_s == 0.0 and not decision.also_reply


def test_guards_are_checked_in_order() -> None:
    everything = facts(outgoing=True, from_bot=True, chat_type="channel", service=True)
    assert run(TWIN, everything).reason == "own_message"
    assert run(TWIN, dataclasses.replace(everything, outgoing=False)).reason == "bot"


@pytest.mark.parametrize(
    ("changes", "addressed_to_other"),
    [
        ({"mentions": ("bob",)}, True),
        ({"mentions": ("@bob", "carol")}, True),
        ({"mentions": ("alice",)}, False),
        ({"mentions": ("@Alice",)}, False),
        ({"mentions": ("bob", "alice")}, False),
        ({"mentions": ("bob",), "reply_to_us": True}, False),
        ({"reply_to_other": True}, True),
        ({"reply_to_other": True, "mentions": ("alice",)}, False),
        ({"mentions": ("id:42",), "our_username": None}, False),
        ({"mentions": ("id:43",), "our_username": None}, True),
        ({"mentions": ("bob",), "our_username": None, "our_user_id": None}, True),
        ({"mentions": ("bob",), "chat_type": "private"}, False),
        ({"reply_to_other": True, "chat_type": "private"}, False),
        ({}, False),
    ],
)
def test_addressed_to_another_user(changes: dict[str, Any], addressed_to_other: bool) -> None:
    f = facts(**({"chat_type": "group"} | changes))
    assert (run(SNIPER, f).reason == "addressed_to_other") is addressed_to_other


def test_addressed_to_other_says_who() -> None:
    decision = run(TWIN, facts(chat_type="group", mentions=("bob",), our_user_id=None))
    assert decision.detail == "the message mentions @bob, not @alice"


@pytest.mark.parametrize(
    ("age_before_connect_s", "stored_before", "grace_s", "backlog"),
    [
        (120.0, False, 120.0, False),  # exactly at the edge of the grace window
        (120.001, False, 120.0, True),
        (3600.0, False, 120.0, True),
        (3600.0, True, 120.0, False),  # already in our inbox before this connect
        (0.0, False, 0.0, False),
        (0.001, False, 0.0, True),
        (-30.0, False, 120.0, False),  # arrived after the connect
    ],
)
def test_backlog_grace(
    age_before_connect_s: float, stored_before: bool, grace_s: float, backlog: bool
) -> None:
    f = facts(
        date=CONNECTED - dt.timedelta(seconds=age_before_connect_s), stored_before=stored_before
    )
    decision = run(TWIN, f, backlog_grace_s=grace_s)
    assert (decision.reason == "backlog") is backlog
    assert decision.action == ("skip" if backlog else "reply")


def test_no_backlog_guard_without_a_connect_time() -> None:
    old = facts(date=NOW - dt.timedelta(days=30), connected_at=None)
    assert run(TWIN, old).action == "reply"


# --- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["disabled", "observe"])
def test_disabled_and_observe_never_answer(mode: Mode) -> None:
    policy = ChatPolicy(mode=mode, trigger_words=("бот",))
    decision = run(policy, facts(), rng=NoDraws())
    assert (decision.action, decision.reason) == ("skip", mode)


def test_default_policy_observes() -> None:
    assert run(ChatPolicy(), facts()).reason == "observe"


def test_sniper_without_a_trigger() -> None:
    decision = run(SNIPER, facts(text="Ищу работу"), rng=NoDraws())
    assert (decision.action, decision.reason, decision.trigger) == ("skip", "no_trigger", None)


def test_sniper_hit_records_a_lead_without_drawing() -> None:
    decision = run(SNIPER, facts(text="I WANT to buy a bot"), rng=NoDraws())
    assert (decision.action, decision.reason) == ("lead", "trigger")
    assert decision.trigger == "want to buy"
    assert not decision.also_reply and decision.delay_s == 0.0


def test_sniper_works_in_groups_without_being_addressed() -> None:
    decision = run(SNIPER, facts(chat_type="group", text="кому нужен бот?"))
    assert (decision.action, decision.trigger) == ("lead", "бот")


def test_sniper_reply() -> None:
    policy = dataclasses.replace(SNIPER, sniper_reply=True)
    decision = run(policy, facts(text="нужен бот"))
    assert (decision.action, decision.reason, decision.also_reply) == ("lead", "trigger", True)
    assert 2.0 <= decision.delay_s <= 8.0


@pytest.mark.parametrize(
    ("changes", "last_reply_at", "reason"),
    [
        ({"quiet_hours": (dt.time(11), dt.time(13))}, None, "quiet_hours"),
        ({"cooldown_s": 600}, NOW - dt.timedelta(seconds=60), "cooldown"),
        ({"response_probability": 0.0}, None, "probability"),
    ],
)
def test_sniper_lead_is_recorded_even_when_the_invitation_is_held_back(
    changes: dict[str, Any], last_reply_at: dt.datetime | None, reason: str
) -> None:
    policy = dataclasses.replace(SNIPER, sniper_reply=True, **changes)
    decision = run(policy, facts(text="нужен бот"), last_reply_at=last_reply_at)
    assert (decision.action, decision.reason, decision.trigger) == ("lead", reason, "бот")
    assert not decision.also_reply and decision.delay_s == 0.0


def test_twin_answers_every_private_message() -> None:
    decision = run(TWIN, facts(text="как дела?"))
    assert (decision.action, decision.reason, decision.trigger) == ("reply", "twin", None)


@pytest.mark.parametrize(
    ("changes", "action", "reason", "trigger"),
    [
        ({"text": "всем привет"}, "skip", "not_addressed", None),
        ({"text": "@alice привет", "mentions": ("alice",)}, "reply", "twin", None),
        ({"text": "привет", "reply_to_us": True}, "reply", "twin", None),
        ({"text": "кому нужен бот?"}, "reply", "twin", "бот"),
        ({"text": "Ищу работу"}, "skip", "not_addressed", None),
    ],
)
def test_twin_in_groups_answers_only_when_addressed_or_triggered(
    changes: dict[str, Any], action: str, reason: str, trigger: str | None
) -> None:
    policy = dataclasses.replace(TWIN, trigger_words=("бот",))
    decision = run(policy, facts(chat_type="group", **changes))
    assert (decision.action, decision.reason, decision.trigger) == (action, reason, trigger)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_twin_skips_messages_without_text(text: str) -> None:
    assert run(TWIN, facts(text=text), rng=NoDraws()).reason == "empty"


# --- quiet hours ----------------------------------------------------------------------------


def at(hour: int, minute: int = 0, second: int = 0, *, day: int = 3, month: int = 6) -> dt.datetime:
    return dt.datetime(2024, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "tz", "now", "quiet"),
    [
        # same day, UTC: [13:00, 14:00)
        (dt.time(13), dt.time(14), "UTC", at(12, 59, 59), False),
        (dt.time(13), dt.time(14), "UTC", at(13), True),
        (dt.time(13), dt.time(14), "UTC", at(13, 59, 59), True),
        (dt.time(13), dt.time(14), "UTC", at(14), False),
        # wrapping midnight in Moscow (UTC+3): [22:00, 07:00)
        (dt.time(22), dt.time(7), "Europe/Moscow", at(18, 59, 59), False),
        (dt.time(22), dt.time(7), "Europe/Moscow", at(19), True),
        (dt.time(22), dt.time(7), "Europe/Moscow", at(21), True),  # local midnight
        (dt.time(22), dt.time(7), "Europe/Moscow", at(3, 59, 59), True),
        (dt.time(22), dt.time(7), "Europe/Moscow", at(4), False),
        (dt.time(22), dt.time(7), "Europe/Moscow", at(12), False),
        # New York follows daylight saving: 10:30 UTC is 05:30 in winter, 06:30 in summer
        (dt.time(0), dt.time(6), "America/New_York", at(10, 30, day=15, month=1), True),
        (dt.time(0), dt.time(6), "America/New_York", at(10, 30, day=15, month=7), False),
        # a zone east of the date line, across midnight: Auckland is UTC+12 in June
        (dt.time(23), dt.time(1), "Pacific/Auckland", at(11, 30), True),
        (dt.time(23), dt.time(1), "Pacific/Auckland", at(13, 0), False),
    ],
)
def test_quiet_hours(start: dt.time, end: dt.time, tz: str, now: dt.datetime, quiet: bool) -> None:
    policy = dataclasses.replace(TWIN, quiet_hours=(start, end), tz=tz)
    assert in_quiet_hours(policy, now) is quiet
    decision = run(policy, facts(date=now, connected_at=None), now=now)
    assert (decision.reason == "quiet_hours") is quiet
    assert decision.action == ("skip" if quiet else "reply")


def test_quiet_hours_do_not_draw() -> None:
    policy = dataclasses.replace(TWIN, quiet_hours=(dt.time(11), dt.time(13)))
    assert run(policy, facts(), rng=NoDraws()).reason == "quiet_hours"


def test_no_quiet_hours() -> None:
    assert not in_quiet_hours(TWIN, NOW)


# --- cooldown -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cooldown_s", "elapsed_s", "cooling"),
    [
        (60, 0.0, True),
        (60, 59.999, True),
        (60, 60.0, False),
        (60, 3600.0, False),
        (60, -5.0, True),  # a last reply "in the future" (clock skew) still cools down
        (0, 0.0, False),
    ],
)
def test_cooldown(cooldown_s: int, elapsed_s: float, cooling: bool) -> None:
    policy = dataclasses.replace(TWIN, cooldown_s=cooldown_s)
    decision = run(policy, facts(), last_reply_at=NOW - dt.timedelta(seconds=elapsed_s))
    assert (decision.reason == "cooldown") is cooling
    assert decision.action == ("skip" if cooling else "reply")


def test_no_cooldown_before_the_first_reply() -> None:
    policy = dataclasses.replace(TWIN, cooldown_s=10**6)
    assert run(policy, facts(), last_reply_at=None).action == "reply"


def test_cooldown_is_checked_before_the_draw() -> None:
    policy = dataclasses.replace(TWIN, cooldown_s=60)
    assert run(policy, facts(), last_reply_at=NOW, rng=NoDraws()).reason == "cooldown"


# --- probability and delay ------------------------------------------------------------------


def _replies(probability: float, rng: random.Random, n: int = 1000) -> int:
    policy = dataclasses.replace(TWIN, response_probability=probability)
    return sum(run(policy, facts(), rng=rng).action == "reply" for _ in range(n))


def test_probability_zero_never_replies() -> None:
    assert _replies(0.0, random.Random(1)) == 0


def test_probability_one_always_replies() -> None:
    assert _replies(1.0, random.Random(1)) == 1000


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_probability_half_replies_about_half_the_time(seed: int) -> None:
    assert 400 <= _replies(0.5, random.Random(seed)) <= 600


class Fixed(random.Random):
    """An rng whose every draw is ``value`` (the extremes a seeded rng hardly ever hits)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("probability", "draw", "replies"),
    [(0.0, 0.0, False), (1.0, 0.9999999999999999, True), (0.5, 0.5, False), (0.5, 0.4999, True)],
)
def test_probability_edges(probability: float, draw: float, replies: bool) -> None:
    policy = dataclasses.replace(TWIN, response_probability=probability)
    assert (run(policy, facts(), rng=Fixed(draw)).action == "reply") is replies


def test_probability_skip_says_so() -> None:
    policy = dataclasses.replace(TWIN, response_probability=0.0)
    decision = run(policy, facts())
    assert (decision.action, decision.reason) == ("skip", "probability")


@given(
    seed=st.integers(0, 2**32),
    probability=st.floats(0.0, 1.0),
    low=st.floats(0.0, 60.0),
    spread=st.floats(0.0, 60.0),
)
def test_draws_are_exactly_one_random_then_one_uniform(
    seed: int, probability: float, low: float, spread: float
) -> None:
    policy = dataclasses.replace(
        TWIN,
        response_probability=probability,
        reply_delay_min_s=low,
        reply_delay_max_s=low + spread,
    )
    decision = run(policy, facts(), rng=random.Random(seed))
    replay = random.Random(seed)
    if replay.random() < probability:
        assert decision.action == "reply"
        assert decision.delay_s == replay.uniform(low, low + spread)
        assert low <= decision.delay_s <= low + spread
    else:
        assert (decision.action, decision.delay_s) == ("skip", 0.0)


def test_fixed_delay() -> None:
    policy = dataclasses.replace(TWIN, reply_delay_min_s=3.0, reply_delay_max_s=3.0)
    assert run(policy, facts()).delay_s == 3.0


def test_same_seed_same_decisions() -> None:
    policy = dataclasses.replace(TWIN, response_probability=0.3)
    a, b = random.Random(7), random.Random(7)
    assert [run(policy, facts(), rng=a) for _ in range(50)] == [
        run(policy, facts(), rng=b) for _ in range(50)
    ]


# --- any input ------------------------------------------------------------------------------

policies = st.builds(
    ChatPolicy,
    mode=st.sampled_from(MODES),
    trigger_words=st.sampled_from([(), ("бот",), ("want to buy", "cafe", "купл*")]),
    response_probability=st.floats(0.0, 1.0),
    cooldown_s=st.integers(0, 120),
    quiet_hours=st.none() | st.tuples(st.times(), st.times()).filter(lambda t: t[0] != t[1]),
    tz=st.sampled_from(["UTC", "Europe/Moscow", "Asia/Kolkata", "America/Los_Angeles"]),
    sniper_reply=st.booleans(),
)
datetimes = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(UTC)
)
any_facts = st.builds(
    Facts,
    text=st.text(max_size=80) | st.sampled_from(["нужен бот", "want to buy", "Café?"]),
    date=datetimes,
    outgoing=st.booleans(),
    from_bot=st.booleans(),
    chat_type=st.sampled_from(["private", "group", "channel"]),
    service=st.booleans(),
    mentions=st.lists(st.sampled_from(["alice", "bob", "id:42"]), max_size=2).map(tuple),
    reply_to_us=st.booleans(),
    reply_to_other=st.booleans(),
    our_username=st.sampled_from([None, "alice"]),
    our_user_id=st.sampled_from([None, 42]),
    connected_at=st.none() | datetimes,
    stored_before=st.booleans(),
)


@given(
    policy=policies,
    f=any_facts,
    now=datetimes,
    last=st.none() | datetimes,
    seed=st.integers(0, 2**16),
)
def test_every_decision_is_consistent(
    policy: ChatPolicy, f: Facts, now: dt.datetime, last: dt.datetime | None, seed: int
) -> None:
    d = run(policy, f, now=now, last_reply_at=last, rng=random.Random(seed))
    assert d.detail
    if d.action == "reply":
        assert policy.mode == "digital_twin" and d.reason == "twin"
    if d.action == "lead":
        assert policy.mode == "sniper" and d.trigger in policy.trigger_words
        assert d.also_reply == (d.reason == "trigger" and policy.sniper_reply)
    if d.action == "skip" or (d.action == "lead" and not d.also_reply):
        assert d.delay_s == 0.0 and not d.also_reply
    else:
        assert policy.reply_delay_min_s <= d.delay_s <= policy.reply_delay_max_s
    if d.action != "skip":
        assert not (f.outgoing or f.from_bot or f.service or f.chat_type == "channel")


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"mode": "loud"}, "mode"),
        ({"response_probability": 1.5}, "response_probability"),
        ({"response_probability": -0.1}, "response_probability"),
        ({"response_probability": math.nan}, "response_probability"),
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"reply_delay_min_s": 9.0, "reply_delay_max_s": 8.0}, "reply_delay_min_s"),
        ({"reply_delay_min_s": -1.0}, "reply_delay_min_s"),
        ({"reply_delay_max_s": math.inf}, "reply_delay_max_s"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),
        ({"tz": ""}, "tz"),
        ({"tz": "../etc/passwd"}, "tz"),
        ({"trigger_words": ("бот", "")}, "trigger_words"),
        ({"trigger_words": ("   ",)}, "trigger_words"),
        ({"trigger_words": ("!!!",)}, "trigger_words"),
        ({"trigger_words": ("*бот",)}, "trigger_words"),
        ({"quiet_hours": (dt.time(7), dt.time(7))}, "quiet_hours"),
        ({"quiet_hours": (dt.time(22, tzinfo=UTC), dt.time(7))}, "quiet_hours"),
    ],
)
def test_invalid_settings_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        ChatPolicy(**changes)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_valid_settings() -> None:
    policy = ChatPolicy(
        mode="sniper",
        trigger_words=["бот*", "want to buy"],  # type: ignore[arg-type]  # a DB array
        response_probability=0,
        reply_delay_min_s=0,
        reply_delay_max_s=0,
        quiet_hours=(dt.time(23, 30), dt.time(6)),
        tz="Asia/Kolkata",
    )
    assert policy.trigger_words == ("бот*", "want to buy")
    hash(policy)


def test_reason_codes_are_stable() -> None:
    assert REASONS == {
        "own_message",
        "bot",
        "channel",
        "service",
        "addressed_to_other",
        "backlog",
        "disabled",
        "observe",
        "no_trigger",
        "empty",
        "not_addressed",
        "quiet_hours",
        "cooldown",
        "probability",
        "trigger",
        "twin",
    }
