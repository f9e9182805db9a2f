"""`vibee login` in a terminal against the sim, then `vibee run` picks the account up;
`vibee keys rotate` re-encrypts it while it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.integration.telegram.world import ControlError, SimWorld, eventually
from tests.integration.test_run import Daemon


def vibee(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vibee", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


@pytest.fixture
def env(clean_env: Path, db_url: str, sim_url: str) -> dict[str, str]:
    return {
        "VIBEE_DATABASE__URL": db_url,
        "VIBEE_TELEGRAM__BACKEND": "sim",
        "VIBEE_TELEGRAM__SIM_URL": sim_url,
        "VIBEE_JWT_KEYS": "k1:" + "A" * 43 + "=",
        "VIBEE_ADMIN_TOKEN": "admin-token-for-tests",
        "VIBEE_SECURITY__SESSION_KEYS_FILE": str(clean_env.parent / "session_keys"),
    }


async def test_login_in_a_terminal_then_run_and_rotate(
    env: dict[str, str], clean_env: Path, sim_world: SimWorld
) -> None:
    keys_file = Path(env["VIBEE_SECURITY__SESSION_KEYS_FILE"])
    keys_file.write_text("old:" + "B" * 43 + "=\n")
    phone = f"+1777{os.getpid() % 100000:05d}1"
    await sim_world.request("POST", "/accounts", {"phone": phone, "password": "pw-two-step"})
    assert vibee("user", "create", "owner", env=env, stdin="long enough pw\n").returncode == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee", "login", "--user", "owner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{phone}\n")
    proc.stdin.flush()

    async def code() -> str | None:
        if proc.poll() is not None:  # it gave up before asking for the code: say why
            raise AssertionError(f"vibee login exited: {proc.communicate()}")
        try:
            return await sim_world.login_code(phone)
        except ControlError:
            return None

    real = await eventually(code)
    # a wrong code first: a clear message and another try; the same for the password
    out, err = proc.communicate(f"11111\n{real}\nwrong password\npw-two-step\n", timeout=60)
    assert proc.returncode == 0, err
    assert "The code is wrong: check it and try again." in out
    assert "The password is wrong: try again." in out
    assert "connected: session " in out and "Traceback" not in err

    daemon = Daemon(env)
    try:
        daemon.wait_for("vibee ready")
        admin_token = env["VIBEE_ADMIN_TOKEN"]

        def sessions() -> list[dict[str, object]]:
            request = urllib.request.Request(
                daemon.admin + "/admin/sessions",
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return list(json.loads(response.read())["sessions"])

        end = time.monotonic() + 30
        while time.monotonic() < end and [s["state"] for s in sessions()] != ["connected"]:
            time.sleep(0.1)
        assert [s["state"] for s in sessions()] == ["connected"]

        rotated = vibee("keys", "rotate", env=env)
        assert rotated.returncode == 0, rotated.stderr
        assert "re-encrypted 1 credentials" in rotated.stdout
        assert keys_file.read_text().splitlines()[1].startswith("old:")
        assert "sessions" in (await _metrics(daemon.admin))
    finally:
        daemon.stop()


async def _metrics(admin: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(admin + "/metrics") as response:
        text = await response.text()
    assert 'vibee_sessions{state="connected"} 1.0' in text
    return text
