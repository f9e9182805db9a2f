"""Benchmark reports: each bench's JSON → markdown, written into ``docs/benchmarks.md``.

Each bench has a section in ``docs/benchmarks.md`` holding one generated block between
``<!-- bench:NAME:begin -->`` and ``<!-- bench:NAME:end -->``. Only that block is ever
rewritten; everything outside the markers (the hand-written explanations) stays byte for
byte as it is. The block states the machine, the date and the command of the run, the
figures with their same-run baselines and ratios, and pass/fail per target as the bench's
own ``targets`` object says.

Renderers fail soft: a key a renderer expects but the JSON lacks shows as ``—`` and is
named under the tables; a key it does not know is named too ("not rendered"); a target it
does not place in a row gets a row of its own; a renderer that raises falls back to a
plain key/value table. A bench's JSON can therefore change without breaking the report.

Command line (the JSON on stdin, e.g. one saved from an earlier run)::

    python bench/report.py render NAME [--command CMD]
    python bench/report.py write NAME [--command CMD] [--doc PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

#: Every benchmark ``scripts/bench all`` runs, in this order (the order of the doc).
BENCHMARKS: tuple[str, ...] = (
    "runtime",
    "ai",
    "sessions",
    "sim_telegram",
    "telethon_clients",
    "api",
    "pipeline",
    "failover",
)

#: Files in bench/ that are not benchmarks.
NOT_BENCHMARKS: frozenset[str] = frozenset({"report", "all"})

#: Top-level keys that describe the run rather than measure anything (the generated block
#: states the machine itself).
_META_KEYS: tuple[str, ...] = ("benchmark", "python", "cpus", "machine", "loop", "pass")

DASH = "—"

KeyPath = tuple[str, ...]


class MarkerError(ValueError):
    """The document lacks a bench's markers, or has them more than once or out of order."""


# -- the machine and the run --------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open() as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        with Path("/proc/meminfo").open() as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on, gathered now (Linux; fields may be None)."""
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "uvloop": _package_version("uvloop"),
        "load_average_1m": load,
    }


def describe_machine(machine: Mapping[str, Any]) -> str:
    """One line: CPUs, RAM, kernel, Python, uvloop, load average."""
    parts = [f"{machine.get('cpus') or '?'} × {machine.get('cpu_model') or 'unknown CPU'}"]
    if machine.get("ram_gib") is not None:
        parts.append(f"{machine['ram_gib']} GiB RAM")
    for key in ("kernel", "python"):
        if machine.get(key):
            parts.append(str(machine[key]))
    parts.append(f"uvloop {machine['uvloop']}" if machine.get("uvloop") else "no uvloop")
    if machine.get("load_average_1m") is not None:
        parts.append(f"load average {machine['load_average_1m']} at the start")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Where, when and how a bench ran."""

    command: str
    machine: Mapping[str, Any]
    date: str
    note: str | None = None

    @classmethod
    def now(cls, command: str, note: str | None = None) -> RunInfo:
        """This machine, this minute."""
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return cls(command, machine_info(), date, note)


# -- reading a bench's JSON ----------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    used: set[KeyPath] = field(default_factory=set)
    missing: set[KeyPath] = field(default_factory=set)
    targets: dict[str, Any] = field(default_factory=dict)
    placed: list[str] = field(default_factory=list)


def _dotted(path: KeyPath) -> str:
    return ".".join(path).replace(".[]", "[]")


class Figures:
    """Read access to one bench's JSON that remembers what was read, and what was missing."""

    def __init__(self, data: Mapping[str, Any], prefix: KeyPath = (), seen: _Seen | None = None):
        self._data = data
        self._prefix = prefix
        self._seen = seen if seen is not None else _Seen()
        if seen is None:
            targets = data.get("targets")
            self._seen.targets = dict(targets) if isinstance(targets, Mapping) else {}
            self._seen.used.add(("targets",))  # every target is rendered, placed or not

    @property
    def data(self) -> Mapping[str, Any]:
        """The JSON object itself (nothing is noted)."""
        return self._data

    def _lookup(self, path: Sequence[str]) -> tuple[bool, Any]:
        node: Any = self._data
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def get(self, *path: str, optional: bool = False) -> Any:
        """The value at ``path`` (None when absent: noted as missing unless ``optional``)."""
        found, value = self._lookup(path)
        if found:
            self._seen.used.add(self._prefix + path)
        elif not optional:
            self._seen.missing.add(self._prefix + path)
        return value

    def has(self, *path: str) -> bool:
        """Whether ``path`` exists (not noted either way)."""
        return self._lookup(path)[0]

    def num(self, *path: str, unit: str = "", optional: bool = False) -> str:
        """The value at ``path`` formatted, with ``unit`` when there is a value."""
        return with_unit(self.get(*path, optional=optional), unit)

    def each(self, *path: str, optional: bool = False) -> list[Figures]:
        """One ``Figures`` per object of the list at ``path`` (``optional``: its absence
        is not reported as missing)."""
        items = self._lookup(path)[1]  # not noted: its items' keys are, one by one
        if not isinstance(items, list):
            if not optional:
                self._seen.missing.add(self._prefix + path)
            return []
        prefix = (*self._prefix, *path, "[]")
        return [Figures(item, prefix, self._seen) for item in items if isinstance(item, Mapping)]

    def ignore(self, *keys: str) -> None:
        """Mark top-level ``keys`` as read (metadata the block states otherwise)."""
        for key in keys:
            self._seen.used.add((*self._prefix, key))

    def verdict(self, *keys: str, prefix: str | None = None) -> str:
        """``pass`` / ``**fail**`` from the bench's targets ``keys`` (and those starting with
        ``prefix``), placed in this row; empty when the JSON has none of them."""
        found = [k for k in keys if k in self._seen.targets and k not in self._seen.placed]
        if prefix is not None:
            found += [
                k
                for k in self._seen.targets
                if k.startswith(prefix) and k not in found and k not in self._seen.placed
            ]
        if not found:
            return ""
        self._seen.placed.extend(found)
        return verdict_of(self._seen.targets[k] for k in found)

    def targets(self) -> dict[str, Any]:
        """The bench's own targets, as it printed them."""
        return dict(self._seen.targets)

    def unplaced_targets(self) -> dict[str, Any]:
        """Targets no row claimed."""
        return {k: v for k, v in self._seen.targets.items() if k not in self._seen.placed}

    def unknown(self) -> list[str]:
        """Leaf keys of the JSON that nothing read (dotted; ``[]`` for list items)."""
        out = []
        for path in _leaves(self._data, self._prefix):
            if not any(path[:i] in self._seen.used for i in range(1, len(path) + 1)):
                out.append(_dotted(path))
        return sorted(set(out))

    def missing(self) -> list[str]:
        """Keys a renderer asked for that the JSON lacks."""
        return sorted({_dotted(path) for path in self._seen.missing})


def _leaves(node: Any, prefix: KeyPath) -> Iterator[KeyPath]:
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _leaves(value, (*prefix, str(key)))
    elif isinstance(node, list) and node and all(isinstance(x, Mapping) for x in node):
        for item in node:
            yield from _leaves(item, (*prefix, "[]"))
    elif prefix:
        yield prefix


def verdict_of(values: Iterable[Any]) -> str:
    """``pass`` when every value is true, ``**fail**`` when one is false, else ``?``."""
    values = list(values)
    if any(v is False for v in values):
        return "**fail**"
    if values and all(v is True for v in values):
        return "pass"
    return "?"


# -- formatting ------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A figure as a table cell: thousands separators, the bench's own rounding kept."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return DASH
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.6g}"
    if isinstance(value, str):
        return value.replace("|", "\\|").replace("\n", " ")
    return fmt(json.dumps(value, default=str))


def with_unit(value: Any, unit: str) -> str:
    """``fmt(value)`` followed by ``unit``, or ``—``."""
    text = fmt(value)
    if text == DASH or not unit:
        return text
    return f"{text}{unit}" if unit in ("%", "×") else f"{text} {unit}"


def ratio(value: Any) -> str:
    """A ratio as ``0.74×``."""
    return with_unit(value, "×")


def ms_or_s(value: Any) -> str:
    """Milliseconds, shown as seconds from 1,000 ms up."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value / 1000:.3g} s" if value >= 1000 else f"{value:.3g} ms"
    return fmt(value)


def pair(a: str, b: str) -> str:
    """``a / b``, or one dash when both are missing."""
    return DASH if a == b == DASH else f"{a} / {b}"


@dataclass(frozen=True, slots=True)
class Table:
    """A markdown table."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]

    def markdown(self) -> str:
        """The table as GitHub markdown."""

        def line(cells: Sequence[str]) -> str:
            return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

        width = len(self.header)
        out = [line(self.header), "|" + "---|" * width]
        out += [line([*row, *[""] * (width - len(row))][:width]) for row in self.rows]
        return "\n".join(out)


Part = Table | str
Renderer = Callable[[Figures], list[Part]]


# -- the renderers, one per bench -------------------------------------------------------------


def render_runtime(f: Figures) -> list[Part]:
    """bench/runtime.py: tell throughput, ask round trip, supervisor restart latency."""
    f.ignore("loop")
    tp, rt, rs = "throughput_msgs_per_s", "round_trip_us", "restart_latency_ms"
    tell = (
        f"`tell` throughput (msgs/s, mailbox {f.num(tp, 'mailbox')}, "
        f"{f.num(tp, 'messages')} msgs, median of {f.num(tp, 'rounds')} rounds)"
    )
    ask = f"`ask` round trip p50 / p99 (µs, {f.num(rt, 'calls')} calls)"
    soon = pair(
        f.num(rt, "bare_call_soon_future", "p50"), f.num(rt, "bare_call_soon_future", "p99")
    )
    restart = (
        f"supervisor restart latency, crash → handling again, backoff "
        f"{f.num(rs, 'backoff')} (ms, {f.num(rs, 'restarts')} restarts)"
    )
    rows = [
        [
            tell,
            f.num(tp, "bare_queue"),
            f.num(tp, "actor_tell"),
            ratio(f.get(tp, "ratio")),
            "≥ 0.5×",
            f.verdict("tell_throughput_ratio_ge_0.5"),
        ],
        [
            ask,
            pair(f.num(rt, "bare_queue_future", "p50"), f.num(rt, "bare_queue_future", "p99")),
            pair(f.num(rt, "actor_ask", "p50"), f.num(rt, "actor_ask", "p99")),
            f"p99 {ratio(f.get(rt, 'p99_ratio'))} "
            f"({ratio(f.get(rt, 'p99_ratio_vs_call_soon'))} vs `call_soon`: {soon})",
            "p99 ≤ 4×",
            f.verdict("ask_p99_ratio_le_4"),
        ],
        [
            "`ask` round trip max (µs)",
            f.num(rt, "bare_queue_future", "max"),
            f.num(rt, "actor_ask", "max"),
            f"`call_soon`: {f.num(rt, 'bare_call_soon_future', 'max')}",
            "",
            "",
        ],
        [
            restart,
            DASH,
            f"p50 {f.num(rs, 'p50')}, p99 {f.num(rs, 'p99')}, max {f.num(rs, 'max')}",
            DASH,
            "p99 ≤ 5 ms",
            f.verdict("restart_p99_le_5ms"),
        ],
    ]
    header = ["figure", "bare asyncio", "VIBEE", "ratio", "target", ""]
    return [Table(header, rows)]


def render_ai(f: Figures) -> list[Part]:
    """bench/ai.py: the router against a bare aiohttp client on the same fake provider."""
    throughput = (
        f"throughput, concurrency {f.num('concurrency')} (req/s; {f.num('requests')} requests, "
        f"median of {f.num('rounds')} alternating rounds)"
    )
    rows = [
        [
            throughput,
            f.num("bare_rps"),
            f.num("router_rps"),
            ratio(f.get("router_vs_bare")),
            "≥ 0.70×",
            f.verdict("router_vs_bare>=0.70"),
        ],
        [
            "sequential p50 (ms)",
            f.num("sequential_bare_p50_ms"),
            f.num("sequential_router_p50_ms"),
            f"added **{f.num('added_latency_p50_ms')}** ms",
            "added ≤ 0.5 ms",
            f.verdict("added_p50<=0.5ms"),
        ],
        [
            "sequential p99, router minus bare (ms)",
            DASH,
            DASH,
            f"added **{f.num('added_latency_p99_ms')}** ms",
            "added ≤ 3 ms",
            f.verdict("added_p99<=3ms"),
        ],
        [
            "cache hit p50 / p99 (ms)",
            DASH,
            pair(f.num("cache_hit_p50_ms"), f.num("cache_hit_p99_ms")),
            DASH,
            "p99 ≤ 0.2 ms",
            f.verdict("cache_hit_p99<=0.2ms"),
        ],
    ]
    header = ["figure", "bare aiohttp client", "router", "ratio / added", "target", ""]
    return [Table(header, rows)]


def render_sessions(f: Figures) -> list[Part]:
    """bench/sessions.py: N session actors on the sim, with ingest and the session manager."""
    n = f.num("sessions")
    burst = f"burst: {f.num('burst_messages')} messages, one per account, until stored"
    rows = [
        [f"sweep → all {n} actors `connected`", f.num("connect_all_s", unit="s"), "", ""],
        [
            "RSS of the empty daemon (the baseline)",
            f.num("rss_empty_daemon_mib", unit="MiB"),
            "",
            "",
        ],
        [
            "RSS per idle connected session, above the empty daemon",
            f"**{f.num('rss_per_idle_session_kib', unit='KiB')}**",
            "≤ 20 KiB",
            f.verdict("rss_per_idle_session<=20KiB"),
        ],
        [
            "CPU while idle",
            f"{f.num('idle_cpu_percent_of_one_core', unit='%')} of one core",
            "< 5 %",
            f.verdict("idle_cpu<5%"),
        ],
        [
            burst,
            f"{f.num('burst_stored_s', unit='s')} ({f.num('stored_msgs_per_s')} msgs/s)",
            "",
            "",
        ],
        [
            "sim's `max_connections_per_account`",
            f.num("sim_max_connections_per_account"),
            "1",
            f.verdict("max_connections_per_account==1"),
        ],
    ]
    return [Table(["figure", "measured", "target", ""], rows)]


def render_sim_telegram(f: Figures) -> list[Part]:
    """bench/sim_telegram.py: N SimGateways over one WebSocket, no session actor."""
    n = f.num("accounts")
    connect = f"{f.num('connect_all_s', unit='s')} ({f.num('connects_per_s')} connects/s)"
    messages, accounts = f.get("burst_messages"), f.get("accounts")
    per_account = (
        messages // accounts
        if isinstance(messages, int) and isinstance(accounts, int) and accounts > 0
        else None
    )
    burst = (
        f"burst of {f.num('burst_messages')} messages ({fmt(per_account)} per account), "
        "injected → all delivered"
    )
    delivered = f"{f.num('burst_delivered_s', unit='s')} ({f.num('delivered_msgs_per_s')} msgs/s)"
    rows = [
        [f"setup: {n} accounts and chats in the sim", f.num("setup_s", unit="s"), "", ""],
        [f"connect all {n}", connect, "", ""],
        ["RSS before any gateway (the baseline)", f.num("rss_baseline_mib", unit="MiB"), "", ""],
        ["RSS per idle connected gateway", f.num("rss_per_idle_gateway_kib", unit="KiB"), "", ""],
        [
            "same, with a task reading its events",
            f.num("rss_per_idle_gateway_with_consumer_task_kib", unit="KiB"),
            "≤ 20 KiB",
            f.verdict("rss_per_idle_gateway_with_consumer_task<=20KiB"),
        ],
        [
            "idle CPU",
            f"{f.num('idle_cpu_percent_of_one_core', unit='%')} of one core",
            "",
            "",
        ],
        [burst, delivered, "", ""],
        ["of which injecting", f.num("burst_inject_s", unit="s"), "", ""],
        [
            "sim: updates delivered in the burst, connections, transports",
            f"{f.num('sim_updates_delivered_in_burst')}, {f.num('sim_connections')}, "
            f"{f.num('sim_transports')}",
            "",
            "",
        ],
        [
            "sim's `max_connections_per_account`",
            f.num("sim_max_connections_per_account"),
            "1",
            f.verdict("max_connections_per_account==1"),
        ],
    ]
    return [Table(["figure", "measured", "target", ""], rows)]


def render_telethon_clients(f: Figures) -> list[Part]:
    """bench/telethon_clients.py: memory of constructed, unconnected Telethon clients."""
    n = f.num("clients")
    rows = [
        [
            "RSS per client",
            f"{f.num('client_rss_kib_each', unit='KiB')} "
            f"(built in {f.num('client_build_us_each', unit='µs')})",
        ],
        [
            "RSS per `TelethonGateway` (client + our state)",
            f"{f.num('gateway_rss_kib_each', unit='KiB')} "
            f"(built in {f.num('gateway_build_us_each', unit='µs')})",
        ],
        [
            f"RSS of the process with {n} clients and {n} gateways",
            f"{f.num('rss_total_mib', unit='MiB')} (base {f.num('rss_base_mib', unit='MiB')}, "
            f"peak {f.num('max_rss_mib', unit='MiB')})",
        ],
        ["Telethon", f.num("telethon")],
    ]
    return [Table(["figure", "measured"], rows)]


def render_api(f: Figures) -> list[Part]:
    """bench/api.py: the public API against a bare aiohttp hello-world, wrk and a paced client."""
    f.ignore("wrk", "seconds_per_round", "rounds")
    hello = f.num("hello_rps")
    rate = f.num("fixed_rate_me", "rate")

    def paced(key: str) -> str:
        text = f"{f.num(key, 'service_p50_ms')} / {f.num(key, 'service_p99_ms')}"
        extras = (  # the secondary figures, when the JSON has them
            ("max {}", "service_max_ms"),
            ("scheduled p99 {}", "scheduled_p99_ms"),
            ("achieved {} req/s", "achieved_rps"),
            ("{} requests", "requests"),
            ("{} errors", "errors"),
        )
        shown = [form.format(f.num(key, k)) for form, k in extras if f.has(key, k)]
        return f"{text} ({'; '.join(shown)})" if shown else text

    rows = [
        [
            "`GET /health` (req/s)",
            hello,
            f.num("health_rps"),
            ratio(f.get("health_vs_hello")),
            "≥ 0.80×",
            f.verdict("health_vs_hello>=0.80"),
        ],
        [
            "authenticated `GET /api/v1/users/me` (req/s)",
            hello,
            f.num("me_rps"),
            ratio(f.get("me_vs_hello")),
            "≥ 0.50×",
            f.verdict("me_vs_hello>=0.50"),
        ],
        [
            "same, user row read on every request (`user_cache_ttl_s = 0`)",
            hello,
            f.num("me_uncached_rps"),
            ratio(f.get("me_uncached_vs_hello")),
            DASH,
            "",
        ],
        [
            f"`/users/me` at {rate} req/s: p50 / p99 (ms)",
            DASH,
            paced("fixed_rate_me"),
            DASH,
            "p99 ≤ 5 ms",
            f.verdict(prefix="p99_at_"),
        ],
    ]
    if f.has("fixed_rate_me_uncached"):
        rows.append(
            [
                f"same, uncached, at {f.num('fixed_rate_me_uncached', 'rate')} req/s",
                DASH,
                paced("fixed_rate_me_uncached"),
                DASH,
                DASH,
                "",
            ]
        )
    if f.has("wrk_p99_ms_at_c64"):
        w = "wrk_p99_ms_at_c64"
        rows.append(
            [
                "wrk p99 at 64 connections, last round (ms): hello · health · me · uncached",
                f.num(w, "hello"),
                f"{f.num(w, 'health')} · {f.num(w, 'me')} · {f.num(w, 'me_uncached')}",
                DASH,
                DASH,
                "",
            ]
        )
    header = ["figure", "bare hello-world", "VIBEE", "ratio", "target", ""]
    method = (
        f"wrk `{fmt(f.get('wrk'))}`, median of {f.num('rounds')} rounds of "
        f"{f.num('seconds_per_round', unit='s')} per target."
    )
    return [method, Table(header, rows)]


ARRIVALS = {
    "bursts": "bursts every 100 ms",
    "poisson": "one by one, Poisson",
    "even": "one by one, evenly",
}
"""How bench/pipeline.py's messages arrived, as the tables say it."""


PIPELINE_STAGES = ("queued", "decide", "write")
"""The parts of the overhead bench/pipeline.py reports (``stages_ms_at_most``)."""


def _stages(f: Figures) -> list[Part]:
    """The overhead's parts in the paced cases (runs since 2026-11-25 only)."""
    rows = []
    for case in f.each("paced_cases", optional=True):
        if not case.has("stages_ms_at_most"):
            continue
        row = [case.num("offered_msgs_per_s")]
        for stage in PIPELINE_STAGES:
            found = case.get("stages_ms_at_most", stage, optional=True)
            p50, p99 = ([*found, None, None] if isinstance(found, list) else [None, None])[:2]
            row.append(pair(ms_or_s(p50), ms_or_s(p99)))
        rows.append(row)
    for case in f.each("cases", optional=True):
        case.ignore("stages_ms_at_most")  # the bursts: the paced cases show the parts
    if not rows:
        return []
    header = ["one by one, offered msgs/s"] + [f"{s} p50 / p99 ≤" for s in PIPELINE_STAGES]
    return [Table(header, rows)]


def render_pipeline(f: Figures) -> list[Part]:
    """bench/pipeline.py: replies end to end at several rates and AI latencies, and ingest."""
    header = [
        "AI latency",
        "offered msgs/s",
        "arrival",
        "messages",
        "replies sent",
        "replies/s",
        "overhead p50 ≤",
        "p99 ≤",
        "end to end p50 / p99 (ms)",
    ]
    parts: list[Part] = []
    for key in ("cases", "paced_cases"):
        rows = []
        for case in f.each(key, optional=key == "paced_cases"):  # newer runs only
            rows.append(
                [
                    case.num("ai_latency_ms", unit="ms"),
                    case.num("offered_msgs_per_s"),
                    ARRIVALS.get(str(case.get("arrival", optional=True)), DASH),
                    case.num("messages"),
                    case.num("replies_sent"),
                    case.num("replies_per_s"),
                    ms_or_s(case.get("overhead_p50_ms_at_most")),
                    ms_or_s(case.get("overhead_p99_ms_at_most")),
                    pair(
                        case.num("end_to_end_p50_ms", optional=True),
                        case.num("end_to_end_p99_ms", optional=True),
                    ),
                ]
            )
        if rows:
            parts.append(Table(header, rows))
    parts.extend(_stages(f))

    cases = [c for c in f.each("cases") if c.get("ai_latency_ms", optional=True) == 0]
    best = max(
        (c.get("replies_per_s") for c in cases if isinstance(c.get("replies_per_s"), int | float)),
        default=None,
    )
    paced = list(f.each("paced_cases", optional=True))
    at_1000 = next((c for c in paced if c.get("offered_msgs_per_s") == 1000), None)
    arrival = ARRIVALS.get(str(at_1000.get("arrival", optional=True)), "") if at_1000 else ""
    p50 = ms_or_s(at_1000.get("overhead_p50_ms_at_most")) if at_1000 else DASH
    p99 = ms_or_s(at_1000.get("overhead_p99_ms_at_most")) if at_1000 else DASH
    targets = [
        [
            "replies/s, best at 0 ms AI latency",
            fmt(best),
            "≥ 1,000",
            f.verdict("replies_per_s>=1000"),
        ],
        [
            f"overhead p50 at 1,000 msgs/s ({arrival}), 0 ms AI",
            f"≤ {p50}",
            "≤ 1 ms",
            f.verdict("overhead_p50<=1ms@1000"),
        ],
        [
            f"overhead p99 at 1,000 msgs/s ({arrival}), 0 ms AI",
            f"≤ {p99}",
            "≤ 5 ms",
            f.verdict("overhead_p99<=5ms@1000"),
        ],
    ]
    parts.append(Table(["reply target", "measured", "target", ""], targets))

    ingest = [
        [
            f.num("ingest", "ingest_msgs_per_s"),
            f.num("ingest", "asyncpg_batch_insert_rows_per_s"),
            ratio(f.get("ingest", "ingest_vs_asyncpg")),
            "≥ 20,000 msgs/s",
            f.verdict("ingest>=20000"),
        ]
    ]
    header = [
        f"ingest, observe mode ({f.num('ingest', 'messages')} msgs), msgs/s",
        "asyncpg `unnest` batches of 500, same run, rows/s",
        "ratio",
        "target",
        "",
    ]
    parts.append(Table(header, ingest))
    return parts


def render_failover(f: Figures) -> list[Part]:
    """bench/failover.py: see ``FAILOVER_KEYS`` for the JSON it prints.

    Targets are placed by name: ``failover…`` on the failover row, ``handover…`` on the
    graceful one, ``coordinat…`` on the coordination row, ``lost…``/``duplicate…``/
    ``max_connections…`` on theirs.
    """
    runs = f.get("failover_runs_s", optional=True)
    setup = (
        f"{f.num('instances')} instances, {f.num('sessions')} sessions, "
        f"{f.num('runs')} runs (one instance killed per run)"
    )
    if f.has("lease_ttl_s"):
        setup += f", lease TTL {f.num('lease_ttl_s', unit='s')}"
    rows = [
        [
            "failover: instance killed → its sessions connected elsewhere (s), median / max",
            DASH,
            pair(f.num("failover_median_s"), f.num("failover_max_s")),
            DASH,
            f.verdict(prefix="failover"),
        ],
        *(
            [
                [
                    "hand-over: instance stopped (SIGTERM) → its sessions connected "
                    "elsewhere (s), median / max",
                    DASH,
                    pair(f.num("handover_median_s"), f.num("handover_max_s")),
                    DASH,
                    f.verdict(prefix="handover"),
                ]
            ]
            if f.has("handover_median_s")
            else []
        ),
        [
            f"coordination cost per message ({f.num('coordination_messages')} msgs"
            + (
                f", {f.num('coordinated_instances')} instance"
                if f.has("coordinated_instances")
                else ""
            )
            + ", µs)",
            f.num("single_instance_us_per_msg"),
            f"{f.num('coordinated_us_per_msg')} (+{f.num('coordination_added_us_per_msg')})",
            ratio(f.get("coordinated_vs_single")),
            f.verdict(prefix="coordinat"),
        ],
    ]
    optional = (
        ("redis_commands_per_msg", "Redis commands per message", "redis"),
        ("lost_messages", "messages lost across failovers", "lost"),
        ("duplicate_replies", "duplicate replies across failovers", "duplicate"),
        ("sim_max_connections_per_account", "sim's `max_connections_per_account`", "max_conn"),
    )
    for key, label, prefix in optional:
        if f.has(key):
            rows.append([label, DASH, f.num(key), DASH, f.verdict(prefix=prefix)])
    header = ["figure", "single instance", "many instances", "ratio", ""]
    parts: list[Part] = [setup + ".", Table(header, rows)]
    if isinstance(runs, list) and runs:
        parts.append("Failover per run (s): " + ", ".join(fmt(r) for r in runs) + ".")
    graceful = f.get("handover_runs_s", optional=True)
    if isinstance(graceful, list) and graceful:
        parts.append("Hand-over per run (s): " + ", ".join(fmt(r) for r in graceful) + ".")
    return parts


#: The keys ``bench/failover.py`` should print for ``render_failover`` (all numbers).
FAILOVER_KEYS: dict[str, str] = {
    "benchmark": '"failover"',
    "instances": "instances running (int)",
    "sessions": "Telegram accounts spread over them (int)",
    "runs": "kills measured (int)",
    "lease_ttl_s": "optional: the lease TTL used (s)",
    "failover_median_s": "median, over the runs, from the kill to every orphaned session "
    "connected on another instance (s)",
    "failover_max_s": "the worst run (s)",
    "failover_runs_s": "optional: every run (list of s)",
    "handover_median_s": "optional: median, SIGTERM → every session of the stopped instance "
    "connected on another (s)",
    "handover_max_s": "optional: the worst graceful run (s)",
    "handover_runs_s": "optional: every graceful run (list of s)",
    "redis_commands_per_msg": "optional: Redis commands per message, one instance (float)",
    "coordinated_instances": "optional: instances in the coordination-cost measurement (int)",
    "coordination_messages": "messages in the coordination-cost measurement (int)",
    "single_instance_us_per_msg": "baseline, same run: one instance, local coordinator (µs)",
    "coordinated_us_per_msg": "the same messages with Redis coordination, N instances (µs)",
    "coordination_added_us_per_msg": "coordinated minus single (µs)",
    "coordinated_vs_single": "coordinated / single (ratio)",
    "lost_messages": "optional: inbound messages never stored (int)",
    "duplicate_replies": "optional: messages answered twice (int)",
    "sim_max_connections_per_account": "optional: must stay 1 (int)",
    "targets": 'name → bool, e.g. {"failover_max<=30s": true, "coordination_vs_single<=1.2": '
    "true}; placed on the rows by prefix (failover…, coordinat…, lost…, duplicate…, "
    "max_conn…)",
}


RENDERERS: dict[str, Renderer] = {
    "runtime": render_runtime,
    "ai": render_ai,
    "sessions": render_sessions,
    "sim_telegram": render_sim_telegram,
    "telethon_clients": render_telethon_clients,
    "api": render_api,
    "pipeline": render_pipeline,
    "failover": render_failover,
}


def render_plain(f: Figures) -> list[Part]:
    """Any JSON: one row per leaf key (for a bench without a renderer, or when one fails)."""
    rows = [[f"`{_dotted(p)}`", fmt(_at(f.data, p))] for p in _leaves(f.data, ())]
    f.ignore(*(str(k) for k in f.data))
    return [Table(["key", "value"], rows)]


def _at(node: Any, path: KeyPath) -> Any:
    """The value at ``path``; list items (``[]``) shown as the list of their values (None
    for an item without it)."""
    for i, part in enumerate(path):
        if part == "[]":
            return [_at(item, path[i + 1 :]) for item in node]
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# -- the generated block --------------------------------------------------------------------


def begin_marker(name: str) -> str:
    """The line that opens a bench's generated block."""
    return f"<!-- bench:{name}:begin -->"


def end_marker(name: str) -> str:
    """The line that closes a bench's generated block."""
    return f"<!-- bench:{name}:end -->"


def render(name: str, result: Mapping[str, Any], run: RunInfo) -> str:
    """The generated block's body (between the markers) for ``result`` of bench ``name``."""
    figures = Figures(result)
    figures.ignore(*(k for k in _META_KEYS if k in result))
    renderer = RENDERERS.get(name)
    failure = None
    try:
        parts = renderer(figures) if renderer else render_plain(figures)
    except Exception as error:  # fail soft: the figures still reach the doc
        failure = f"{type(error).__name__}: {error}"
        figures = Figures(result)
        parts = render_plain(figures)

    out = [
        f"<!-- generated by scripts/bench from bench/{name}.py's JSON: edit outside the "
        "markers only -->",
        f"- command: `{run.command}`, {run.date}\n- machine: {describe_machine(run.machine)}"
        + (f"\n- note: {run.note}" if run.note else ""),
    ]
    if failure:
        out.append(f"**The renderer for `{name}` failed** ({fmt(failure)}); the raw figures:")
    out += [p.markdown() if isinstance(p, Table) else p for p in parts]
    unplaced = figures.unplaced_targets()
    if unplaced and not failure:
        out.append(
            Table(
                ["target (as the bench names it)", ""],
                [[f"`{k}`", verdict_of([v])] for k, v in unplaced.items()],
            ).markdown()
        )
    out.append(targets_line(figures.targets()))
    notes = []
    if figures.missing() and not failure:
        notes.append("Expected but missing from the JSON: " + _codes(figures.missing()) + ".")
    if figures.unknown():
        notes.append("In the JSON, not rendered: " + _codes(figures.unknown()) + ".")
    if notes:
        out.append(" ".join(notes))
    return "\n\n".join(out) + "\n"


def _codes(keys: Iterable[str]) -> str:
    return ", ".join(f"`{k}`" for k in keys)


def targets_line(targets: Mapping[str, Any]) -> str:
    """How many of the bench's own targets pass, naming those that do not."""
    if not targets:
        return "No targets: figures for the record."
    passed = [k for k, v in targets.items() if v is True]
    failed = [k for k, v in targets.items() if v is not True]
    line = f"Targets: **{len(passed)} of {len(targets)} pass**"
    return line + (f"; missed: {_codes(failed)}." if failed else ".")


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block of bench ``name`` replaced by ``body``; the rest untouched.

    Raises ``MarkerError`` unless each marker is there exactly once, begin before end.
    """
    begin, end = begin_marker(name), end_marker(name)
    counts = (text.count(begin), text.count(end))
    if counts != (1, 1):
        raise MarkerError(
            f"need exactly one {begin!r} and one {end!r} in the document, found "
            f"{counts[0]} and {counts[1]}: add the section's markers (see docs/benchmarks.md)"
        )
    start = text.index(begin) + len(begin)
    stop = text.index(end)
    if stop < start:
        raise MarkerError(f"{end!r} comes before {begin!r}")
    newline = "\r\n" if text[start : start + 2] == "\r\n" else "\n"
    inner = body.strip("\n").replace("\n", newline)
    return text[:start] + newline + inner + newline * 2 + text[stop:]


def write_block(doc: Path, name: str, body: str) -> None:
    """Replace bench ``name``'s block in ``doc`` (atomically; bytes outside it unchanged)."""
    text = doc.read_bytes().decode("utf-8")
    new = replace_block(text, name, body)
    if new == text:
        return
    fd, tmp = tempfile.mkstemp(dir=doc.parent, prefix=f".{doc.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(new.encode("utf-8"))
        Path(tmp).chmod(doc.stat().st_mode & 0o7777)
        Path(tmp).replace(doc)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``render`` or ``write`` a block from a bench's JSON on stdin."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("action", choices=("render", "write"))
    parser.add_argument("name", help="the bench: " + ", ".join(BENCHMARKS))
    parser.add_argument("--command", help="the command that produced the JSON")
    parser.add_argument("--note", help="a line to add under the machine")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    result = json.load(sys.stdin)
    if not isinstance(result, dict):
        parser.error("the JSON on stdin is not an object")
    run = RunInfo.now(args.command or f"scripts/bench {args.name}", args.note)
    body = render(args.name, result, run)
    if args.action == "render":
        sys.stdout.write(body)
        return 0
    try:
        write_block(args.doc, args.name, body)
    except MarkerError as error:
        print(f"bench/report.py: {args.doc}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
