"""Test doubles and helpers for the runtime tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from vibee.runtime import Actor, Service, Supervisor


class Boom(Exception):
    """The injected crash."""


class Worker(Actor[str, str]):
    """Journals start/stop; ``crash`` raises, ``block`` hangs, ``exit`` ends normally."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        super().__init__(name, mailbox_size=8, queue_label="test_worker")
        self.journal = journal
        self.fail_start = fail_start
        self.handled: list[str] = []

    async def on_start(self) -> None:
        self.journal.append(f"start:{self.name}")
        if self.fail_start:
            raise Boom(f"{self.name} cannot start")

    async def on_stop(self) -> None:
        self.journal.append(f"stop:{self.name}")

    async def handle(self, message: str) -> str:
        if message == "crash":
            raise Boom(f"{self.name} crashed")
        if message == "block":
            await asyncio.Event().wait()
        if message == "exit":
            self.request_stop()
        self.handled.append(message)
        return message


def worker(name: str, journal: list[str], **kwargs: bool) -> Callable[[], Worker]:
    """A factory of fresh :class:`Worker` incarnations."""
    return lambda: Worker(name, journal, **kwargs)


def service(name: str, journal: list[str], outcome: str) -> Callable[[], Service]:
    """A factory of services whose run() ``return``s, ``crash``es or runs ``forever``."""

    async def run() -> None:
        journal.append(f"run:{name}")
        await asyncio.sleep(0)
        if outcome == "crash":
            raise Boom(name)
        if outcome == "forever":
            await asyncio.Event().wait()

    return lambda: Service(name, run)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (generous timeout: a loaded machine is slow)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def no_new_tasks() -> AsyncIterator[None]:
    """Fail if the block leaves a task behind."""
    before = asyncio.all_tasks()
    yield
    for _ in range(5):
        await asyncio.sleep(0)
    leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not leaked, f"tasks left behind: {leaked}"


def current(sup: Supervisor, name: str) -> Worker:
    """The running :class:`Worker` incarnation of child ``name``."""
    child = sup.get(name)
    assert isinstance(child, Worker), f"{name} is not running"
    return child


async def crash(sup: Supervisor, name: str) -> Worker:
    """Crash child ``name`` and wait until its replacement runs; returns the replacement."""
    old = current(sup, name)
    await old.tell("crash")
    await eventually(lambda: isinstance(sup.get(name), Worker) and sup.get(name) is not old)
    return current(sup, name)
