"""`vibee run` as a user starts it: embedded Postgres, migrated, JSON logs, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson


def wait_for_line(proc: subprocess.Popen[bytes], needle: str, deadline_s: float) -> list[str]:
    """Lines read from ``proc.stdout`` up to and including one containing ``needle``."""
    assert proc.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = proc.stdout.readline().decode()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen; output so far: {seen}")


def postgres_running(datadir: Path) -> bool:
    pidfile = datadir / "postmaster.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_starts_embedded_database_and_stops_on_sigterm(clean_env: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "VIBEE_ADMIN__PORT": "0", "VIBEE_SERVER__PORT": "0"},
    )
    try:
        lines = wait_for_line(proc, "vibee ready", 60)
        records = [orjson.loads(line) for line in lines]  # every line is one JSON object
        assert {"ts", "level", "logger", "msg"} <= set(records[-1])
        assert postgres_running(clean_env / "pg")
        for name in ("jwt_keys", "session_keys", "admin_token"):
            assert (clean_env / "secrets" / name).stat().st_mode & 0o077 == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not postgres_running(clean_env / "pg")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
