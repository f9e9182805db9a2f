"""Benchmark: the automation pipeline end to end, and ingest against asyncpg's batch insert.

Run: ``scripts/bench pipeline [--sessions 10] [--chats 100] [--seconds 4]
[--arrival poisson|even]`` (prints one JSON object). In this process under uvloop: what
``vibee run`` composes (router, ingest, pipeline, sessions, session manager) over an
embedded Postgres in a temporary directory, the sim and the fake LLM as separate
processes, all on the same cores.

* replies: digital-twin chats (reply delay 0), messages offered at 100, 1,000 and 5,000
  msgs/s for a few seconds, spread over the chats. ``cases``: in bursts every 100 ms (each
  burst's messages at once), the fake LLM at 0 ms and at 500 ms; ``paced_cases``: the 0 ms
  cases again with the messages arriving one at a time, posted by the sim (``--arrival``:
  ``poisson`` — independent senders — or ``even``), which is what the overhead targets
  are judged on. Each case first sends one message to every chat and waits for the
  replies (not measured: every chat's config and dialog are then in memory, as in a daemon
  that has been running; a chat's first message costs one more read). Figures: replies/s
  (first injection → last reply confirmed sent), the pipeline overhead
  (``vibee_pipeline_latency_seconds``: stored → handed to Telegram, AI time and the reply
  delay excluded; quantiles from the histogram buckets, so upper bounds) and the
  end-to-end latency as the sim saw it (a message's arrival → its reply's arrival:
  ingest, pipeline, AI and Telegram's hops, nothing excluded; exact quantiles). The
  overhead's parts (``vibee_pipeline_stage_seconds``: queued, decide, write) come as
  ``stages_ms_at_most`` (p50, p99 upper bounds each).
* ingest: observed chats only; stored msgs/s, beside asyncpg inserting the same rows with
  ``unnest`` batches into a scratch table in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop
from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Router
from vibee.app import settle_heap
from vibee.automation.ingest import Ingest
from vibee.automation.pipeline import Pipeline
from vibee.runtime import CircuitBreaker, Supervisor
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import automation, embedded
from vibee.store.db import init_connection
from vibee.store.migrate import Migrator
from vibee.telegram.manager import SessionManager
from vibee.telegram.session_store import seal
from vibee.telegram.sim_gateway import SimGateway

BUCKET_METRIC = "vibee_pipeline_latency_seconds"
BURST_S = 0.1
"""With ``bursts`` arrival, a burst every this long."""
RATES = (100, 1000, 5000)


STAGE_METRIC = "vibee_pipeline_stage_seconds"
STAGES = ("queued", "decide", "write")


def histogram(name: str = BUCKET_METRIC, stage: str | None = None) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram now (of one ``stage`` of
    :data:`STAGE_METRIC`)."""
    out = []
    for metric in REGISTRY.collect():
        if metric.name == name:
            for sample in metric.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("stage") == stage:
                    out.append((float(sample.labels["le"]), sample.value))
    return sorted(out)


def stage_histograms() -> dict[str, list[tuple[float, float]]]:
    """:func:`histogram` of each stage of the overhead."""
    return {stage: histogram(STAGE_METRIC, stage) for stage in STAGES}


def quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The upper bound of the bucket holding quantile ``q`` of the observations in between."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return float("nan")
    for le, cumulative in counts:
        if cumulative >= q * total:
            return le
    return float("inf")


_worlds = 0


class World:
    """Accounts, chats and peers in the sim, sessions and chat rows in Postgres."""

    def __init__(self, url: str, pool: asyncpg.Pool, keyring: Keyring) -> None:
        self.url, self.pool, self.keyring = url, pool, keyring
        self.chats: list[tuple[int, int, int, int]] = []  # (session, sim chat, tg chat, peer)

    async def build(self, sessions: int, chats: int, mode: str) -> None:
        global _worlds
        _worlds += 1
        user = await self.pool.fetchval(
            "INSERT INTO users (username, password_hash) VALUES ($1, 'x') RETURNING id",
            f"bench-{_worlds}",
        )
        async with aiohttp.ClientSession() as http:

            async def call(path: str, body: dict[str, Any]) -> Any:
                async with http.post(self.url + path, json=body) as response:
                    return await response.json()

            for s in range(sessions):
                phone = f"+1{_worlds:03d}{s:07d}"
                account = await call("/accounts", {"phone": phone, "authorize": True})
                session_id = await self.pool.fetchval(
                    "INSERT INTO telegram_sessions (user_id, phone, state) "
                    "VALUES ($1, $2, 'authorized') RETURNING id",
                    user,
                    phone,
                )
                sealed, key_id = seal(self.keyring, session_id, bytes.fromhex(account["session"]))
                await self.pool.execute(
                    "UPDATE telegram_sessions SET credential = $2, credential_key_id = $3 "
                    "WHERE id = $1",
                    session_id,
                    sealed,
                    key_id,
                )
                for _ in range(chats):
                    # one peer per chat: a private chat is known by its peer's id
                    peer = (await call("/users", {"name": "Peer"}))["user_id"]
                    chat = await call(
                        "/chats", {"type": "private", "members": [account["user_id"], peer]}
                    )
                    tg_chat = chat["peer_ids"].get(str(account["user_id"]), chat["chat_id"])
                    await automation.set_chat_config(
                        self.pool,
                        user,
                        session_id,
                        tg_chat,
                        mode=mode,
                        reply_delay_min_s=0.0,
                        reply_delay_max_s=0.0,
                    )
                    self.chats.append((session_id, chat["chat_id"], tg_chat, peer))


async def offer(url: str, world: World, rate: int, seconds: float, arrival: str) -> int:
    """Offer ``rate`` msgs/s for ``seconds``, round-robin over the chats. ``arrival``:
    ``bursts`` — every 100 ms, that tick's messages at once (one request from here);
    ``even`` or ``poisson`` — one at a time, posted by the sim itself (``spread_s``), so
    the load generator costs this process nothing while it runs."""
    total = int(rate * seconds)
    messages = []
    for i in range(total):
        _, chat, _, peer = world.chats[i % len(world.chats)]
        messages.append({"chat_id": chat, "from": peer, "text": f"question {i}"})
    async with aiohttp.ClientSession() as http:
        if arrival != "bursts":
            body = {"messages": messages, "spread_s": seconds, "arrival": arrival, "seed": rate}
            async with http.post(f"{url}/messages/batch", json=body) as r:
                r.raise_for_status()
            return total
        per_tick = max(1, round(rate * BURST_S))
        start = time.perf_counter()
        for sent in range(0, total, per_tick):
            batch = messages[sent : sent + per_tick]
            async with http.post(f"{url}/messages/batch", json={"messages": batch}) as r:
                r.raise_for_status()
            next_tick = start + (sent + len(batch)) / rate
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    return total


async def end_to_end(url: str, world: World, since: float) -> list[float]:
    """Per reply to a message that arrived after ``since`` (``time.time()``), as the sim
    saw it: the reply's arrival minus the arrival of the newest message it answers (so:
    ingest, pipeline, AI, Telegram's hops — everything)."""
    out: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _, chat, _, peer in world.chats:
            async with http.get(f"{url}/chats/{chat}/messages") as r:
                transcript = await r.json()
            last_in: float | None = None
            for message in transcript:
                if message["from"] == peer:
                    last_in = message["date"]
                elif last_in is not None:
                    if last_in >= since:
                        out.append(message["date"] - last_in)
                    last_in = None
    return sorted(out)


def exact(values: list[float], q: float) -> float:
    """Quantile ``q`` of sorted ``values`` in ms (nan when empty)."""
    if not values:
        return float("nan")
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args) or 0)


_SENT = (
    "SELECT count(*) FROM messages WHERE session_id = ANY($1::bigint[]) "
    "AND direction = 'out' AND state = 'sent' AND random_id IS NOT NULL"
)
_STORED = "SELECT count(*) FROM messages WHERE session_id = ANY($1::bigint[]) AND direction = 'in'"
_UNFINISHED = (
    "SELECT count(*) FROM messages WHERE session_id = ANY($1::bigint[]) "
    "AND state IN ('received', 'pending') AND ((direction = 'in' AND state = "
    "'received') OR (direction = 'out' AND state = 'pending'))"
)


async def finished(pool: asyncpg.Pool, ids: list[int], stored: int) -> None:
    """Wait (up to 180 s) until the sessions ``ids`` have ``stored`` inbound messages and
    nothing unfinished."""
    deadline = time.perf_counter() + 180
    while time.perf_counter() < deadline:
        # cheap while work remains (the partial index of unfinished rows); the full count
        # of stored messages only then (polling must not load the database it measures),
        # and the unfinished ones once more after it: a message stored between the first
        # two counts is unfinished, and its reply would not be counted
        if (
            await count(pool, _UNFINISHED, ids) == 0
            and await count(pool, _STORED, ids) >= stored
            and await count(pool, _UNFINISHED, ids) == 0
        ):
            return
        await asyncio.sleep(0.02)


async def run_case(
    url: str,
    llm: str,
    pool: asyncpg.Pool,
    world: World,
    rate: int,
    seconds: float,
    ai_ms: int,
    arrival: str = "bursts",
    *,
    warm: bool = True,
) -> dict[str, Any]:
    model = "gpt" if ai_ms == 0 else f"sim:latency_ms={ai_ms}"
    provider = OpenAICompatProvider("openai", f"{llm}/openai/v1", model, "k", 30, 512)
    router = Router(
        [ProviderSlot(provider, CircuitBreaker(f"bench:{rate}:{ai_ms}"), asyncio.Semaphore(512))],
        cache=None,
    )
    sessions = Supervisor("sessions", concurrent_stop=True)
    workers = 64 if ai_ms == 0 else 512
    pipeline = Pipeline(pool, lambda: router, lambda: sessions, worker_count=workers, seed=1)
    ingest = Ingest(pool, 500, 20_000, pipeline.notify)
    manager = SessionManager(
        lambda: sessions,
        pool,
        world.keyring,
        lambda _id, cred: SimGateway(world.url, cred),
        ingest,
        per_chat_per_minute=100_000,
        sweep_s=3600,
    )
    # the tables grew by the earlier cases within a minute: fresh statistics, as a daemon
    # running for a while finds them (autovacuum analyzes); the lanes make their plans
    # again every second, and the pool's connections keep their prepared statements
    await pool.execute("ANALYZE messages")
    for child in (ingest, pipeline, sessions):
        await child.start()
    settle_heap()  # as `vibee run` does once started
    await manager.sweep()
    while any(
        not getattr(sessions.get(n), "connected", asyncio.Event()).is_set()
        for n in sessions.names()
    ):
        await asyncio.sleep(0.05)
    ids = sorted({c[0] for c in world.chats})
    if warm:  # one message per chat first, not measured: every chat known, as in a daemon
        warmed = await offer(url, world, len(world.chats), 1.0, "even")
        await finished(pool, ids, warmed)
    sent_before = await count(pool, _SENT, ids)
    stored_before = await count(pool, _STORED, ids)
    before, stages_before = histogram(), stage_histograms()
    since = time.time()
    started = time.perf_counter()
    offered = await offer(url, world, rate, seconds, arrival)
    await finished(pool, ids, stored_before + offered)
    elapsed = time.perf_counter() - started
    sent = await count(pool, _SENT, ids) - sent_before
    after, stages_after = histogram(), stage_histograms()
    for child in (sessions, pipeline, ingest):
        await child.stop(30)
    await router.close()
    e2e = await end_to_end(url, world, since)
    return {
        "offered_msgs_per_s": rate,
        "ai_latency_ms": ai_ms,
        "arrival": arrival,
        "messages": offered,
        "replies_sent": sent,
        "replies_per_s": round(sent / elapsed),
        "overhead_p50_ms_at_most": round(quantile(before, after, 0.5) * 1000, 3),
        "overhead_p99_ms_at_most": round(quantile(before, after, 0.99) * 1000, 3),
        "end_to_end_p50_ms": exact(e2e, 0.5),
        "end_to_end_p99_ms": exact(e2e, 0.99),
        "stages_ms_at_most": {
            stage: [
                round(quantile(stages_before[stage], stages_after[stage], q) * 1000, 3)
                for q in (0.5, 0.99)
            ]
            for stage in STAGES
        },
    }


async def ingest_case(url: str, pool: asyncpg.Pool, world: World, n: int) -> dict[str, Any]:
    sessions = Supervisor("sessions", concurrent_stop=True)
    ingest = Ingest(pool, 500, 50_000)
    manager = SessionManager(
        lambda: sessions,
        pool,
        world.keyring,
        lambda _id, cred: SimGateway(world.url, cred),
        ingest,
        sweep_s=3600,
    )
    await ingest.start()
    await sessions.start()
    await manager.sweep()
    while any(
        not getattr(sessions.get(x), "connected", asyncio.Event()).is_set()
        for x in sessions.names()
    ):
        await asyncio.sleep(0.05)
    base = await count(pool, "SELECT count(*) FROM messages")
    started = time.perf_counter()
    await offer(url, world, 1_000_000, n / 1_000_000, "bursts")
    while await count(pool, "SELECT count(*) FROM messages") - base < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await sessions.stop(30)
    await ingest.stop(10)

    # the baseline: the same number of rows, 500 at a time, straight into a scratch table
    now = datetime.now(UTC)
    rows = [(1, 1, i % 100, i, "in", 7, f"question {i}", i, now) for i in range(n)]
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TEMP TABLE scratch (u bigint, s bigint, c bigint, m bigint, d text, "
            "f bigint, x text, q bigint, t timestamptz, UNIQUE (s, c, m, d))"
        )
        t0 = time.perf_counter()
        for i in range(0, n, 500):
            chunk = list(zip(*rows[i : i + 500], strict=True))
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO scratch SELECT * FROM unnest($1::bigint[], $2::bigint[], "
                    "$3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], "
                    "$8::bigint[], $9::timestamptz[]) ON CONFLICT DO NOTHING",
                    *chunk,
                )
        baseline = n / (time.perf_counter() - t0)
    return {
        "messages": n,
        "ingest_msgs_per_s": round(n / elapsed),
        "asyncpg_batch_insert_rows_per_s": round(baseline),
        "ingest_vs_asyncpg": round((n / elapsed) / baseline, 3),
    }


async def bench(url: str, llm: str, db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    pool = await asyncpg.create_pool(db_url, min_size=4, max_size=16, init=init_connection)
    assert pool is not None
    keyring = Keyring.parse("session_keys", new_keyring_text())
    results: dict[str, Any] = {"benchmark": "pipeline", "cases": []}
    for ai_ms in (0, 500):
        for rate in RATES:
            world = World(url, pool, keyring)
            await world.build(args.sessions, args.chats, "digital_twin")
            case = await run_case(url, llm, pool, world, rate, args.seconds, ai_ms)
            results["cases"].append(case)
            print(json.dumps(case), file=sys.stderr)
    results["paced_cases"] = []  # the 0 ms AI cases again, one message at a time
    for rate in RATES:
        world = World(url, pool, keyring)
        await world.build(args.sessions, args.chats, "digital_twin")
        case = await run_case(url, llm, pool, world, rate, args.seconds, 0, args.arrival)
        results["paced_cases"].append(case)
        print(json.dumps(case), file=sys.stderr)
    observe = World(url, pool, keyring)
    await observe.build(args.sessions, args.chats, "observe")
    results["ingest"] = await ingest_case(url, pool, observe, args.ingest_messages)
    await pool.close()
    best = max(c["replies_per_s"] for c in results["cases"] if c["ai_latency_ms"] == 0)
    at_1000 = next(c for c in results["paced_cases"] if c["offered_msgs_per_s"] == 1000)
    results["targets"] = {
        "replies_per_s>=1000": best >= 1000,
        "overhead_p50<=1ms@1000": at_1000["overhead_p50_ms_at_most"] <= 1,
        "overhead_p99<=5ms@1000": at_1000["overhead_p99_ms_at_most"] <= 5,
        "ingest>=20000": results["ingest"]["ingest_msgs_per_s"] >= 20_000,
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--ingest-messages", type=int, default=50_000)
    parser.add_argument(
        "--arrival",
        choices=("poisson", "even"),
        default="poisson",
        help="how the paced cases' messages arrive (the overhead targets are judged there)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vibee-bench-") as tmp:
        Path(tmp).chmod(0o755)
        server = embedded.start(Path(tmp) / "pg")
        procs = []
        urls = []
        try:
            for module in ("vibee.sim.telegram", "vibee.sim.llm"):
                proc = subprocess.Popen(
                    [sys.executable, "-m", module, "--listen", "127.0.0.1:0"],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                procs.append(proc)
                assert proc.stdout is not None
                urls.append(proc.stdout.readline().split()[-1])

            async def run() -> dict[str, Any]:
                conn = await asyncpg.connect(server.url)
                await Migrator(conn).up()
                await conn.close()
                return await bench(urls[0], urls[1], server.url, args)

            result = uvloop.run(run())
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
            server.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
