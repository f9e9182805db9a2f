"""Supervisor: crash injection, strategies, intensity, ordering, shutdown, dynamic children."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from vibee.runtime import (
    ChildSpec,
    ChildStartError,
    DuplicateChildError,
    NoSuchChild,
    Restart,
    RestartPolicy,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    SupervisorNotRunning,
)

from .helpers import Boom, Worker, crash, current, eventually, no_new_tasks, service, worker

FAST = RestartPolicy(max_restarts=100, period=60.0, backoff_base=0.0)


def specs(journal: list[str], *names: str, timeout: float = 1.0) -> list[ChildSpec]:
    return [ChildSpec(n, worker(n, journal), shutdown_timeout=timeout) for n in names]


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", "b", "c"), policy=FAST)
        await sup.start()
        assert sup.healthy
        assert sup.names() == ["a", "b", "c"]
        await sup.stop()
        assert journal == ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]
        assert not sup.healthy
        assert sup.done.done() and sup.done.exception() is None


async def test_crashing_child_is_restarted_with_exponential_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    policy = RestartPolicy(max_restarts=10, period=60.0, backoff_base=0.05, backoff_max=0.15)
    caplog.set_level(logging.INFO, logger="vibee.runtime")
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a"), policy=policy)
        await sup.start()
        for _ in range(4):
            started = time.monotonic()
            await crash(sup, "a")
            waited = time.monotonic() - started
        # the 4th restart waited the capped delay (lower bound only: load makes it later)
        assert waited >= 0.15 * 0.9
        delays = [r.__dict__["delay"] for r in caplog.records if r.getMessage() == "restarting"]
        assert delays == [0.05, 0.1, 0.15, 0.15]
        crashes = [r for r in caplog.records if r.getMessage() == "child crashed"]
        assert len(crashes) == 4
        assert all(r.exc_info and r.exc_info[0] is Boom for r in crashes)
        assert {r.__dict__["actor"] for r in crashes} == {"a"}
        assert "Boom: a crashed" in caplog.text  # the traceback is in the log
        assert journal.count("start:a") == 5
        await sup.stop()


async def test_exceeding_intensity_stops_children_in_reverse_and_fails_upward() -> None:
    journal: list[str] = []
    policy = RestartPolicy(max_restarts=2, period=60.0, backoff_base=0.0)
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", "b", "c"), policy=policy)
        await sup.start()
        await crash(sup, "c")
        await crash(sup, "c")
        journal.clear()
        await current(sup, "c").tell("crash")  # third restart within the period: too many
        with pytest.raises(SupervisorGaveUp) as gave_up:
            await asyncio.wait_for(sup.wait(), 5)
        assert isinstance(gave_up.value.__cause__, Boom)
        assert journal == ["stop:c", "stop:b", "stop:a"]
        assert not sup.healthy
        assert sup.get("a") is None


async def test_restarts_outside_the_period_do_not_accumulate() -> None:
    journal: list[str] = []
    now = [0.0]
    policy = RestartPolicy(max_restarts=2, period=30.0, backoff_base=0.0)
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a"), policy=policy, clock=lambda: now[0])
        await sup.start()
        for _ in range(6):
            await crash(sup, "a")
            now[0] += 31.0
        assert sup.healthy
        await sup.stop()


async def test_one_for_one_restarts_only_the_failed_child() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", "b", "c"), policy=FAST)
        await sup.start()
        a, c = current(sup, "a"), current(sup, "c")
        journal.clear()
        await crash(sup, "b")
        assert journal == ["stop:b", "start:b"]
        assert current(sup, "a") is a and current(sup, "c") is c
        await sup.stop()


async def test_rest_for_one_restarts_exactly_the_later_siblings() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor(
            "root", specs(journal, "a", "b", "c", "d"), strategy=Strategy.REST_FOR_ONE, policy=FAST
        )
        await sup.start()
        a = current(sup, "a")
        old = {n: current(sup, n) for n in "bcd"}
        journal.clear()
        await crash(sup, "b")
        await eventually(lambda: sup.get("d") is not None and sup.get("d") is not old["d"])
        assert journal == ["stop:b", "stop:d", "stop:c", "start:b", "start:c", "start:d"]
        assert current(sup, "a") is a
        assert all(current(sup, n) is not old[n] for n in "bcd")
        await sup.stop()


async def test_one_for_all_restarts_every_child() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor(
            "root", specs(journal, "a", "b", "c"), strategy=Strategy.ONE_FOR_ALL, policy=FAST
        )
        await sup.start()
        old = {n: current(sup, n) for n in "abc"}
        journal.clear()
        await crash(sup, "b")
        await eventually(lambda: sup.get("c") is not None and sup.get("c") is not old["c"])
        assert journal == ["stop:b", "stop:c", "stop:a", "start:a", "start:b", "start:c"]
        assert all(current(sup, n) is not old[n] for n in "abc")
        await sup.stop()


async def test_stuck_child_is_cancelled_at_its_shutdown_timeout() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", "b", timeout=0.05), policy=FAST)
        await sup.start()
        stuck = current(sup, "b")
        await stuck.tell("block")
        await eventually(lambda: stuck.qsize() == 0)
        await asyncio.wait_for(sup.stop(), 5)
        assert stuck.done.cancelled()
        assert journal[-2:] == ["stop:b", "stop:a"]


async def test_graceful_stop_drains_mailboxes() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a"), policy=FAST)
        await sup.start()
        a = current(sup, "a")
        for n in range(5):
            assert a.try_tell(f"m{n}")
        await sup.stop()
        assert a.handled == ["m0", "m1", "m2", "m3", "m4"]
        assert not a.done.cancelled()


async def test_cancelling_the_supervisor_propagates_and_cancels_children() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", "b"), policy=FAST)
        await sup.start()
        children = [current(sup, "a"), current(sup, "b")]
        sup.done.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sup.done
        assert all(c.done.cancelled() for c in children)
        assert journal[-2:] == ["stop:b", "stop:a"]


async def test_cancelling_a_caller_of_stop_propagates() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", timeout=30), policy=FAST)
        await sup.start()
        a = current(sup, "a")
        await a.tell("block")
        stopper = asyncio.create_task(sup.stop())
        await asyncio.sleep(0.02)
        stopper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopper
        await eventually(lambda: sup.done.done())
        assert sup.done.cancelled() and a.done.cancelled()


@pytest.mark.parametrize(
    ("restart", "outcome", "restarted"),
    [
        (Restart.PERMANENT, "return", True),
        (Restart.PERMANENT, "crash", True),
        (Restart.TRANSIENT, "return", False),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TEMPORARY, "crash", False),
        (Restart.TEMPORARY, "return", False),
    ],
)
async def test_restart_types(restart: Restart, outcome: str, restarted: bool) -> None:
    journal: list[str] = []
    policy = RestartPolicy(max_restarts=1, period=60.0, backoff_base=0.0)
    async with no_new_tasks():
        # "x" runs once, ends (return or crash); if restarted, its 2nd incarnation runs forever
        runs = iter([outcome, "forever", "forever"])
        spec = ChildSpec("x", lambda: service("x", journal, next(runs))(), restart=restart)
        sup = Supervisor("root", [ChildSpec("a", worker("a", journal)), spec], policy=policy)
        await sup.start()
        if restarted:
            await eventually(lambda: journal.count("run:x") == 2)
            assert sup.names() == ["a", "x"]
        else:
            await eventually(lambda: sup.names() == ["a"])  # not restarted: removed
            await asyncio.sleep(0.02)
            assert journal.count("run:x") == 1
        assert sup.healthy
        await sup.stop()


async def test_dynamic_children_are_added_restarted_and_removed() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        sessions = Supervisor("sessions", policy=FAST, concurrent_stop=True)
        await sessions.start()
        names = [f"session:{i}" for i in range(300)]
        async with asyncio.TaskGroup() as tg:
            for name in names:
                tg.create_task(sessions.add_child(ChildSpec(name, worker(name, journal))))
        assert len(sessions) == 300
        before = {n: current(sessions, n) for n in names}

        with pytest.raises(DuplicateChildError):
            await sessions.add_child(ChildSpec("session:7", worker("session:7", journal)))

        await crash(sessions, "session:7")
        assert all(current(sessions, n) is before[n] for n in names if n != "session:7")

        gone = current(sessions, "session:9")
        await sessions.remove_child("session:9")
        assert gone.done.done() and "stop:session:9" in journal
        assert sessions.get("session:9") is None and len(sessions) == 299
        with pytest.raises(NoSuchChild):
            await sessions.remove_child("session:9")

        await sessions.stop()
        assert journal.count("stop:session:1") == 1
        assert all(not current_or_none.running for current_or_none in before.values())


async def test_removed_child_waiting_for_its_restart_is_not_restarted() -> None:
    journal: list[str] = []
    policy = RestartPolicy(max_restarts=10, period=60.0, backoff_base=0.2)
    async with no_new_tasks():
        sup = Supervisor("root", specs(journal, "a", "b"), policy=policy)
        await sup.start()
        await current(sup, "b").tell("crash")
        await eventually(lambda: sup.get("b") is None)
        await sup.remove_child("b")
        await asyncio.sleep(0.3)
        assert journal.count("start:b") == 1
        assert sup.names() == ["a"]
        await sup.stop()


async def test_add_child_needs_a_running_supervisor() -> None:
    sup = Supervisor("root")
    with pytest.raises(SupervisorNotRunning):
        await sup.add_child(ChildSpec("a", worker("a", [])))


async def test_start_failure_stops_the_started_children_in_reverse() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        children = [
            ChildSpec("a", worker("a", journal)),
            ChildSpec("b", worker("b", journal)),
            ChildSpec("c", worker("c", journal, fail_start=True)),
            ChildSpec("d", worker("d", journal)),
        ]
        sup = Supervisor("root", children, policy=FAST)
        with pytest.raises(ChildStartError) as error:
            await sup.start()
        assert isinstance(error.value.__cause__, Boom)
        assert journal == ["start:a", "start:b", "start:c", "stop:b", "stop:a"]
        assert not sup.healthy


async def test_failing_restarts_count_toward_intensity() -> None:
    journal: list[str] = []
    policy = RestartPolicy(max_restarts=3, period=60.0, backoff_base=0.0)
    incarnations = iter(range(100))

    def flaky() -> Worker:
        return Worker("a", journal, fail_start=next(incarnations) > 0)

    async with no_new_tasks():
        sup = Supervisor("root", [ChildSpec("a", flaky)], policy=policy)
        await sup.start()
        await current(sup, "a").tell("crash")
        with pytest.raises(SupervisorGaveUp) as gave_up:
            await asyncio.wait_for(sup.wait(), 5)
        assert isinstance(gave_up.value.__cause__, Boom)
        assert journal.count("start:a") == 4  # the first, then 3 failed restarts


async def test_nested_supervisor_that_gives_up_is_restarted_by_its_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    inner_policy = RestartPolicy(max_restarts=0, period=60.0, backoff_base=0.0)
    inners: list[Supervisor] = []

    def make_inner() -> Supervisor:
        inner = Supervisor("inner", specs(journal, "w"), policy=inner_policy)
        inners.append(inner)
        return inner

    async with no_new_tasks():
        root = Supervisor(
            "root",
            [ChildSpec("first", worker("first", journal)), ChildSpec("inner", make_inner)],
            policy=FAST,
        )
        await root.start()
        await current(inners[0], "w").tell("crash")
        await eventually(lambda: len(inners) == 2 and inners[1].healthy)
        assert isinstance(inners[0].done.exception(), SupervisorGaveUp)
        assert root.healthy and root.get("inner") is inners[1]
        assert any(
            r.exc_info and r.exc_info[0] is SupervisorGaveUp
            for r in caplog.records
            if r.getMessage() == "child crashed"
        )
        journal.clear()
        await root.stop()
        assert journal == ["stop:w", "stop:first"]


async def test_run_as_root_until_the_stop_event() -> None:
    journal: list[str] = []
    ready: list[bool] = []
    async with no_new_tasks():
        stop = asyncio.Event()
        root = Supervisor("root", specs(journal, "a", "b"), policy=FAST)
        runner = asyncio.create_task(root.run(stop, on_ready=lambda: ready.append(root.healthy)))
        await eventually(lambda: bool(ready))
        assert ready == [True]
        stop.set()
        await asyncio.wait_for(runner, 5)
        assert journal == ["start:a", "start:b", "stop:b", "stop:a"]


async def test_run_as_root_raises_when_the_tree_gives_up() -> None:
    journal: list[str] = []
    policy = RestartPolicy(max_restarts=0, period=60.0, backoff_base=0.0)
    async with no_new_tasks():
        root = Supervisor("root", specs(journal, "a"), policy=policy)
        runner = asyncio.create_task(root.run(asyncio.Event()))
        await eventually(lambda: root.healthy)
        await current(root, "a").tell("crash")
        with pytest.raises(SupervisorGaveUp):
            await asyncio.wait_for(runner, 5)


async def test_cancelling_run_stops_the_tree_and_propagates() -> None:
    journal: list[str] = []
    async with no_new_tasks():
        root = Supervisor("root", specs(journal, "a"), policy=FAST)
        runner = asyncio.create_task(root.run(asyncio.Event()))
        await eventually(lambda: root.healthy)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert journal == ["start:a", "stop:a"]
