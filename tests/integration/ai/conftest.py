"""The fake providers (`vibee sim llm`) as a real process on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def sim_llm() -> Iterator[str]:
    """Base URL of a running fake-provider server."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee.sim.llm", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(timeout=10)
