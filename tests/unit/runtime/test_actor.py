"""Actor and Service: backpressure, ask, stop, cancellation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from vibee.runtime import Actor, ActorStopped, Service
from vibee.runtime.actor import stop_task

from .helpers import Boom, eventually, no_new_tasks


@dataclass(frozen=True, slots=True)
class Job:
    n: int


class Gated(Actor[Job, int]):
    """Handles a message only once ``gate`` is set; records what it handled."""

    def __init__(self, name: str = "gated", size: int = 2) -> None:
        super().__init__(name, mailbox_size=size)
        self.gate = asyncio.Event()
        self.handled: list[int] = []
        self.stopped = False

    async def handle(self, message: Job) -> int:
        await self.gate.wait()
        if message.n < 0:
            raise Boom(f"job {message.n}")
        self.handled.append(message.n)
        return message.n * 10

    async def on_stop(self) -> None:
        self.stopped = True


async def test_mailbox_must_be_bounded() -> None:
    with pytest.raises(ValueError, match="bounded"):
        Actor[Job, None]("x", mailbox_size=0)


async def test_full_mailbox_blocks_tell_and_fails_try_tell() -> None:
    async with no_new_tasks():
        actor = Gated(size=2)
        await actor.start()
        await actor.tell(Job(1))
        await eventually(lambda: actor.qsize() == 0)  # taken, blocked in handle
        await actor.tell(Job(2))
        assert actor.try_tell(Job(3)) is True
        assert actor.qsize() == 2
        assert actor.try_tell(Job(4)) is False  # full: refused at once

        blocked = asyncio.create_task(actor.tell(Job(5)))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # backpressure: tell waits for space

        actor.gate.set()
        await asyncio.wait_for(blocked, 5)
        await eventually(lambda: actor.handled == [1, 2, 3, 5])
        await actor.stop(1.0)


async def test_ask_returns_the_answer_and_times_out() -> None:
    async with no_new_tasks():
        actor = Gated()
        await actor.start()
        await actor.tell(Job(0))  # the actor is busy with this one until the gate opens
        with pytest.raises(TimeoutError):
            await actor.ask(Job(1), timeout=0.05)
        actor.gate.set()
        assert await actor.ask(Job(2), timeout=5) == 20
        # the timed-out ask was skipped: its caller had given up before the actor reached it
        assert actor.handled == [0, 2]
        await actor.stop(1.0)


async def test_ask_timeout_covers_waiting_for_mailbox_space() -> None:
    async with no_new_tasks():
        actor = Gated(size=1)
        await actor.start()
        await actor.tell(Job(1))
        await eventually(lambda: actor.qsize() == 0)
        await actor.tell(Job(2))  # mailbox full now
        with pytest.raises(TimeoutError):
            await actor.ask(Job(3), timeout=0.05)
        actor.gate.set()
        await actor.stop(1.0)
        assert actor.handled == [1, 2]


async def test_ask_gets_the_crash_and_the_actor_ends() -> None:
    async with no_new_tasks():
        actor = Gated()
        actor.gate.set()
        await actor.start()
        with pytest.raises(Boom):
            await actor.ask(Job(-1), timeout=5)
        await eventually(lambda: actor.done.done())
        assert isinstance(actor.done.exception(), Boom)
        assert actor.stopped
        with pytest.raises(ActorStopped):
            await actor.tell(Job(1))


async def test_stop_drains_the_mailbox_and_refuses_new_messages() -> None:
    async with no_new_tasks():
        actor = Gated(size=10)
        await actor.start()
        for n in range(5):
            await actor.tell(Job(n))
        stopping = asyncio.create_task(actor.stop(5.0))
        await asyncio.sleep(0)
        with pytest.raises(ActorStopped):
            await actor.tell(Job(99))
        with pytest.raises(ActorStopped):
            actor.try_tell(Job(99))
        actor.gate.set()
        await stopping
        assert actor.handled == [0, 1, 2, 3, 4]
        assert actor.stopped
        assert actor.done.done() and not actor.done.cancelled()


async def test_stuck_actor_is_cancelled_at_the_timeout_and_pending_asks_fail() -> None:
    async with no_new_tasks():
        actor = Gated(size=4)
        await actor.start()
        await actor.tell(Job(1))  # never finishes: the gate stays closed
        await eventually(lambda: actor.qsize() == 0)
        pending = asyncio.create_task(actor.ask(Job(2), timeout=30))
        await asyncio.sleep(0)
        await actor.stop(0.05)
        assert actor.done.cancelled()  # CancelledError reached the task: not swallowed
        assert actor.stopped  # on_stop ran anyway
        with pytest.raises(ActorStopped):
            await pending
        assert actor.handled == []


async def test_producers_blocked_on_a_dead_actor_are_released() -> None:
    async with no_new_tasks():
        actor = Gated(size=1)
        await actor.start()
        await actor.tell(Job(1))
        await eventually(lambda: actor.qsize() == 0)
        await actor.tell(Job(2))
        blocked = [asyncio.create_task(actor.tell(Job(n))) for n in range(3, 7)]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in blocked)
        await actor.stop(0.01)
        results = await asyncio.wait_for(asyncio.gather(*blocked, return_exceptions=True), 5)
        assert all(isinstance(r, ActorStopped) for r in results)


async def test_cancelling_an_asker_propagates_and_leaves_the_actor_alive() -> None:
    async with no_new_tasks():
        actor = Gated()
        await actor.start()
        asker = asyncio.create_task(actor.ask(Job(1), timeout=30))
        await asyncio.sleep(0.01)
        asker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asker
        actor.gate.set()
        assert await actor.ask(Job(2), timeout=5) == 20
        assert actor.running
        await actor.stop(1.0)


async def test_cancelling_the_stopper_cancels_the_actor() -> None:
    async with no_new_tasks():
        actor = Gated()
        await actor.start()
        await actor.tell(Job(1))  # blocks in handle
        stopper = asyncio.create_task(actor.stop(30))
        await asyncio.sleep(0.01)
        stopper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopper
        await eventually(lambda: actor.done.done())
        assert actor.done.cancelled()


async def test_an_actor_can_exit_normally_by_itself() -> None:
    class Once(Actor[str, None]):
        async def handle(self, message: str) -> None:
            self.request_stop()

    async with no_new_tasks():
        actor = Once("once")
        await actor.start()
        await actor.tell("bye")
        await asyncio.wait_for(actor.wait(), 5)
        assert actor.done.exception() is None


async def test_stop_task_does_not_raise_the_tasks_failure() -> None:
    async def fail() -> None:
        raise Boom("x")

    task = asyncio.create_task(fail())
    await asyncio.sleep(0)
    await stop_task(task, 1.0, name="x")
    assert isinstance(task.exception(), Boom)


async def test_service_runs_and_is_cancelled_on_stop() -> None:
    journal: list[str] = []

    class Server(Service):
        async def on_start(self) -> None:
            journal.append("bind")

        async def run(self) -> None:
            journal.append("serve")
            await asyncio.Event().wait()

        async def on_stop(self) -> None:
            journal.append("close")

    async with no_new_tasks():
        server = Server("server")
        await server.start()
        await eventually(lambda: "serve" in journal)
        await asyncio.wait_for(server.stop(30), 5)  # not graceful: cancelled at once
        assert journal == ["bind", "serve", "close"]
        assert server.done.cancelled()


async def test_graceful_service_gets_the_stopping_event() -> None:
    async with no_new_tasks():
        svc: Service

        async def run() -> None:
            await svc.stopping.wait()

        svc = Service("graceful", run, graceful=True)
        await svc.start()
        await svc.stop(5)
        assert svc.done.done() and not svc.done.cancelled()
