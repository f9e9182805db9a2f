"""Benchmark: N session actors (default 10,000) connected to the sim in one process.

Run: ``scripts/bench sessions [--accounts 10000]`` (prints one JSON object). It starts the
sim and an embedded Postgres in a temporary directory, creates N authorized accounts and
their sealed credentials, then, in this process under uvloop, composes what ``vibee run``
composes (ingest, the ``sessions`` supervisor, the session manager) and measures:

1. the "empty daemon" RSS: ingest + supervisor + manager running, no session;
2. the time from the manager's sweep until every session actor is ``connected``;
3. RSS per idle connected session above the empty daemon (target ≤ 20 KiB);
4. CPU while idle, as % of one core (target < 5 %);
5. a burst of one message per account, until every message is stored in Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibee.automation.ingest import Ingest
from vibee.runtime import Supervisor
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import embedded
from vibee.store.migrate import Migrator
from vibee.telegram.manager import SessionManager
from vibee.telegram.session_actor import SessionActor
from vibee.telegram.session_store import seal
from vibee.telegram.sim_gateway import SimGateway


def rss() -> int:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def settle() -> int:
    await asyncio.sleep(1.0)
    gc.collect()
    return rss()


async def accounts(url: str, n: int) -> tuple[list[dict[str, Any]], int]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/users", json={"name": "Peer", "username": "peer"}) as r:
            peer = (await r.json())["user_id"]
        limit = asyncio.Semaphore(64)

        async def one(i: int) -> dict[str, Any]:
            async with limit:
                body = {"phone": f"+777{i:09d}", "authorize": True}
                async with http.post(f"{url}/accounts", json=body) as r:
                    account: dict[str, Any] = await r.json()
                chat = {"type": "private", "members": [account["user_id"], peer]}
                async with http.post(f"{url}/chats", json=chat) as r:
                    account["chat_id"] = (await r.json())["chat_id"]
                return account

        return list(await asyncio.gather(*(one(i) for i in range(n)))), peer


async def bench(url: str, db_url: str, n: int, idle_s: float) -> dict[str, Any]:
    made, peer = await accounts(url, n)
    keyring = Keyring.parse("session_keys", new_keyring_text())
    pool = await asyncpg.create_pool(db_url, min_size=4, max_size=10)
    assert pool is not None
    user = await pool.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ('bench', 'x') RETURNING id"
    )
    ids = await pool.fetch(
        "INSERT INTO telegram_sessions (user_id, phone, state) "
        "SELECT $1, p, 'authorized' FROM unnest($2::text[]) AS p RETURNING id, phone",
        user,
        [f"+777{i:09d}" for i in range(n)],
    )
    rows = []
    for record in ids:
        account = made[int(record["phone"][4:])]  # account i has phone +777<i>
        sealed, key_id = seal(keyring, record["id"], bytes.fromhex(account["session"]))
        rows.append((record["id"], sealed, key_id))
    await pool.executemany(
        "UPDATE telegram_sessions SET credential = $2, credential_key_id = $3 WHERE id = $1",
        rows,
    )

    ingest = Ingest(pool, batch_size=500, queue_size=20_000)
    sessions = Supervisor("sessions", concurrent_stop=True)
    manager = SessionManager(
        lambda: sessions,
        pool,
        keyring,
        lambda _id, credential: SimGateway(url, credential),
        ingest,
        max_sessions=n,
        sweep_s=3600,
    )
    await ingest.start()
    await sessions.start()
    empty = await settle()

    started = time.perf_counter()
    await manager.sweep()
    actors = [sessions.get(name) for name in sessions.names()]
    await asyncio.gather(
        *(a.connected.wait() for a in actors if isinstance(a, SessionActor)),
        return_exceptions=False,
    )
    connect_s = time.perf_counter() - started
    connected = await settle()

    cpu0, wall0 = cpu(), time.perf_counter()
    await asyncio.sleep(idle_s)
    idle = (cpu() - cpu0) / (time.perf_counter() - wall0)

    async with aiohttp.ClientSession() as http:
        items = [{"chat_id": a["chat_id"], "from": peer, "text": "hello"} for a in made]
        started = time.perf_counter()
        for i in range(0, len(items), 2000):
            async with http.post(
                f"{url}/messages/batch", json={"messages": items[i : i + 2000]}
            ) as r:
                r.raise_for_status()
        while await pool.fetchval("SELECT count(*) FROM messages") < n:
            await asyncio.sleep(0.05)
        burst_s = time.perf_counter() - started
        async with http.get(f"{url}/stats") as r:
            stats = await r.json()

    await sessions.stop(60)
    await ingest.stop(10)
    await pool.close()
    per_session = (connected - empty) / n / 1024
    return {
        "benchmark": "sessions",
        "sessions": n,
        "connect_all_s": round(connect_s, 2),
        "rss_empty_daemon_mib": round(empty / 2**20, 1),
        "rss_per_idle_session_kib": round(per_session, 2),
        "idle_cpu_percent_of_one_core": round(idle * 100, 2),
        "burst_messages": n,
        "burst_stored_s": round(burst_s, 2),
        "stored_msgs_per_s": round(n / burst_s),
        "sim_max_connections_per_account": stats["max_connections_per_account"],
        "targets": {
            "rss_per_idle_session<=20KiB": per_session <= 20,
            "idle_cpu<5%": idle < 0.05,
            "max_connections_per_account==1": stats["max_connections_per_account"] == 1,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = embedded.start(Path(tmp) / "pg")
        proc = subprocess.Popen(
            [sys.executable, "-m", "vibee.sim.telegram", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]

            async def run() -> dict[str, Any]:
                conn = await asyncpg.connect(server.url)
                await Migrator(conn).up()
                await conn.close()
                return await bench(url, server.url, args.accounts, args.idle_seconds)

            result = uvloop.run(run())
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            server.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
