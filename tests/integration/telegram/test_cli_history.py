"""`vibee history import` against the sim: resumable, idempotent, refuses a live session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.integration.telegram.test_daemon_sessions import vibee_user
from tests.integration.telegram.world import SimWorld
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import sessions
from vibee.telegram.session_store import seal


def history(session: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vibee", "history", "import", "--session", str(session)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


async def test_history_import_twice_and_a_live_session(
    clean_env: Path, db_url: str, sim_world: SimWorld
) -> None:
    keys = clean_env.parent / "session_keys"
    keys.write_text(new_keyring_text() + "\n")
    keyring = Keyring.parse("session_keys", keys.read_text())
    env = {
        "VIBEE_DATABASE__URL": db_url,
        "VIBEE_TELEGRAM__BACKEND": "sim",
        "VIBEE_TELEGRAM__SIM_URL": sim_world.url,
        "VIBEE_SECURITY__SESSION_KEYS_FILE": str(keys),
    }
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        user = await vibee_user(pool)
        account = await sim_world.account()
        friend, _ = await sim_world.user()
        chat = await sim_world.chat("private", [account.user_id, friend])
        for i in range(7):
            await sim_world.inject(chat, friend, f"old message {i}")
        row = await sessions.create(pool, user, account.phone)
        assert account.credential is not None
        sealed, key_id = seal(keyring, row.id, account.credential)
        await sessions.save_authorized(pool, user, row.id, account.user_id, sealed, key_id)

        first = history(row.id, env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "imported 7 messages from 1 chats; 0 embedded for the twin"
        assert "chats 1/1" in first.stderr
        again = history(row.id, env)
        assert again.stdout.startswith("imported 0 messages")
        states = await pool.fetch(
            "SELECT state, count(*) AS n FROM messages WHERE session_id = $1 GROUP BY state",
            row.id,
        )
        assert {r["state"]: r["n"] for r in states} == {"done": 7}  # never answered

        await sessions.set_state(pool, row.id, "connected")
        live = history(row.id, env)
        assert live.returncode == 1 and "stop it first" in live.stderr
        missing = history(987654, env)
        assert missing.returncode == 1 and missing.stderr.strip() == "no session 987654"
    finally:
        await pool.close()
