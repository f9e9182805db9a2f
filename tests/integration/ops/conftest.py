"""The ``promtool`` fixture: the test that needs it is skipped, with the reason, without it."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """The ``promtool`` executable."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed: it is in Debian's `prometheus` package, which "
            "scripts/install-system-tools installs when run as root"
        )
    return path
