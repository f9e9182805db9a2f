"""`vibee demo` as a new user runs it: one command, a narrated conversation, clean exit."""

from __future__ import annotations

import os
import subprocess
import sys
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
    assert "not answered: no trigger word" in out  # 'Работаю' is not a trigger
    assert "Done: 3 messages sent by VIBEE, 1 leads captured." in out
    assert "Traceback" not in result.stderr
    assert leftovers() == before
