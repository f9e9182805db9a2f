"""`vibee run` as systemd runs it: a subprocess with a temporary state directory, a fake
$NOTIFY_SOCKET, the admin endpoint over HTTP, signals, and the database going away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import pg_ctl


class Daemon:
    """A running `vibee run` whose JSON log lines are collected by a reader thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vibee", "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VIBEE_ADMIN__PORT": "0", "VIBEE_SERVER__PORT": "0", **env},
        )
        self.records: list[dict[str, object]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.decode()
            self.raw.append(text)
            self.records.append(orjson.loads(text))  # every line must be one JSON object

    def wait_for(self, msg: str, deadline_s: float = 60) -> dict[str, object]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for record in list(self.records):
                if record["msg"] == msg:
                    return record
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{msg!r} not logged; output: {''.join(self.raw)}")

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.wait_for('admin listening')['port']}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.admin + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            return messages


def wait_until(predicate: object, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def postgres_running(datadir: Path) -> bool:
    pidfile = datadir / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text().splitlines()[0]), 0)
    except ProcessLookupError:
        return False
    return True


def test_ready_metrics_systemd_and_graceful_stop(
    clean_env: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    daemon = Daemon({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        daemon.wait_for("vibee ready")
        status, body = daemon.get("/health/ready")
        assert status == 200, body
        assert orjson.loads(body)["checks"] == {"database": "ok", "supervisor": "ok"}
        assert daemon.get("/health/live")[0] == 200
        status, metrics = daemon.get("/metrics")
        text = metrics.decode()
        assert status == 200 and "process_resident_memory_bytes" in text
        assert "# TYPE vibee_actor_restarts_total counter" in text
        assert "vibee_queue_depth" in text
        for name in ("jwt_keys", "session_keys", "admin_token"):
            assert (clean_env / "secrets" / name).stat().st_mode & 0o077 == 0
        secret = (clean_env / "secrets" / "admin_token").read_text().strip()
        assert secret not in "".join(daemon.raw) and secret not in text

        time.sleep(1.0)  # a few watchdog intervals (0.2 s each)
        first = received(sock)
        assert any(m.splitlines()[0] == "READY=1" for m in first)
        assert sum(m == "WATCHDOG=1" for m in first) >= 2
        assert postgres_running(clean_env / "pg")

        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
        assert any(m.startswith("STOPPING=1") for m in received(sock))
        assert not postgres_running(clean_env / "pg")
    finally:
        daemon.stop()


def test_readiness_follows_the_database(clean_env: Path) -> None:
    daemon = Daemon({})
    datadir = clean_env / "pg"
    try:
        daemon.wait_for("vibee ready")
        assert daemon.get("/health/ready")[0] == 200
        pg_ctl(datadir, "stop", "-m", "fast", "-w")

        def not_ready() -> bool:
            status, body = daemon.get("/health/ready")
            return status == 503 and orjson.loads(body)["failing"] == ["database"]

        wait_until(not_ready)
        assert daemon.get("/health/live")[0] == 200  # alive, just not ready
        pg_ctl(datadir, "start", "-w", "-o", f"-h '' -k {datadir}", "-l", str(datadir / "log"))
        wait_until(lambda: daemon.get("/health/ready")[0] == 200)
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.stop()


def test_missing_keyring_is_one_clear_line(clean_env: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vibee", "run"],
        capture_output=True,
        text=True,
        env={**os.environ, "VIBEE_DATABASE__URL": "postgresql://u@127.0.0.1:1/x"},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("jwt_keys: not provided; put it in")
    assert "Traceback" not in result.stderr


def test_start_failure_exits_non_zero_with_the_reason(clean_env: Path) -> None:
    keyring = "k1:" + "A" * 43 + "="
    daemon = Daemon(
        {
            "VIBEE_DATABASE__URL": "postgresql://nobody:pw-hidden@127.0.0.1:1/none",
            "VIBEE_JWT_KEYS": keyring,
            "VIBEE_SESSION_KEYS": keyring,
        }
    )
    try:
        assert daemon.proc.wait(timeout=60) == 1
        daemon._reader.join(timeout=10)
        record = daemon.wait_for("vibee could not start", 1)
        assert "cannot connect to postgresql://nobody:***@127.0.0.1:1/none" in str(record["error"])
        assert "pw-hidden" not in "".join(daemon.raw)
    finally:
        daemon.stop()
