"""Several real `vibee run` processes sharing one Postgres, one redis-server and the sim.

Used by the many-instance tests and by `scripts/bench failover`. Accounts are real sim
accounts, each with one private chat (with a shared friend) in digital-twin mode; their
sessions are stored with credentials sealed by the daemons' keyring, exactly as a login
would leave them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tests.integration.telegram.world import AccountRef, ChatRef, SimWorld
from tests.integration.test_run import Daemon
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import automation, sessions
from vibee.telegram.session_store import seal

ADMIN_TOKEN = "a" * 24
LEASE_S, RENEW_DEADLINE_S, RETRY_S = 3.0, 2.0, 0.5


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server of the test's own, without persistence: a restart loses every key,
    the worst case for leases."""

    def __init__(self, *options: str) -> None:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed (scripts/install-system-tools)")
        self._binary = found
        self.port = free_port()
        self._options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *self._options,
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(500):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)
        raise RuntimeError("redis-server did not open its port")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True, slots=True)
class Account:
    """A sim account under VIBEE: its session row and its one twin chat."""

    ref: AccountRef
    session_id: int
    chat: ChatRef


class Cluster:
    """Accounts in Postgres and the sim, and up to N `vibee run` instances."""

    def __init__(
        self, db_url: str, sim: SimWorld, redis: RedisProcess, llm: str, state: Path
    ) -> None:
        self.db_url = db_url
        self.sim = sim
        self.redis = redis
        self.state = state
        self.keys = state / "session_keys"
        self.keys.write_text(new_keyring_text() + "\n")
        self.keyring = Keyring.parse("session_keys", self.keys.read_text())
        self.jwt = new_keyring_text()
        self.llm = llm
        self.accounts: list[Account] = []
        self.friend = 0
        self.instances: dict[str, Daemon] = {}

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """The environment of instance ``name``."""
        return {
            "VIBEE_DATABASE__URL": self.db_url,
            "VIBEE_DATABASE__POOL_MAX_SIZE": "8",
            "VIBEE_REDIS__URL": self.redis.url,
            "VIBEE_REDIS__INSTANCE_ID": name,
            "VIBEE_REDIS__LEASE_S": str(LEASE_S),
            "VIBEE_REDIS__RENEW_DEADLINE_S": str(RENEW_DEADLINE_S),
            "VIBEE_REDIS__RETRY_S": str(RETRY_S),
            "VIBEE_SERVER__PORT": "0",
            "VIBEE_RUNTIME__STATE_DIR": str(self.state / name),
            "VIBEE_TELEGRAM__BACKEND": "sim",
            "VIBEE_TELEGRAM__SIM_URL": self.sim.url,
            "VIBEE_TELEGRAM__MESSAGES_PER_MINUTE_PER_CHAT": "1000",
            "VIBEE_TELEGRAM__RETRY_DELAY_S": "0.2",
            "VIBEE_SECURITY__SESSION_KEYS_FILE": str(self.keys),
            "VIBEE_JWT_KEYS": self.jwt,
            "VIBEE_ADMIN_TOKEN": ADMIN_TOKEN,
            "VIBEE_AI__CHAIN": '["openai"]',
            "VIBEE_AI__PROVIDERS__OPENAI__BASE_URL": f"{self.llm}/openai/v1",
            "VIBEE_AI__PROVIDERS__OPENAI__MODEL": "sim:latency_ms=5",
            "VIBEE_AI_OPENAI_API_KEY": "sk-test",
            "VIBEE_AI__CACHE_TTL_S": "0",
            # one user owns every account here: lift the free tier's daily AI quota
            "VIBEE_LIMITS__AI_REQUESTS_PER_DAY": "1000000000",
            "VIBEE_LIMITS__AI_TOKENS_PER_DAY": "1000000000",
            "VIBEE_WORKERS__WORKER_COUNT": "32",
            # long sweeps: work must be found through the notices (bus, lease gained)
            "VIBEE_WORKERS__SWEEP_S": "30",
            **extra,
        }

    async def add_accounts(self, pool: asyncpg.Pool, n: int, user: int | None = None) -> None:
        """``n`` accounts of one VIBEE user (a new one unless given), each with a twin
        chat with the friend."""
        if user is None:
            user = await pool.fetchval(
                "INSERT INTO users (username, password_hash) VALUES ($1, 'x') RETURNING id",
                f"owner{len(self.accounts)}",
            )
        if not self.friend:
            self.friend = (await self.sim.user())[0]
        for _ in range(n):
            ref = await self.sim.account()
            assert ref.credential is not None
            row = await sessions.create(pool, user, ref.phone)
            sealed, key_id = seal(self.keyring, row.id, ref.credential)
            await sessions.save_authorized(pool, user, row.id, ref.user_id, sealed, key_id)
            chat = await self.sim.chat("private", [ref.user_id, self.friend])
            await automation.set_chat_config(
                pool,
                user,
                row.id,
                chat.seen_by(ref.user_id),
                mode="digital_twin",
                reply_delay_min_s=0.0,
                reply_delay_max_s=0.0,
            )
            self.accounts.append(Account(ref, row.id, chat))

    def start(self, name: str, **extra: str) -> Daemon:
        daemon = Daemon(self.env(name, **extra))
        self.instances[name] = daemon
        return daemon

    def running(self) -> dict[str, Daemon]:
        return {n: d for n, d in self.instances.items() if d.proc.poll() is None}

    def owned(self) -> dict[str, set[int]]:
        """Per live instance, the sessions it runs and has connected."""
        out: dict[str, set[int]] = {}
        for name, daemon in self.running().items():
            body = admin_get(daemon, "/admin/sessions")
            if body is None:
                continue
            out[name] = {s["session_id"] for s in body["sessions"] if s["state"] == "connected"}
        return out

    def all_connected_once(self) -> bool:
        """Every account connected on exactly one instance."""
        owned = self.owned()
        seen = [s for ids in owned.values() for s in ids]
        return len(seen) == len(set(seen)) and set(seen) == {a.session_id for a in self.accounts}

    async def burst(self, per_chat: int, tag: str) -> None:
        """``per_chat`` messages from the friend in every account's chat."""
        items = [
            {"chat_id": a.chat.chat_id, "from": self.friend, "text": f"{tag} {k} to {i}"}
            for k in range(per_chat)
            for i, a in enumerate(self.accounts)
        ]
        for start in range(0, len(items), 500):
            batch = items[start : start + 500]
            await self.sim.request("POST", "/messages/batch", {"messages": batch})

    def terminate(self, name: str) -> None:
        self.instances[name].proc.send_signal(signal.SIGTERM)

    def kill(self, name: str) -> None:
        self.instances[name].proc.kill()
        self.instances[name].proc.wait(timeout=30)

    def stop_all(self) -> None:
        for daemon in self.instances.values():
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGTERM)
        for daemon in self.instances.values():
            try:
                daemon.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.stop()


def admin_get(daemon: Daemon, path: str) -> Any:
    """GET an admin path of ``daemon`` (None when it does not answer)."""
    request = urllib.request.Request(
        daemon.admin + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError):
        return None


async def answered_exactly_once(pool: asyncpg.Pool, cluster: Cluster, per_chat: int) -> None:
    """Every message of every account's chat answered, no reply sent twice, and the sim
    never saw two connections on one account (the assertion the tests share)."""
    for account in cluster.accounts:
        transcript = await cluster.sim.transcript(account.chat)
        ours = [m for m in transcript if m["from"] == account.ref.user_id]
        theirs = [m for m in transcript if m["from"] != account.ref.user_id]
        assert len(theirs) == per_chat, (account.session_id, len(theirs))
        counts: dict[int, int] = {}
        for m in ours:
            counts[m["random_id"]] = counts.get(m["random_id"], 0) + 1
        assert ours, f"session {account.session_id} got no reply"
        assert all(n == 1 for n in counts.values()), counts
        assert await cluster.sim.max_connections(account.ref) == 1, account.session_id
    states = await pool.fetch(
        "SELECT state, count(*) AS n FROM messages WHERE direction = 'in' GROUP BY state"
    )
    assert {r["state"]: r["n"] for r in states} == {"done": per_chat * len(cluster.accounts)}
    dead = await pool.fetchval("SELECT count(*) FROM dead_letters")
    assert dead == 0


async def all_done(pool: asyncpg.Pool, n: int) -> bool:
    """``n`` inbound messages stored and finished, and every reply sent."""
    done = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE direction = 'in' AND state = 'done'"
    )
    unsent = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE direction = 'out' AND state <> 'sent'"
    )
    return bool(done == n and unsent == 0)


async def wait_until(probe: Any, timeout: float, interval: float = 0.1) -> float:
    """Poll ``probe`` (sync or async) until true; returns the seconds it took."""
    start = time.monotonic()
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(interval)
