"""Benchmark: the AI router against a bare aiohttp client, same fake provider, same run.

Prints one JSON object. Targets (issue "AI service"): router req/s >= 70 % of the bare
client's at concurrency 64; added latency p50 <= 0.5 ms and p99 <= 3 ms (sequential
requests, router minus bare); a cache hit p99 <= 0.2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import uvloop

from vibee.ai.base import ChatRequest, Completion, Message
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Router
from vibee.coord.local import LocalCache
from vibee.runtime.breaker import CircuitBreaker


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def load(
    fn: Callable[[int], Awaitable[None]], total: int, concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await fn(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


def request(i: int) -> ChatRequest:
    return ChatRequest(messages=(Message("user", f"benchmark question {i}"),), max_tokens=64)


async def main(total: int, concurrency: int, sequential: int, rounds: int = 5) -> dict[str, object]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee.sim.llm", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base = proc.stdout.readline().split()[-1]
    url = f"{base}/openai/v1/chat/completions"
    try:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

        async def bare(i: int) -> None:
            req = request(i)
            payload = {
                "model": "gpt",
                "messages": [{"role": m.role, "content": m.content} for m in req.messages],
                "max_tokens": req.max_tokens,
            }
            async with session.post(
                url, data=orjson.dumps(payload), headers={"Authorization": "Bearer k"}
            ) as response:
                body = orjson.loads(await response.read())
                assert body["choices"][0]["message"]["content"]

        provider = OpenAICompatProvider("openai", f"{base}/openai/v1", "gpt", "k", 30, 64)
        breaker = CircuitBreaker("bench:openai")
        slot = ProviderSlot(provider, breaker, asyncio.Semaphore(64), timeout_s=30)
        router = Router([slot], cache=None)

        async def routed(i: int) -> None:
            answer = await router.complete(request(i))
            assert isinstance(answer, Completion)

        for fn in (bare, routed):  # warm up both
            await load(fn, 500, concurrency)
        results: dict[str, object] = {}
        # alternate rounds so that both see the same machine; compare the medians
        bare_rounds: list[float] = []
        routed_rounds: list[float] = []
        for _ in range(rounds):
            bare_rounds.append((await load(bare, total // rounds, concurrency))[0])
            routed_rounds.append((await load(routed, total // rounds, concurrency))[0])
        bare_rps = statistics.median(bare_rounds)
        routed_rps = statistics.median(routed_rounds)
        _, bare_seq = await load(bare, sequential, 1)
        _, routed_seq = await load(routed, sequential, 1)

        cached_router = Router(
            [ProviderSlot(provider, CircuitBreaker("bench:cached"), asyncio.Semaphore(64))],
            cache=LocalCache(1000),
        )
        await cached_router.complete(request(0))

        async def hit(_: int) -> None:
            answer = await cached_router.complete(request(0))
            assert isinstance(answer, Completion) and answer.cached

        _, hits = await load(hit, 10_000, 1)
        await router.close()
        await session.close()

        added_p50 = (percentile(routed_seq, 50) - percentile(bare_seq, 50)) * 1000
        added_p99 = (percentile(routed_seq, 99) - percentile(bare_seq, 99)) * 1000
        hit_p99 = percentile(hits, 99) * 1000
        ratio = routed_rps / bare_rps
        results = {
            "benchmark": "ai",
            "requests": total,
            "rounds": rounds,
            "concurrency": concurrency,
            "bare_rps": round(bare_rps),
            "router_rps": round(routed_rps),
            "router_vs_bare": round(ratio, 3),
            "sequential_bare_p50_ms": round(percentile(bare_seq, 50) * 1000, 3),
            "sequential_router_p50_ms": round(percentile(routed_seq, 50) * 1000, 3),
            "added_latency_p50_ms": round(added_p50, 3),
            "added_latency_p99_ms": round(added_p99, 3),
            "cache_hit_p50_ms": round(statistics.median(hits) * 1000, 4),
            "cache_hit_p99_ms": round(hit_p99, 4),
            "targets": {
                "router_vs_bare>=0.70": ratio >= 0.70,
                "added_p50<=0.5ms": added_p50 <= 0.5,
                "added_p99<=3ms": added_p99 <= 3.0,
                "cache_hit_p99<=0.2ms": hit_p99 <= 0.2,
            },
        }
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=2_000)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(main(args.requests, args.concurrency, args.sequential))))
