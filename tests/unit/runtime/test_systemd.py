"""systemd notify against a real AF_UNIX datagram receiver (path and abstract name)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vibee.runtime import Notifier, run_watchdog, watchdog_interval

INTERVAL = 0.05


class Receiver:
    """The fake ``$NOTIFY_SOCKET``: a bound datagram socket we read without blocking."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def messages(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@contextlib.contextmanager
def receiver(kind: str) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    with sock, tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        if kind == "path":
            address = str(Path(tmp) / "notify")
            sock.bind(address)
            yield Receiver(sock, address)
        else:
            name = f"vibee-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield Receiver(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with receiver(request.param) as rx:
        yield rx


async def test_ready_status_stopping_reach_the_socket(notify_socket: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.env_value})
    assert notifier.enabled
    assert notifier.ready(status="up\nand running")
    assert notifier.status("3 sessions")
    assert notifier.stopping()
    notifier.close()
    assert notify_socket.messages() == [
        "READY=1\nSTATUS=up and running",
        "STATUS=3 sessions",
        "STOPPING=1",
    ]


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.ready() is False


def test_a_missing_receiver_is_reported_not_raised() -> None:
    notifier = Notifier("/tmp/vibee-no-such-socket-" + uuid.uuid4().hex)
    assert notifier.ready() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


async def test_watchdog_for_another_pid_does_nothing(
    notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = Notifier(notify_socket.env_value)
    await asyncio.wait_for(run_watchdog(notifier, lambda: True), 1)  # returns at once
    assert notify_socket.messages() == []


async def test_watchdog_pings_at_the_rate_and_stops_while_the_loop_is_blocked(
    notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(2 * INTERVAL * 1e6)))  # ping every half
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    task = asyncio.create_task(run_watchdog(Notifier.from_env(), lambda: True))
    try:
        pings: list[str] = []
        for _ in range(12):  # read as we go: a datagram socket queues only ~10 messages
            await asyncio.sleep(INTERVAL)
            pings += notify_socket.messages()
        assert set(pings) == {"WATCHDOG=1"}
        assert 3 <= len(pings) <= 16  # ~13 in 0.6 s expected; generous for a loaded machine

        time.sleep(6 * INTERVAL)  # block the event loop for six intervals
        assert notify_socket.messages() == []  # not one ping while it was blocked

        await asyncio.sleep(4 * INTERVAL)
        assert len(notify_socket.messages()) >= 1  # pings resume with the loop
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_pings_only_while_healthy(notify_socket: Receiver) -> None:
    healthy = [True]
    notifier = Notifier(notify_socket.env_value)
    task = asyncio.create_task(run_watchdog(notifier, lambda: healthy[0], INTERVAL))
    try:
        await asyncio.sleep(3 * INTERVAL)
        assert notify_socket.messages()
        healthy[0] = False
        notify_socket.messages()  # whatever was sent before the flag flipped
        await asyncio.sleep(6 * INTERVAL)
        assert notify_socket.messages() == []
        healthy[0] = True
        await asyncio.sleep(4 * INTERVAL)
        assert notify_socket.messages()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
