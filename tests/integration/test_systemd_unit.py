"""vibee.service passes `systemd-analyze verify` cleanly and scores exposure <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "vibee.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package 'systemd')"
)


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's vibee (verify checks it exists)."""
    vibee = Path(sys.executable).with_name("vibee")
    assert vibee.exists()
    text = UNIT.read_text().replace("/opt/vibee/.venv/bin/vibee", str(vibee))
    copy = tmp_path / "vibee.service"
    copy.write_text(text)
    return copy


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=vibee",
        "DynamicUser=yes",
        "LoadCredential=jwt_keys:",
        "LoadCredential=session_keys:",
        "LoadCredential=admin_token:",
        "LoadCredential=telegram_api_hash:",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=\n",
    ):
        assert setting in text, setting


def test_verify_reports_nothing(unit: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # a misspelled key only warns with exit 0, so any output at all is a failure
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result


def test_security_exposure_at_most_2(unit: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
    assert result.returncode == 0
