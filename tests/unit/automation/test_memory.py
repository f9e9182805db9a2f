"""The pipeline's memory of chats: the dialog as Postgres would read it, bounded state."""

from __future__ import annotations

from datetime import UTC, datetime

from vibee.automation import memory
from vibee.automation.memory import Chats, Dialog, Line
from vibee.store import automation
from vibee.store.inbox import FLAG_GROUP
from vibee.store.outbox import InboundRow

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = (1, 100)


def inbound(row_id: int, message_id: int, text: str = "hi", chat: int = 100) -> InboundRow:
    return InboundRow(row_id, 7, 1, chat, message_id, 42, text, 0, NOW, NOW, stored_at=1.0)


def line(row_id: int, direction: str, text: str, gen: int, message_id: int | None = None) -> Line:
    return Line(row_id, direction, text, message_id, True, gen)


def test_dialog_keeps_row_order_and_shows_the_last_turns() -> None:
    dialog = Dialog(turns=3)
    for row_id, text in [(5, "e"), (1, "a"), (3, "c"), (2, "b"), (4, "d")]:
        dialog.add(line(row_id, "in", text, gen=row_id))
    assert dialog.render() == [("in", "c"), ("in", "d"), ("in", "e")]
    dialog.add(line(6, "in", "", gen=6))  # no text: never part of the dialog
    assert len(dialog.lines) == 5


def test_dialog_is_bounded() -> None:
    dialog = Dialog(turns=2)
    for row_id in range(1, 100):
        dialog.add(line(row_id, "in", f"m{row_id}", gen=row_id))
    assert len(dialog.lines) == 2 + memory.DIALOG_SLACK
    assert dialog.render() == [("in", "m98"), ("in", "m99")]


def test_a_reply_shows_once_sent_and_replaces_the_accounts_copy() -> None:
    dialog = Dialog(turns=10)
    dialog.add(line(1, "in", "question", gen=1))
    dialog.add(Line(2, "out", "answer", None, False, 2, ours=True))  # written, not sent
    assert dialog.render() == [("in", "question")]
    dialog.add(line(3, "out", "answer", gen=3, message_id=77))  # ingest stored our copy
    dialog.sent(2, "answer", 77, gen=4)
    assert dialog.render() == [("in", "question"), ("out", "answer")]
    assert dialog.sent_by_us(77)


def test_a_dead_reply_never_shows() -> None:
    dialog = Dialog(turns=10)
    dialog.add(Line(2, "out", "answer", None, False, 2, ours=True))
    dialog.drop(2)
    assert dialog.lines == []


def test_loading_keeps_what_arrived_during_the_read() -> None:
    dialog = Dialog(turns=10)
    dialog.add(line(9, "in", "stale", gen=1))  # before the read: the database knows better
    dialog.add(line(12, "in", "new", gen=5))  # during the read
    dialog.add(Line(11, "out", "pending reply", None, False, 2, ours=True))
    dialog.load([(8, "in", "old question", None), (10, "out", "old answer", 5)], since_gen=3)
    assert [x.id for x in dialog.lines] == [8, 10, 11, 12]
    assert dialog.render() == [("in", "old question"), ("out", "old answer"), ("in", "new")]
    assert dialog.loaded


def test_handed_rows_wait_for_a_decision_in_telegram_order() -> None:
    chats = Chats(20, lambda _key: False)
    chats.trusted = True
    chats.hand_over(inbound(11, 6))
    chats.hand_over(inbound(10, 5))
    chats.hand_over(inbound(10, 5))  # handed twice: kept once
    state = chats.get(KEY)
    assert state.work_known
    assert [r.message_id for r in state.undecided()] == [5, 6]
    assert chats.rows == 2
    chats.decided(state, [inbound(10, 5)])
    assert [r.id for r in state.undecided()] == [11]
    assert chats.rows == 1


def test_in_a_group_the_dialog_names_each_sender() -> None:
    chats = Chats(20, lambda _key: False)
    state = chats.get(KEY)
    chats.dialog(state)
    assert state.dialog is not None
    state.dialog.loaded = True
    chats.hand_over(InboundRow(1, 7, 1, 100, 1, 42, "hi all", 0, NOW, NOW, stored_at=1.0))
    chats.hand_over(InboundRow(2, 7, 1, 100, 2, 42, "morning", FLAG_GROUP, NOW, NOW))
    chats.hand_over(
        InboundRow(3, 7, 1, 100, 3, 43, "@me you?", FLAG_GROUP, NOW, NOW, None, "olga", 1.0)
    )
    assert state.dialog.render() == [
        ("in", "hi all"),  # a private chat: nobody to tell apart
        ("in", "user 42: morning"),  # no username
        ("in", "@olga: @me you?"),
    ]


def test_before_the_first_sweep_a_chats_work_is_not_known() -> None:
    chats = Chats(20, lambda _key: False)
    chats.hand_over(inbound(10, 5))
    assert not chats.get(KEY).work_known  # a previous process may have left work


def test_loading_rows_replaces_what_the_database_decided_and_keeps_new_ones() -> None:
    chats = Chats(20, lambda _key: False)
    chats.hand_over(inbound(10, 5))  # handed before the read, decided elsewhere since
    state = chats.get(KEY)
    since = chats.gen()
    chats.hand_over(inbound(12, 7))  # handed during the read
    chats.load_rows(state, [inbound(11, 6)], since)
    assert [r.id for r in state.undecided()] == [11, 12]
    assert chats.rows == 2
    assert state.work_known


def test_a_full_memory_falls_back_to_the_database() -> None:
    chats = Chats(20, lambda _key: False, max_rows=1)
    chats.trusted = True
    chats.hand_over(inbound(10, 5))
    chats.hand_over(inbound(11, 6))
    state = chats.get(KEY)
    assert [r.id for r in state.undecided()] == [10]
    assert not state.work_known  # the next turn reads the chat


def test_only_idle_unpinned_chats_are_forgotten() -> None:
    pinned = {(1, 1)}
    chats = Chats(20, lambda key: key in pinned, max_chats=3)
    chats.trusted = True
    chats.get((1, 1))  # pinned: being processed
    chats.hand_over(inbound(10, 5, chat=2))  # holds a message
    idle = chats.get((1, 3))
    chats.hand_over(inbound(11, 5, chat=4))  # needs room: the idle one goes
    assert chats.peek((1, 3)) is None and idle.idle()
    assert [k for k in [(1, 1), (1, 2), (1, 4)] if chats.peek(k) is None] == []
    assert [r.id for r in chats.get((1, 4)).undecided()] == [11]
    chats.get((1, 5))  # nothing idle: the bound gives before a message is dropped
    assert len(chats) == 4


def test_forget_and_unknown() -> None:
    chats = Chats(20, lambda _key: False)
    chats.trusted = True
    state = chats.get(KEY)
    state.user_id = 7
    state.set_config(automation.ChatConfig(chat_id=3, mode="digital_twin"), until=1e12)
    chats.dialog(state).loaded = True
    chats.forget(lambda s: s.user_id == 8)
    assert state.config is not None
    chats.forget(lambda s: s.user_id == 7)
    assert state.config is None and state.policy is None
    chats.unknown(lambda s: s.key == KEY)
    assert not state.work_known and state.dialog is not None and not state.dialog.loaded


def test_an_invalid_config_is_kept_as_its_error() -> None:
    chats = Chats(20, lambda _key: False)
    state = chats.get(KEY)
    state.set_config(automation.ChatConfig(chat_id=3, response_probability=2.0), until=1e12)
    assert isinstance(state.policy, ValueError)


def test_dialogs_are_bounded_apart_from_states() -> None:
    chats = Chats(20, lambda _key: False, max_dialogs=2)
    states = [chats.get((1, n)) for n in range(3)]
    for state in states:
        chats.dialog(state)
    assert [s.dialog is not None for s in states] == [False, True, True]
