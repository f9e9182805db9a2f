"""Benchmark: the public API against a bare aiohttp hello-world, same machine, same run.

Prints one JSON object. Targets (issue "Public API"): authenticated ``GET /api/v1/users/me``
req/s >= 50 % of the bare server's, ``/health`` >= 80 %, p99 latency at 1,000 req/s <= 5 ms.

Method:

* Every server (the API with the user cache on, the API with it off, the bare hello-world)
  runs in this process on uvloop, on an embedded Postgres in a temporary directory.
  The per-user rate limit is raised out of the way (it is still checked on every request).
* Throughput: ``wrk -t1 -c64 --latency`` for ``--seconds`` per round; the targets take
  turns round by round so that they see the same machine; the median round counts.
  Any non-2xx answer fails the run.
* p99 at a fixed rate: wrk cannot hold a rate (wrk2 is not in Debian), so a small paced
  client (``--pace``, this file, in its own process on uvloop) sends requests on a fixed
  schedule of ``--rate`` per second over 16 keep-alive connections (open loop) and records
  each latency twice: from the moment the request was written (``service``) and from the
  moment it was scheduled (``scheduled``: includes queueing behind slow answers, i.e.
  corrected for coordinated omission, and the client's own timer jitter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import uvloop
from aiohttp import web

from vibee.api.app import build_api_app
from vibee.api.context import ApiSettings
from vibee.api.tiers import TierLimits, Tiers
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import embedded
from vibee.store.migrate import Migrator

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


async def wrk(url: str, seconds: int, header: str | None = None) -> dict[str, float]:
    args = ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", url]
    if header:
        args[1:1] = ["-H", header]
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise SystemExit(f"wrk saw failures on {url}:\n{out}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    return {"rps": rps, "p50_ms": _ms(latency["50"]), "p99_ms": _ms(latency["99"])}


async def hello_app() -> web.Application:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def paced(url: str, header: str, rate: int, seconds: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--pace",
        url,
        "--header",
        header,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        stdout=subprocess.PIPE,
    )
    out = (await proc.communicate())[0]
    result: dict[str, Any] = orjson.loads(out)
    return result


async def main(seconds: int, rounds: int, rate: int, pace_seconds: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench api: needs wrk (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="vibee-bench-api-"))
    server = await asyncio.to_thread(embedded.start, tmp / "pg")
    runners: list[web.AppRunner] = []
    try:
        conn = await asyncpg.connect(server.url)
        try:
            await Migrator(conn).up()
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(server.url, min_size=4, max_size=10)
        keyring = Keyring.parse("jwt_keys", new_keyring_text())
        tiers = Tiers(TierLimits(api_per_minute=1_000_000_000))
        ports: dict[str, int] = {}
        for name, ttl in (("cached", 2.0), ("uncached", 0.0)):
            settings = ApiSettings(tiers=tiers, user_cache_ttl_s=ttl)
            app = build_api_app(settings, lambda: pool, keyring, LocalRateLimiter())
            runner, ports[name] = await serve(app)
            runners.append(runner)
        runner, ports["hello"] = await serve(await hello_app())
        runners.append(runner)

        async with aiohttp.ClientSession() as session:
            body = {"username": "bench", "password": "benchmark password"}
            url = f"http://127.0.0.1:{ports['cached']}/api/v1/auth/register"
            async with session.post(url, json=body) as response:
                token = (await response.json())["tokens"]["access_token"]
        auth = f"Authorization: Bearer {token}"
        targets: dict[str, tuple[str, str | None]] = {
            "hello": (f"http://127.0.0.1:{ports['hello']}/", None),
            "health": (f"http://127.0.0.1:{ports['cached']}/health", None),
            "me": (f"http://127.0.0.1:{ports['cached']}/api/v1/users/me", auth),
            "me_uncached": (f"http://127.0.0.1:{ports['uncached']}/api/v1/users/me", auth),
        }
        for url, header in targets.values():  # warm up
            await wrk(url, 1, header)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, (url, header) in targets.items():
                runs[name].append(await wrk(url, seconds, header))
        rps = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
        fixed = await paced(targets["me"][0], auth, rate, pace_seconds)
        fixed_uncached = await paced(targets["me_uncached"][0], auth, rate, pace_seconds)
        await pool.close()
    finally:
        for runner in runners:
            await runner.cleanup()
        await asyncio.to_thread(server.stop)
        shutil.rmtree(tmp, ignore_errors=True)

    me_ratio = rps["me"] / rps["hello"]
    health_ratio = rps["health"] / rps["hello"]
    p99 = fixed["service_p99_ms"]
    return {
        "benchmark": "api",
        "wrk": "-t1 -c64",
        "seconds_per_round": seconds,
        "rounds": rounds,
        "hello_rps": round(rps["hello"]),
        "health_rps": round(rps["health"]),
        "me_rps": round(rps["me"]),
        "me_uncached_rps": round(rps["me_uncached"]),
        "health_vs_hello": round(health_ratio, 3),
        "me_vs_hello": round(me_ratio, 3),
        "me_uncached_vs_hello": round(rps["me_uncached"] / rps["hello"], 3),
        "wrk_p99_ms_at_c64": {name: round(runs[name][-1]["p99_ms"], 3) for name in runs},
        "fixed_rate_me": fixed,
        "fixed_rate_me_uncached": fixed_uncached,
        "targets": {
            "me_vs_hello>=0.50": me_ratio >= 0.50,
            "health_vs_hello>=0.80": health_ratio >= 0.80,
            f"p99_at_{rate}rps<=5ms": p99 <= 5.0,
        },
    }


# --- the paced client (runs in its own process) --------------------------------------------


async def pace(url: str, header: str, rate: int, seconds: int, connections: int = 16) -> None:
    parts = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert parts is not None
    host, port, path = parts.group(1), int(parts.group(2)), parts.group(3)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{header}\r\n\r\n".encode()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue(
        maxsize=connections
    )
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    service: list[float] = []
    scheduled: list[float] = []
    errors = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        nonlocal errors
        reader, writer = await idle.get()
        try:
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done = time.perf_counter()
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            service.append((done - sent) * 1000)
            scheduled.append((done - due) * 1000)
        finally:
            idle.put_nowait((reader, writer))

    total = rate * seconds
    start = time.perf_counter() + 0.1
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "rate": rate,
                "achieved_rps": round(total / elapsed),
                "requests": total,
                "errors": errors,
                "service_p50_ms": round(percentile(service, 50), 3),
                "service_p99_ms": round(percentile(service, 99), 3),
                "service_max_ms": round(max(service), 3),
                "scheduled_p99_ms": round(percentile(scheduled, 99), 3),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="req/s of the paced client")
    parser.add_argument("--pace-seconds", type=int, default=10)
    parser.add_argument("--pace", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--header", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pace:
        uvloop.run(pace(args.pace, args.header, args.rate, args.seconds))
    else:
        result = uvloop.run(main(args.seconds, args.rounds, args.rate, args.pace_seconds))
        print(json.dumps(result))
