"""Sim gateway benchmark: N accounts connected through SimGateway in one process.

Run: ``.venv/bin/python bench/sim_telegram.py [--accounts 10000] [--messages-per-account 5]``
(prints one JSON object). It starts ``python -m vibee.sim.telegram`` on a free loopback
port (or uses ``--sim-url``), creates N accounts, each with a private chat with one peer,
then, in this process under uvloop:

1. connect: N ``SimGateway.connect()`` at once over the shared WebSocket; the time until
   all are attached, and the sim's ``max_connections_per_account`` (must be 1).
2. memory: RSS above the baseline (everything set up, no gateway) per connected idle
   account, first for the gateways alone, then with one task per account waiting on
   ``events()`` (what a session actor adds). Target ≤ 20 KiB.
3. idle CPU: this process's CPU time over a few idle seconds, as % of one core.
4. burst: N × M messages injected through ``POST /messages/batch`` while every consumer
   counts its account's updates; delivered messages per second, from the first injection
   to the last delivery (both processes share the machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibee.telegram.gateway import NewMessage
from vibee.telegram.sim_gateway import SimGateway


def rss_bytes() -> int:
    """This process's resident set size."""
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def settle() -> int:
    """RSS after a full collection and a moment for the loop to go quiet."""
    await asyncio.sleep(0.5)
    gc.collect()
    return rss_bytes()


async def setup(http: aiohttp.ClientSession, url: str, n: int) -> tuple[list[Any], int]:
    """N authorized accounts and their private chats with one peer."""
    async with http.post(f"{url}/users", json={"name": "Peer", "username": "benchpeer"}) as r:
        peer = (await r.json())["user_id"]
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> Any:
        async with sem:
            body = {"phone": f"+888{i:09d}", "authorize": True}
            async with http.post(f"{url}/accounts", json=body) as r:
                account = await r.json()
            chat = {"type": "private", "members": [account["user_id"], peer]}
            async with http.post(f"{url}/chats", json=chat) as r:
                account["chat_id"] = (await r.json())["chat_id"]
            return account

    return list(await asyncio.gather(*(one(i) for i in range(n)))), peer


async def bench(url: str, n: int, per_account: int, idle_s: float) -> dict[str, Any]:
    """Run every phase against the sim at ``url``."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        started = time.perf_counter()
        accounts, peer = await setup(http, url, n)
        setup_s = time.perf_counter() - started
        credentials = [bytes.fromhex(a["session"]) for a in accounts]
        baseline = await settle()

        gateways = [SimGateway(url, credential) for credential in credentials]
        started = time.perf_counter()
        await asyncio.gather(*(gw.connect() for gw in gateways))
        connect_s = time.perf_counter() - started

        async def disconnect_all() -> None:
            await asyncio.gather(*(gw.disconnect() for gw in gateways))

        stack.push_async_callback(disconnect_all)
        with_gateways = await settle()

        expected = per_account
        received = [0] * n
        done = asyncio.Event()
        remaining = [n * expected]

        async def consume(i: int, gw: SimGateway) -> None:
            async for event in gw.events():
                if isinstance(event, NewMessage):
                    received[i] += 1
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

        consumers = [asyncio.create_task(consume(i, gw)) for i, gw in enumerate(gateways)]
        with_consumers = await settle()

        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(idle_s)
        idle_cpu = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)

        async with http.get(f"{url}/stats") as r:
            stats_before = await r.json()
        batch_size = 2000
        items = [
            {"chat_id": a["chat_id"], "from": peer, "text": f"burst {k}"}
            for k in range(expected)
            for a in accounts
        ]
        started = time.perf_counter()
        for i in range(0, len(items), batch_size):
            async with http.post(
                f"{url}/messages/batch", json={"messages": items[i : i + batch_size]}
            ) as r:
                r.raise_for_status()
        inject_s = time.perf_counter() - started
        await asyncio.wait_for(done.wait(), timeout=600)
        burst_s = time.perf_counter() - started
        async with http.get(f"{url}/stats") as r:
            stats = await r.json()

        for task in consumers:
            task.cancel()
        await asyncio.wait(consumers)
        assert all(count == expected for count in received)
        with_consumer_kib = (with_consumers - baseline) / n / 1024
        return {
            "accounts": n,
            "setup_s": round(setup_s, 2),
            "connect_all_s": round(connect_s, 3),
            "connects_per_s": round(n / connect_s),
            "rss_baseline_mib": round(baseline / 2**20, 1),
            "rss_per_idle_gateway_kib": round((with_gateways - baseline) / n / 1024, 2),
            "rss_per_idle_gateway_with_consumer_task_kib": round(with_consumer_kib, 2),
            "idle_cpu_percent_of_one_core": round(idle_cpu * 100, 2),
            "burst_messages": n * expected,
            "burst_inject_s": round(inject_s, 3),
            "burst_delivered_s": round(burst_s, 3),
            "delivered_msgs_per_s": round(n * expected / burst_s),
            "sim_max_connections_per_account": stats["max_connections_per_account"],
            "sim_connections": stats["connections"],
            "sim_transports": stats["transports"],
            "sim_updates_delivered_in_burst": stats["updates_delivered"]
            - stats_before["updates_delivered"],
            "targets": {
                "rss_per_idle_gateway_with_consumer_task<=20KiB": with_consumer_kib <= 20,
                "max_connections_per_account==1": stats["max_connections_per_account"] == 1,
            },
        }


def main() -> int:
    """Parse arguments, start the sim, run, print JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--messages-per-account", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--sim-url", default=None, help="use a running sim (an empty one)")
    args = parser.parse_args()
    proc = None
    url = args.sim_url
    if url is None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vibee.sim.telegram", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
    try:
        result = uvloop.run(bench(url, args.accounts, args.messages_per_account, args.idle_seconds))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    result |= {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
