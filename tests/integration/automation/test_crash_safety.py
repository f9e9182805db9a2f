"""kill -9 in the middle of a burst, then restart: every message answered exactly once.

Real processes: `vibee run` (sim backend, fake LLM over HTTP), the sim, Postgres. The sim's
transcripts are the truth: for each chat, the replies it holds must be exactly the replies
VIBEE recorded as sent, each answering different messages, and every message answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import asyncpg

from tests.conftest import pg_ctl, stop_leftover_postgres
from tests.integration.telegram.test_daemon_sessions import authorized_session, vibee_user
from tests.integration.telegram.world import ChatRef, SimWorld, eventually
from tests.integration.test_run import Daemon
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import automation, embedded
from vibee.store.migrate import Migrator
from vibee.telegram.session_store import seal

CHATS = 100
PER_CHAT = 10


async def test_kill_9_during_a_burst_loses_nothing_and_doubles_nothing(
    clean_env: Path, db_url: str, sim_world: SimWorld, sim_llm: str
) -> None:
    keys = clean_env.parent / "session_keys"
    keys.write_text(new_keyring_text() + "\n")
    keyring = Keyring.parse("session_keys", keys.read_text())
    env = {
        "VIBEE_DATABASE__URL": db_url,
        "VIBEE_TELEGRAM__BACKEND": "sim",
        "VIBEE_TELEGRAM__SIM_URL": sim_world.url,
        "VIBEE_TELEGRAM__MESSAGES_PER_MINUTE_PER_CHAT": "1000",
        "VIBEE_SECURITY__SESSION_KEYS_FILE": str(keys),
        "VIBEE_JWT_KEYS": new_keyring_text(),
        "VIBEE_ADMIN_TOKEN": "t" * 20,
        "VIBEE_AI__CHAIN": '["openai"]',
        "VIBEE_AI__PROVIDERS__OPENAI__BASE_URL": f"{sim_llm}/openai/v1",
        "VIBEE_AI__PROVIDERS__OPENAI__MODEL": "sim:latency_ms=20",
        "VIBEE_AI_OPENAI_API_KEY": "sk-test",
        "VIBEE_AI__CACHE_TTL_S": "0",
    }
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        user = await vibee_user(pool)
        account = await sim_world.account()
        row = await authorized_session(pool, user, account)
        assert account.credential is not None
        sealed, key_id = seal(keyring, row, account.credential)  # with the daemon's keyring
        await pool.execute(
            "UPDATE telegram_sessions SET credential = $2, credential_key_id = $3 WHERE id = $1",
            row,
            sealed,
            key_id,
        )
        friends = [(await sim_world.user())[0] for _ in range(CHATS)]
        chats: list[ChatRef] = []
        for friend in friends:
            chat = await sim_world.chat("private", [account.user_id, friend])
            chats.append(chat)
            await automation.set_chat_config(
                pool,
                user,
                row,
                chat.seen_by(account.user_id),
                mode="digital_twin",
                reply_delay_min_s=0.0,
                reply_delay_max_s=0.0,
            )

        first = Daemon(env)
        try:
            first.wait_for("vibee ready")
            await eventually(lambda: _state(pool, row, "connected"), timeout=30)
            items = [
                {"chat_id": chat.chat_id, "from": friend, "text": f"message {k} in {i}"}
                for k in range(PER_CHAT)
                for i, (chat, friend) in enumerate(zip(chats, friends, strict=True))
            ]
            await sim_world.request("POST", "/messages/batch", {"messages": items[:500]})
            await eventually(lambda: _sent_at_least(pool, row, 30), timeout=60)
            os.kill(first.proc.pid, signal.SIGKILL)  # mid-burst, no goodbye
            first.proc.wait(timeout=30)
            assert not await _all_done(pool, row, 500)  # it really died with work left
            await sim_world.request("POST", "/messages/batch", {"messages": items[500:]})
        finally:
            first.stop()

        second = Daemon(env)
        try:
            second.wait_for("vibee ready")
            await eventually(lambda: _all_done(pool, row, CHATS * PER_CHAT), timeout=120)
        finally:
            second.proc.send_signal(signal.SIGTERM)
            second.proc.wait(timeout=60)

        for chat in chats:
            transcript = await sim_world.transcript(chat)
            ours = [m for m in transcript if m["from"] == account.user_id]
            theirs = [m for m in transcript if m["from"] != account.user_id]
            assert len(theirs) == PER_CHAT
            assert ours, f"chat {chat.chat_id} got no reply"
            counts = Counter(m["random_id"] for m in ours)
            assert all(n == 1 for n in counts.values()), counts  # no reply sent twice
            sent = await pool.fetch(
                "SELECT random_id FROM messages WHERE session_id = $1 AND tg_chat_id = $2 "
                "AND direction = 'out' AND random_id IS NOT NULL AND state = 'sent'",
                row,
                chat.seen_by(account.user_id),
            )
            assert sorted(r["random_id"] for r in sent) == sorted(counts)
        states = await pool.fetch(
            "SELECT state, count(*) AS n FROM messages WHERE session_id = $1 "
            "AND direction = 'in' GROUP BY state",
            row,
        )
        assert {r["state"]: r["n"] for r in states} == {"done": CHATS * PER_CHAT}
        assert await sim_world.max_connections(account) == 1
    finally:
        await pool.close()


async def _state(pool: asyncpg.Pool, session_id: int, state: str) -> bool:
    value = await pool.fetchval("SELECT state FROM telegram_sessions WHERE id = $1", session_id)
    return bool(value == state)


async def _stored_at_least(pool: asyncpg.Pool, session_id: int, n: int) -> bool:
    value = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE session_id = $1 AND direction = 'in'", session_id
    )
    return int(value or 0) >= n


async def _sent_at_least(pool: asyncpg.Pool, session_id: int, n: int) -> bool:
    value = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE session_id = $1 AND direction = 'out' "
        "AND state = 'sent' AND random_id IS NOT NULL",
        session_id,
    )
    return int(value or 0) >= n


async def _all_done(pool: asyncpg.Pool, session_id: int, n: int) -> bool:
    rows = await pool.fetch(
        "SELECT direction, state, count(*) AS c FROM messages WHERE session_id = $1 GROUP BY 1, 2",
        session_id,
    )
    counts = {(r["direction"], r["state"]): r["c"] for r in rows}
    pending = counts.get(("out", "pending"), 0)
    return bool(counts.get(("in", "done"), 0) == n and pending == 0)


async def test_database_restart_during_a_burst_loses_nothing_and_doubles_nothing(
    clean_env: Path, sim_world: SimWorld, sim_llm: str
) -> None:
    """The daemon's own embedded Postgres is stopped and started again mid-burst."""
    datadir = clean_env / "pg"
    clean_env.mkdir(parents=True, exist_ok=True)
    server = embedded.start(datadir)  # the daemon adopts this running server
    keys = clean_env.parent / "session_keys"
    keys.write_text(new_keyring_text() + "\n")
    keyring = Keyring.parse("session_keys", keys.read_text())
    env = {
        "VIBEE_TELEGRAM__BACKEND": "sim",
        "VIBEE_TELEGRAM__SIM_URL": sim_world.url,
        "VIBEE_TELEGRAM__MESSAGES_PER_MINUTE_PER_CHAT": "1000",
        "VIBEE_SECURITY__SESSION_KEYS_FILE": str(keys),
        "VIBEE_AI__CHAIN": '["openai"]',
        "VIBEE_AI__PROVIDERS__OPENAI__BASE_URL": f"{sim_llm}/openai/v1",
        "VIBEE_AI__PROVIDERS__OPENAI__MODEL": "sim:latency_ms=20",
        "VIBEE_AI_OPENAI_API_KEY": "sk-test",
        "VIBEE_AI__CACHE_TTL_S": "0",
    }
    conn = await asyncpg.connect(server.url)
    await Migrator(conn).up()
    await conn.close()
    pool = await asyncpg.create_pool(server.url, min_size=1, max_size=4)
    assert pool is not None
    try:
        user = await vibee_user(pool)
        account = await sim_world.account()
        row = await authorized_session(pool, user, account)
        assert account.credential is not None
        sealed, key_id = seal(keyring, row, account.credential)
        await pool.execute(
            "UPDATE telegram_sessions SET credential = $2, credential_key_id = $3 WHERE id = $1",
            row,
            sealed,
            key_id,
        )
        friends = [(await sim_world.user())[0] for _ in range(20)]
        chats = [await sim_world.chat("private", [account.user_id, f]) for f in friends]
        for chat in chats:
            await automation.set_chat_config(
                pool,
                user,
                row,
                chat.seen_by(account.user_id),
                mode="digital_twin",
                reply_delay_min_s=0.0,
                reply_delay_max_s=0.0,
            )
    finally:
        await pool.close()

    daemon = Daemon(env)
    try:
        daemon.wait_for("vibee ready")
        items = [
            {"chat_id": chat.chat_id, "from": friend, "text": f"message {k}"}
            for k in range(5)
            for chat, friend in zip(chats, friends, strict=True)
        ]
        probe = await asyncpg.create_pool(server.url, min_size=1, max_size=1)
        assert probe is not None
        try:  # the outage must hit a running session, not its first connect
            await eventually(lambda: _state(probe, row, "connected"), timeout=30)
            await sim_world.request("POST", "/messages/batch", {"messages": items[:50]})
            await eventually(lambda: _stored_at_least(probe, row, 1), timeout=30)
        finally:
            await probe.close()
        stop_postgres(datadir)
        await sim_world.request("POST", "/messages/batch", {"messages": items[50:]})
        await asyncio.sleep(2)  # VIBEE keeps receiving while its database is down
        start_postgres(datadir)
        pool = await asyncpg.create_pool(server.url, min_size=1, max_size=4)
        assert pool is not None
        try:
            await eventually(lambda: _all_done(pool, row, 100), timeout=120)
            for chat in chats:
                ours = [m for m in await sim_world.transcript(chat) if m["from"] == account.user_id]
                counts = Counter(m["random_id"] for m in ours)
                assert ours and all(n == 1 for n in counts.values()), counts
                sent = await pool.fetch(
                    "SELECT random_id FROM messages WHERE session_id = $1 AND tg_chat_id = $2 "
                    "AND direction = 'out' AND random_id IS NOT NULL AND state = 'sent'",
                    row,
                    chat.seen_by(account.user_id),
                )
                assert sorted(r["random_id"] for r in sent) == sorted(counts)
        finally:
            await pool.close()
        outage = [r for r in daemon.records if str(r["msg"]).startswith("cannot store inbound")]
        assert outage, "the database outage was never noticed: the test did not test it"
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0
    finally:
        daemon.stop()
        stop_leftover_postgres(datadir)


def stop_postgres(datadir: Path) -> None:
    pg_ctl(datadir, "stop", "-m", "fast", "-w")


def start_postgres(datadir: Path) -> None:
    pg_ctl(datadir, "start", "-w", "-o", f"-h '' -k {datadir}", "-l", str(datadir / "log"))
