"""Failover and the cost of coordination: real `vibee run` processes, Redis, the sim.

Everything on this machine: an embedded Postgres, one redis-server (no persistence), the
Telegram sim, the fake LLM at 5 ms, and up to three VIBEE instances with the lease timings
of the tests (lease 3 s, renew deadline 2 s, retry 0.5 s; production uses 15/10/2).

* Coordination cost: one burst through one instance without Redis (the local
  coordinator: the baseline) and the same burst through one instance with Redis, both
  timed from the burst to the last reply sent; plus Redis commands per message.
* Failover: three instances share the accounts; each run sends one message per chat,
  kills one instance with SIGKILL and times the kill → every one of its sessions
  connected on another instance; then it restarts the victim and waits for the balance.
  The runs' messages must all be answered exactly once, on one connection per account.

* Hand-over: SIGTERM one instance, time it until all its sessions are connected on the
  others; restart it.

`scripts/bench failover [--accounts 300] [--runs 20] [--handovers 6] [--per-chat 5]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the cluster test harness

from tests.integration.cluster.harness import (
    LEASE_S,
    Cluster,
    RedisProcess,
    all_done,
    wait_until,
)
from tests.integration.telegram.world import SimWorld, sim_process
from vibee.store import embedded
from vibee.store.migrate import Migrator


def llm_process() -> tuple[str, subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee.sim.llm", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc.stdout.readline().split()[-1], proc


async def redis_commands(redis: RedisProcess) -> int:
    client = Redis(host="127.0.0.1", port=redis.port)
    try:
        stats: Any = await client.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())
    finally:
        await client.aclose()


async def timed_burst(cluster: Cluster, pool: asyncpg.Pool, per_chat: int, tag: str) -> float:
    """Seconds from the burst to every message of it answered and sent."""
    before = await pool.fetchval("SELECT count(*) FROM messages WHERE direction = 'in'")
    n = per_chat * len(cluster.accounts)
    started = time.perf_counter()
    await cluster.burst(per_chat, tag)
    await wait_until(lambda: all_done(pool, before + n), timeout=300, interval=0.02)
    return time.perf_counter() - started


def balanced(cluster: Cluster, names: list[str]) -> bool:
    owned = cluster.owned()
    return cluster.all_connected_once() and all(owned.get(n) for n in names)


async def exactly_once(cluster: Cluster, pool: asyncpg.Pool) -> tuple[int, int, int]:
    """(messages not done, replies sent twice, max connections on one account)."""
    duplicates = 0
    worst = 0
    for account in cluster.accounts:
        transcript = await cluster.sim.transcript(account.chat)
        ours = [m["random_id"] for m in transcript if m["from"] == account.ref.user_id]
        duplicates += len(ours) - len(set(ours))
        worst = max(worst, await cluster.sim.max_connections(account.ref))
    lost = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE direction = 'in' AND state <> 'done'"
    )
    return int(lost), duplicates, worst


async def bench(db_url: str, sim_url: str, llm: str, args: argparse.Namespace) -> dict[str, Any]:
    redis = RedisProcess()
    state = Path(tempfile.mkdtemp(prefix="vibee-failover-"))
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert pool is not None
    async with aiohttp.ClientSession() as http:
        cluster = Cluster(db_url, SimWorld(sim_url, http), redis, llm, state)
        try:
            await cluster.add_accounts(pool, args.accounts)
            n = args.accounts * args.per_chat

            # the baseline: one instance, no Redis
            cluster.start("single", VIBEE_REDIS__URL="").wait_for("vibee ready")
            await wait_until(cluster.all_connected_once, timeout=120)
            single_s = await timed_burst(cluster, pool, args.per_chat, "single")
            cluster.stop_all()

            # the same through one instance coordinating through Redis
            cluster.instances.clear()
            cluster.start("a").wait_for("vibee ready")
            await wait_until(cluster.all_connected_once, timeout=120)
            commands = await redis_commands(redis)
            redis_s = await timed_burst(cluster, pool, args.per_chat, "redis")
            per_msg_commands = (await redis_commands(redis) - commands) / n

            # failover: three instances, kill one per run
            for name in ("b", "c"):
                cluster.start(name).wait_for("vibee ready")
            names = ["a", "b", "c"]
            await wait_until(lambda: balanced(cluster, names), timeout=120)
            runs: list[float] = []
            for run in range(args.runs):
                victim = names[run % 3]
                orphans = cluster.owned()[victim]
                await cluster.burst(1, f"run {run}")
                started = time.perf_counter()
                cluster.kill(victim)

                def adopted(orphans: set[int] = orphans) -> bool:
                    return orphans <= set().union(*cluster.owned().values())

                await wait_until(adopted, timeout=LEASE_S + 60, interval=0.02)
                runs.append(time.perf_counter() - started)
                print(f"run {run}: {runs[-1]:.2f} s", file=sys.stderr)
                cluster.start(victim).wait_for("vibee ready")
                await wait_until(lambda: balanced(cluster, names), timeout=120)
            graceful: list[float] = []
            for run in range(args.handovers):
                leaving = names[run % 3]
                orphans = cluster.owned()[leaving]
                started = time.perf_counter()
                cluster.terminate(leaving)

                def handed(orphans: set[int] = orphans, leaving: str = leaving) -> bool:
                    owned = cluster.owned()
                    owned.pop(leaving, None)  # still answering while it stops
                    return orphans <= set().union(*owned.values())

                await wait_until(handed, timeout=60, interval=0.02)
                graceful.append(time.perf_counter() - started)
                print(f"hand-over {run}: {graceful[-1]:.2f} s", file=sys.stderr)
                cluster.instances[leaving].proc.wait(timeout=60)
                cluster.start(leaving).wait_for("vibee ready")
                await wait_until(lambda: balanced(cluster, names), timeout=120)
            total = n * 2 + args.runs * args.accounts
            skipped = await pool.fetchval(
                "SELECT count(*) FROM messages WHERE direction = 'in' AND state = 'skipped'"
            )
            if skipped:
                raise SystemExit(f"failover bench: {skipped} messages were skipped (quota?)")
            await wait_until(lambda: all_done(pool, total), timeout=300)
            lost, duplicates, worst = await exactly_once(cluster, pool)
        finally:
            cluster.stop_all()
            redis.kill()
            await pool.close()
    single_us = single_s / n * 1e6
    redis_us = redis_s / n * 1e6
    median, worst_run = statistics.median(runs), max(runs)
    return {
        "benchmark": "failover",
        "instances": 3,
        "sessions": args.accounts,
        "runs": args.runs,
        "lease_ttl_s": LEASE_S,
        "failover_median_s": round(median, 2),
        "failover_max_s": round(worst_run, 2),
        "failover_runs_s": [round(r, 2) for r in runs],
        "handover_median_s": round(statistics.median(graceful), 2),
        "handover_max_s": round(max(graceful), 2),
        "handover_runs_s": [round(r, 2) for r in graceful],
        "coordination_messages": n,
        "coordinated_instances": 1,
        "single_instance_us_per_msg": round(single_us, 1),
        "coordinated_us_per_msg": round(redis_us, 1),
        "coordination_added_us_per_msg": round(redis_us - single_us, 1),
        "coordinated_vs_single": round(redis_us / single_us, 2),
        "redis_commands_per_msg": round(per_msg_commands, 2),
        "lost_messages": lost,
        "duplicate_replies": duplicates,
        "sim_max_connections_per_account": worst,
        "targets": {
            "failover_max<=lease+3s": worst_run <= LEASE_S + 3,
            "handover_max<=2s": max(graceful) <= 2.0,
            "lost_messages==0": lost == 0,
            "duplicate_replies==0": duplicates == 0,
            "max_connections_per_account==1": worst == 1,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--per-chat", type=int, default=5)
    parser.add_argument("--handovers", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = embedded.start(Path(tmp) / "pg")
        llm, llm_proc = llm_process()
        try:
            with sim_process() as (sim_url, _):

                async def run() -> dict[str, Any]:
                    conn = await asyncpg.connect(server.url)
                    await Migrator(conn).up()
                    await conn.close()
                    return await bench(server.url, sim_url, llm, args)

                result = uvloop.run(run())
        finally:
            llm_proc.terminate()
            llm_proc.wait(timeout=10)
            server.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
