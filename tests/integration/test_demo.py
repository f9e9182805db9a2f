"""`vibee demo` as a new user runs it: one command, a narrated conversation, clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def leftovers() -> list[str]:
    """Processes still using a demo directory (postgres) or started as its simulators."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "vibee-demo-" in line]


def test_demo_narrates_and_leaves_nothing_behind(clean_env: Path) -> None:
    before = leftovers()
    result = subprocess.run(
        [sys.executable, "-m", "vibee", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "answered as the owner's digital twin" in out
    assert "VIBEE: 'Sim reply" in out
    assert "not answered: this chat is only observed" in out
    assert "not answered: the sender is a bot" in out
    assert "lead captured; the owner gets a card" in out
    assert "lead already captured this hour" in out
    assert "no lead: no trigger word" in out  # 'Работаю' is not a trigger
    assert "(in one reply with the message after it)" in out
    assert "Done: VIBEE sent 2 replies and 1 lead card; 1 lead captured." in out
    assert "Traceback" not in result.stderr
    assert leftovers() == before


def test_ctrl_c_while_the_demo_starts_leaves_nothing_behind(clean_env: Path) -> None:
    before = leftovers()
    for after_s in (0.5, 0.8, 1.2, 2.0):  # while the embedded Postgres is being created and started
        demo = subprocess.Popen(
            [sys.executable, "-m", "vibee", "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ,
            start_new_session=True,  # its own process group, as in a terminal
        )
        time.sleep(after_s)
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        _, err = demo.communicate(timeout=60)
        assert demo.returncode == 130, err
        assert "Traceback" not in err
        assert leftovers() == before, after_s
