"""Runtime benchmark: actor overhead against bare asyncio, and supervisor restart latency.

Run: ``.venv/bin/python bench/runtime.py`` (prints one JSON object). Everything runs in one
process under uvloop, bare baselines and actors interleaved round by round, so the ratios
compare like with like on this machine:

1. throughput: a producer ``await queue.put(msg)`` into a bare ``asyncio.Queue`` of the
   same bound as the mailbox, and a consumer task counting messages, against
   ``await actor.tell(msg)`` with ``handle`` counting. Target: actor ≥ 50 % of bare.
2. round trip: the bare baseline is a server task reading ``(msg, future)`` from a bare
   queue and resolving the future (the least a request/reply across tasks needs), against
   ``await actor.ask(msg, timeout)``. A future resolved by ``loop.call_soon`` (no second
   task) is reported too, for reference. Target: actor p99 ≤ 4 × bare p99.
3. restart latency: crash → handling messages again, i.e. from telling a supervised actor
   a message that makes it raise to the first answered ``ask`` of its replacement, backoff
   0, the crash logged with its traceback through the JSON formatter to /dev/null.
   Target: p99 ≤ 5 ms.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibee.obs import logging as vlog
from vibee.runtime import Actor, ChildSpec, RestartPolicy, Supervisor

MAILBOX = 1000
TELL_MESSAGES = 200_000
TELL_ROUNDS = 7
ASK_CALLS = 20_000
ASK_ROUNDS = 5
RESTARTS = 1_000


@dataclass(frozen=True, slots=True)
class Msg:
    """A typical message: a frozen, slotted dataclass."""

    n: int


MSG = Msg(1)
CRASH = Msg(-1)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. throughput ---------------------------------------------------------------------


async def bare_throughput(n: int) -> float:
    """Messages per second through a bare bounded queue."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Msg] = asyncio.Queue(MAILBOX)
    finished: asyncio.Future[None] = loop.create_future()

    async def consumer() -> None:
        count = 0
        while True:
            await queue.get()
            count += 1
            if count == n:
                finished.set_result(None)
                return

    task = loop.create_task(consumer())
    start = time.perf_counter()
    for _ in range(n):
        await queue.put(MSG)
    await finished
    elapsed = time.perf_counter() - start
    await task
    return n / elapsed


class CountingActor(Actor[Msg, None]):
    """Counts messages; resolves ``finished`` at ``target``."""

    def __init__(self, target: int, finished: asyncio.Future[None]) -> None:
        super().__init__("bench:counter", mailbox_size=MAILBOX, queue_label="bench")
        self.count = 0
        self.target = target
        self.finished = finished

    async def handle(self, message: Msg) -> None:
        """Count one message."""
        self.count += 1
        if self.count == self.target:
            self.finished.set_result(None)


async def actor_throughput(n: int) -> float:
    """Messages per second through ``Actor.tell``."""
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    actor = CountingActor(n, finished)
    await actor.start()
    tell = actor.tell
    start = time.perf_counter()
    for _ in range(n):
        await tell(MSG)
    await finished
    elapsed = time.perf_counter() - start
    await actor.stop(1.0)
    return n / elapsed


# -- 2. round trip ---------------------------------------------------------------------


async def bare_call_soon_round_trip(n: int) -> list[float]:
    """Latencies (µs) of a future resolved by ``call_soon``."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    out: list[float] = []
    for _ in range(n):
        start = clock()
        future: asyncio.Future[Msg] = loop.create_future()
        loop.call_soon(future.set_result, MSG)
        await future
        out.append((clock() - start) / 1000)
    return out


async def bare_round_trip(n: int) -> list[float]:
    """Latencies (µs) of a request/reply through a bare queue and a future."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Msg, asyncio.Future[Msg]]] = asyncio.Queue(MAILBOX)

    async def server() -> None:
        while True:
            message, reply = await queue.get()
            reply.set_result(message)

    task = loop.create_task(server())
    clock = time.perf_counter_ns
    out: list[float] = []
    for _ in range(n):
        start = clock()
        future: asyncio.Future[Msg] = loop.create_future()
        queue.put_nowait((MSG, future))
        await future
        out.append((clock() - start) / 1000)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return out


class EchoActor(Actor[Msg, Msg]):
    """Answers every message with itself; raises on ``CRASH``."""

    def __init__(self, started: list[asyncio.Future[None]] | None = None) -> None:
        super().__init__("bench:echo", mailbox_size=MAILBOX, queue_label="bench")
        self._started = started

    async def on_start(self) -> None:
        """Tell the benchmark that this incarnation is up."""
        if self._started and not self._started[0].done():
            self._started[0].set_result(None)

    async def handle(self, message: Msg) -> Msg:
        """Echo, or crash on request."""
        if message is CRASH:
            raise RuntimeError("injected crash")
        return message


async def actor_round_trip(n: int) -> list[float]:
    """Latencies (µs) of ``Actor.ask``."""
    actor = EchoActor()
    await actor.start()
    clock = time.perf_counter_ns
    out: list[float] = []
    ask = actor.ask
    for _ in range(n):
        start = clock()
        await ask(MSG, 1.0)
        out.append((clock() - start) / 1000)
    await actor.stop(1.0)
    return out


# -- 3. restart latency ----------------------------------------------------------------


async def restart_latency(n: int) -> list[float]:
    """Latencies (ms) from a crash to the replacement's first answered ask."""
    loop = asyncio.get_running_loop()
    started: list[asyncio.Future[None]] = [loop.create_future()]
    policy = RestartPolicy(max_restarts=10 * n, period=60.0, backoff_base=0.0)
    sup = Supervisor("bench", [ChildSpec("bench:echo", lambda: EchoActor(started))], policy=policy)
    await sup.start()
    out: list[float] = []
    for _ in range(n):
        old = sup.get("bench:echo")
        assert isinstance(old, EchoActor)
        started[0] = loop.create_future()
        start = time.perf_counter_ns()
        old.try_tell(CRASH)
        await started[0]
        new = sup.get("bench:echo")
        while new is None or new is old:  # started, not yet attached: next loop turn
            await asyncio.sleep(0)
            new = sup.get("bench:echo")
        assert isinstance(new, EchoActor)
        await new.ask(MSG, 1.0)
        out.append((time.perf_counter_ns() - start) / 1e6)
    await sup.stop(5.0)
    return out


def summary(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max, rounded."""
    return {
        "p50": round(percentile(values, 0.50), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
    }


async def main() -> dict[str, object]:
    """Run every measurement and return the report."""
    await bare_throughput(20_000)  # warm up
    await actor_throughput(20_000)
    bare_rates: list[float] = []
    actor_rates: list[float] = []
    for _ in range(TELL_ROUNDS):
        gc.collect()
        bare_rates.append(await bare_throughput(TELL_MESSAGES))
        gc.collect()
        actor_rates.append(await actor_throughput(TELL_MESSAGES))
    bare_rate = statistics.median(bare_rates)
    actor_rate = statistics.median(actor_rates)

    soon: list[float] = []
    bare: list[float] = []
    asked: list[float] = []
    await bare_round_trip(2_000)  # warm up
    await actor_round_trip(2_000)
    for _ in range(ASK_ROUNDS):
        gc.collect()
        soon += await bare_call_soon_round_trip(ASK_CALLS)
        gc.collect()
        bare += await bare_round_trip(ASK_CALLS)
        gc.collect()
        asked += await actor_round_trip(ASK_CALLS)
    bare_rt, soon_rt, ask_rt = summary(bare), summary(soon), summary(asked)

    gc.collect()
    restarts = summary(await restart_latency(RESTARTS))

    tell_ratio = actor_rate / bare_rate
    ask_ratio = ask_rt["p99"] / bare_rt["p99"]
    checks = {
        "tell_throughput_ratio_ge_0.5": tell_ratio >= 0.5,
        "ask_p99_ratio_le_4": ask_ratio <= 4.0,
        "restart_p99_le_5ms": restarts["p99"] <= 5.0,
    }
    return {
        "python": platform.python_version(),
        "loop": f"uvloop {version('uvloop')}",
        "cpus": os.cpu_count(),
        "throughput_msgs_per_s": {
            "bare_queue": round(bare_rate),
            "actor_tell": round(actor_rate),
            "ratio": round(tell_ratio, 3),
            "messages": TELL_MESSAGES,
            "rounds": TELL_ROUNDS,
            "mailbox": MAILBOX,
        },
        "round_trip_us": {
            "bare_queue_future": bare_rt,
            "bare_call_soon_future": soon_rt,
            "actor_ask": ask_rt,
            "p99_ratio": round(ask_ratio, 3),
            "p99_ratio_vs_call_soon": round(ask_rt["p99"] / soon_rt["p99"], 3),
            "calls": ASK_CALLS * ASK_ROUNDS,
        },
        "restart_latency_ms": {**restarts, "restarts": RESTARTS, "backoff": 0},
        "targets": checks,
        "pass": all(checks.values()),
    }


if __name__ == "__main__":
    with Path(os.devnull).open("w") as devnull:
        vlog.configure("info", "json", stream=devnull)
        print(json.dumps(uvloop.run(main())))
