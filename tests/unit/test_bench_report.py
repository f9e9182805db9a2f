"""The benchmark report: rendering each bench's JSON, rewriting only its block, the harness.

``bench/`` is a namespace package under the repository root, which pytest puts on
``sys.path`` (rootdir insertion: ``tests/`` is a package), so ``bench.report`` imports.
"""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import all as harness
from bench import report

RUN = report.RunInfo(
    "scripts/bench NAME --flag",
    {
        "cpu_model": "Test CPU 9000",
        "cpus": 2,
        "ram_gib": 23.5,
        "kernel": "Linux 6.18",
        "python": "CPython 3.11.7",
        "uvloop": "0.23.0",
        "load_average_1m": 0.5,
    },
    "2026-11-25 12:00 UTC",
)

RUNTIME: dict[str, Any] = {
    "python": "3.11.7",
    "loop": "uvloop 0.23.0",
    "cpus": 2,
    "throughput_msgs_per_s": {
        "bare_queue": 1907783,
        "actor_tell": 2084588,
        "ratio": 1.093,
        "messages": 200000,
        "rounds": 7,
        "mailbox": 1000,
    },
    "round_trip_us": {
        "bare_queue_future": {"p50": 2.91, "p99": 3.09, "max": 40.2},
        "bare_call_soon_future": {"p50": 1.2, "p99": 1.64, "max": 30.5},
        "actor_ask": {"p50": 4.33, "p99": 5.27, "max": 80.1},
        "p99_ratio": 1.706,
        "p99_ratio_vs_call_soon": 3.213,
        "calls": 100000,
    },
    "restart_latency_ms": {"p50": 0.151, "p99": 0.312, "max": 1.5, "restarts": 1000, "backoff": 0},
    "targets": {
        "tell_throughput_ratio_ge_0.5": True,
        "ask_p99_ratio_le_4": True,
        "restart_p99_le_5ms": True,
    },
    "pass": True,
}


def case(
    ai: int, rate: int, sent: int, rps: int, p50: float, p99: float, arrival: str = "bursts"
) -> dict[str, Any]:
    return {
        "offered_msgs_per_s": rate,
        "arrival": arrival,
        "ai_latency_ms": ai,
        "messages": rate,
        "replies_sent": sent,
        "replies_per_s": rps,
        "overhead_p50_ms_at_most": p50,
        "overhead_p99_ms_at_most": p99,
    }


# bench/pipeline.py's JSON as of 2026-11-25 (the run in docs/benchmarks.md)
PIPELINE: dict[str, Any] = {
    "benchmark": "pipeline",
    "cases": [
        case(0, 100, 100, 100, 25.0, 100.0),
        case(0, 1000, 1000, 644, 500.0, 1000.0),
        case(0, 5000, 1514, 449, 1000.0, 2500.0),
        case(500, 100, 100, 70, 25.0, 25.0),
        case(500, 1000, 1000, 437, 500.0, 2500.0),
        case(500, 5000, 1968, 379, 1000.0, math.nan),
    ],
    "paced_cases": [
        case(0, 100, 100, 100, 1.0, 2.5, "poisson"),
        case(0, 1000, 1000, 990, 2.5, 10.0, "poisson"),
    ],
    "ingest": {
        "messages": 50000,
        "ingest_msgs_per_s": 26937,
        "asyncpg_batch_insert_rows_per_s": 203409,
        "ingest_vs_asyncpg": 0.132,
    },
    "targets": {
        "replies_per_s>=1000": False,
        "overhead_p50<=1ms@1000": False,
        "overhead_p99<=5ms@1000": False,
        "ingest>=20000": True,
    },
}

API: dict[str, Any] = {
    "benchmark": "api",
    "wrk": "-t1 -c64",
    "seconds_per_round": 5,
    "rounds": 3,
    "hello_rps": 50825,
    "health_rps": 42235,
    "me_rps": 26758,
    "me_uncached_rps": 8648,
    "health_vs_hello": 0.831,
    "me_vs_hello": 0.526,
    "me_uncached_vs_hello": 0.17,
    "wrk_p99_ms_at_c64": {"hello": 2.1, "health": 2.5, "me": 4.0, "me_uncached": 12.0},
    "fixed_rate_me": {
        "rate": 1000,
        "achieved_rps": 999,
        "requests": 10000,
        "errors": 0,
        "service_p50_ms": 0.132,
        "service_p99_ms": 1.101,
        "service_max_ms": 7.5,
        "scheduled_p99_ms": 1.3,
    },
    "fixed_rate_me_uncached": {
        "rate": 1000,
        "achieved_rps": 998,
        "requests": 10000,
        "errors": 0,
        "service_p50_ms": 0.4,
        "service_p99_ms": 2.2,
        "service_max_ms": 9.0,
        "scheduled_p99_ms": 2.9,
    },
    "targets": {
        "me_vs_hello>=0.50": True,
        "health_vs_hello>=0.80": True,
        "p99_at_1000rps<=5ms": True,
    },
}

SESSIONS: dict[str, Any] = {
    "benchmark": "sessions",
    "sessions": 10000,
    "connect_all_s": 4.32,
    "rss_empty_daemon_mib": 80.5,
    "rss_per_idle_session_kib": 9.99,
    "idle_cpu_percent_of_one_core": 0.0,
    "burst_messages": 10000,
    "burst_stored_s": 0.56,
    "stored_msgs_per_s": 17981,
    "sim_max_connections_per_account": 1,
    "targets": {
        "rss_per_idle_session<=20KiB": True,
        "idle_cpu<5%": True,
        "max_connections_per_account==1": True,
    },
}

FAILOVER: dict[str, Any] = {
    "benchmark": "failover",
    "instances": 3,
    "sessions": 300,
    "runs": 5,
    "lease_ttl_s": 10.0,
    "failover_median_s": 4.2,
    "failover_max_s": 6.8,
    "failover_runs_s": [4.0, 4.2, 4.1, 6.8, 5.0],
    "handover_median_s": 0.4,
    "handover_max_s": 0.9,
    "handover_runs_s": [0.3, 0.4, 0.9],
    "coordination_messages": 20000,
    "coordinated_instances": 1,
    "redis_commands_per_msg": 6.5,
    "single_instance_us_per_msg": 250.0,
    "coordinated_us_per_msg": 310.0,
    "coordination_added_us_per_msg": 60.0,
    "coordinated_vs_single": 1.24,
    "lost_messages": 0,
    "duplicate_replies": 0,
    "sim_max_connections_per_account": 1,
    "targets": {
        "failover_max<=30s": True,
        "handover_max<=2s": False,
        "coordination_vs_single<=1.5": True,
    },
}


def rows(block: str) -> list[list[str]]:
    """The body rows of every markdown table in ``block``, as stripped cells."""
    out = []
    for line in block.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            out.append([cell.strip() for cell in line.strip("|").split("|")])
    return out


def row(block: str, first_cell_start: str) -> list[str]:
    matches = [r for r in rows(block) if r[0].startswith(first_cell_start)]
    assert len(matches) == 1, (first_cell_start, rows(block))
    return matches[0]


def doc_text(*names: str) -> str:
    parts = ["# Benchmarks\n\nIntro — with “unicode”, trailing spaces   \n\n"]
    for name in names:
        parts.append(
            f"## {name}\n\nProse before {name}.\n\n{report.begin_marker(name)}\nold {name} "
            f"table\n{report.end_marker(name)}\n\nProse after {name}.\n\n"
        )
    return "".join(parts)


# -- replacing a block ------------------------------------------------------------------------


def test_replace_block_keeps_everything_outside_the_markers_byte_identical() -> None:
    text = doc_text("runtime", "ai", "api")
    new = report.replace_block(text, "ai", "| new | table |\n")
    begin, end = report.begin_marker("ai"), report.end_marker("ai")
    before, _, rest = text.partition(begin)
    _, _, after = rest.partition(end)
    assert new.startswith(before + begin)
    assert new.endswith(end + after)
    assert new == before + begin + "\n| new | table |\n\n" + end + after
    assert "old ai table" not in new
    assert "old runtime table" in new and "old api table" in new


def test_replace_block_is_idempotent_and_keeps_crlf() -> None:
    text = doc_text("ai").replace("\n", "\r\n")
    once = report.replace_block(text, "ai", "line one\nline two\n")
    assert report.replace_block(once, "ai", "line one\nline two\n") == once
    assert "line one\r\nline two\r\n\r\n" + report.end_marker("ai") in once
    assert "\n" not in once.replace("\r\n", "")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("# no markers at all\n", "found 0 and 0"),
        (f"{report.begin_marker('ai')}\nno end\n", "found 1 and 0"),
        (doc_text("ai") + doc_text("ai"), "found 2 and 2"),
    ],
)
def test_a_missing_or_doubled_marker_is_a_clear_error(text: str, found: str) -> None:
    with pytest.raises(report.MarkerError, match=found) as info:
        report.replace_block(text, "ai", "body")
    assert "<!-- bench:ai:begin -->" in str(info.value)


def test_markers_out_of_order_are_an_error() -> None:
    text = f"{report.end_marker('ai')}\nx\n{report.begin_marker('ai')}\n"
    with pytest.raises(report.MarkerError, match="before"):
        report.replace_block(text, "ai", "body")


def test_write_block_rewrites_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    text = doc_text("runtime", "ai")
    doc.write_bytes(text.encode())
    doc.chmod(0o640)
    report.write_block(doc, "runtime", "fresh\n")
    new = doc.read_bytes().decode()
    assert new == report.replace_block(text, "runtime", "fresh\n")
    assert stat.S_IMODE(doc.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temp file left


def test_write_block_leaves_the_file_alone_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(doc_text("ai"))
    with pytest.raises(report.MarkerError, match="failover"):
        report.write_block(doc, "failover", "x")
    assert doc.read_text() == doc_text("ai")


def test_the_real_doc_has_one_block_per_benchmark() -> None:
    text = report.DOC.read_text()
    for name in report.BENCHMARKS:
        assert text.count(report.begin_marker(name)) == 1, name
        assert text.count(report.end_marker(name)) == 1, name
        assert report.replace_block(text, name, "x").count("x") >= 1


# -- the renderers ----------------------------------------------------------------------------


def test_the_block_states_machine_date_and_command() -> None:
    block = report.render("runtime", RUNTIME, RUN)
    assert "`scripts/bench NAME --flag`" in block
    assert "2026-11-25 12:00 UTC" in block
    for fact in ("2 × Test CPU 9000", "23.5 GiB RAM", "Linux 6.18", "CPython 3.11.7"):
        assert fact in block
    assert "uvloop 0.23.0" in block


def test_runtime_rows_show_figures_baselines_ratios_and_targets() -> None:
    block = report.render("runtime", RUNTIME, RUN)
    tell = row(block, "`tell` throughput")
    assert tell[1:] == ["1,907,783", "2,084,588", "1.093×", "≥ 0.5×", "pass"]
    ask = row(block, "`ask` round trip p50 / p99")
    assert ask[1:3] == ["2.91 / 3.09", "4.33 / 5.27"]
    assert ask[3].startswith("p99 1.706× (3.213× vs `call_soon`: 1.2 / 1.64)")
    assert ask[5] == "pass"
    restart = row(block, "supervisor restart latency")
    assert restart[2] == "p50 0.151, p99 0.312, max 1.5"
    assert restart[5] == "pass"
    assert "Targets: **3 of 3 pass**." in block
    assert "not rendered" not in block and "missing" not in block


def test_pass_and_fail_come_from_the_benchs_own_targets() -> None:
    # the figure meets the threshold, but the bench says the target failed: the bench wins
    data = json.loads(json.dumps(RUNTIME))
    data["targets"]["ask_p99_ratio_le_4"] = False
    block = report.render("runtime", data, RUN)
    assert row(block, "`ask` round trip p50 / p99")[5] == "**fail**"
    assert row(block, "`tell` throughput")[5] == "pass"
    assert "Targets: **2 of 3 pass**; missed: `ask_p99_ratio_le_4`." in block


def test_a_target_no_row_claims_gets_its_own_row() -> None:
    data = json.loads(json.dumps(RUNTIME))
    data["targets"]["tell_throughput_ratio_ge_0.6"] = data["targets"].pop(
        "tell_throughput_ratio_ge_0.5"
    )
    data["targets"]["new_target"] = False
    block = report.render("runtime", data, RUN)
    assert row(block, "`tell` throughput")[5] == ""
    assert row(block, "`tell_throughput_ratio_ge_0.6`")[1] == "pass"
    assert row(block, "`new_target`")[1] == "**fail**"


def test_pipeline_rows_from_its_json() -> None:
    block = report.render("pipeline", PIPELINE, RUN)
    table = [r for r in rows(block) if r[0] in ("0 ms", "500 ms")]
    burst = "bursts every 100 ms"
    poisson = "one by one, Poisson"
    assert table == [
        ["0 ms", "100", burst, "100", "100", "100", "25 ms", "100 ms", "—"],
        ["0 ms", "1,000", burst, "1,000", "1,000", "644", "500 ms", "1 s", "—"],
        ["0 ms", "5,000", burst, "5,000", "1,514", "449", "1 s", "2.5 s", "—"],
        ["500 ms", "100", burst, "100", "100", "70", "25 ms", "25 ms", "—"],
        ["500 ms", "1,000", burst, "1,000", "1,000", "437", "500 ms", "2.5 s", "—"],
        ["500 ms", "5,000", burst, "5,000", "1,968", "379", "1 s", "—", "—"],
        ["0 ms", "100", poisson, "100", "100", "100", "1 ms", "2.5 ms", "—"],
        ["0 ms", "1,000", poisson, "1,000", "1,000", "990", "2.5 ms", "10 ms", "—"],
    ]
    assert row(block, "replies/s, best")[1:] == ["644", "≥ 1,000", "**fail**"]
    assert row(block, "overhead p50 at 1,000")[1:] == ["≤ 2.5 ms", "≤ 1 ms", "**fail**"]
    assert row(block, "overhead p99 at 1,000")[1:] == ["≤ 10 ms", "≤ 5 ms", "**fail**"]
    assert "one by one, Poisson" in row(block, "overhead p50 at 1,000")[0]
    assert row(block, "26,937") == ["26,937", "203,409", "0.132×", "≥ 20,000 msgs/s", "pass"]
    assert "Targets: **1 of 4 pass**" in block
    assert "not rendered" not in block and "missing" not in block


def test_pipeline_stages_of_the_paced_cases() -> None:
    data = json.loads(json.dumps(PIPELINE))
    stages = {"queued": [0.5, 2.5], "decide": [0.5, 1.0], "write": [2.5, 25.0]}
    for c in data["cases"] + data["paced_cases"]:
        c["stages_ms_at_most"] = stages
    del data["paced_cases"][0]["stages_ms_at_most"]  # a run from before: no row
    data["paced_cases"][1]["stages_ms_at_most"]["write"] = [None]  # a figure missing
    block = report.render("pipeline", data, RUN)
    header = next(r for r in rows(block) if r[0] == "one by one, offered msgs/s")
    assert header[1:] == ["queued p50 / p99 ≤", "decide p50 / p99 ≤", "write p50 / p99 ≤"]
    stage_rows = [r for r in rows(block) if len(r) == 4 and r[0] in ("100", "1,000")]
    assert stage_rows == [["1,000", "0.5 ms / 2.5 ms", "0.5 ms / 1 ms", "—"]]
    assert "not rendered" not in block and "missing" not in block


def test_pipeline_json_that_changed_shape_renders_what_it_knows() -> None:
    data = json.loads(json.dumps(PIPELINE))
    for c in data["cases"]:
        c["replies_p99_ms"] = 12.0  # a new key
        c["overhead_p50_ms"] = c.pop("overhead_p50_ms_at_most")  # a renamed one
        del c["arrival"]  # an older run
    data["ingest"] = "skipped"  # a different type
    data["coordination"] = {"redis": True}  # a new section
    block = report.render("pipeline", data, RUN)
    assert ["0 ms", "1,000", "—", "1,000", "1,000", "644", "—", "1 s", "—"] in rows(block)
    assert "`cases[].arrival`" not in block  # older runs had none: not missing
    assert "`cases[].overhead_p50_ms_at_most`" in block.split("missing from the JSON")[1]
    unknown = block.split("not rendered:")[1]
    for key in ("`cases[].replies_p99_ms`", "`cases[].overhead_p50_ms`", "`ingest`"):
        assert key in unknown
    assert "`coordination.redis`" in unknown
    assert row(block, "replies/s, best")[3] == "**fail**"


def test_pipeline_without_cases_still_renders() -> None:
    block = report.render("pipeline", {"benchmark": "pipeline", "targets": {}}, RUN)
    assert "No targets" in block
    assert "`cases`" in block and "`ingest.ingest_msgs_per_s`" in block


def test_api_rows_from_its_json() -> None:
    block = report.render("api", API, RUN)
    assert row(block, "`GET /health`")[1:] == ["50,825", "42,235", "0.831×", "≥ 0.80×", "pass"]
    assert row(block, "authenticated")[1:] == ["50,825", "26,758", "0.526×", "≥ 0.50×", "pass"]
    assert row(block, "same, user row read")[3] == "0.17×"
    fixed = row(block, "`/users/me` at 1,000 req/s")
    assert fixed[2].startswith("0.132 / 1.101 (max 7.5; scheduled p99 1.3")
    assert fixed[5] == "pass"
    assert "not rendered" not in block and "missing" not in block


def test_sessions_rows_from_its_json() -> None:
    block = report.render("sessions", SESSIONS, RUN)
    assert row(block, "RSS per idle")[1:] == ["**9.99 KiB**", "≤ 20 KiB", "pass"]
    assert row(block, "sweep → all 10,000")[1] == "4.32 s"
    assert row(block, "burst: 10,000 messages")[1] == "0.56 s (17,981 msgs/s)"
    assert "not rendered" not in block and "missing" not in block


def test_failover_renders_the_documented_keys() -> None:
    assert set(FAILOVER) == set(report.FAILOVER_KEYS)
    block = report.render("failover", FAILOVER, RUN)
    assert row(block, "failover:")[2:] == ["4.2 / 6.8", "—", "pass"]
    assert row(block, "hand-over:")[2:] == ["0.4 / 0.9", "—", "**fail**"]
    assert row(block, "Redis commands per message")[2] == "6.5"
    coordination = row(block, "coordination cost")
    assert coordination[1:] == ["250", "310 (+60)", "1.24×", "pass"]
    assert row(block, "sim's `max_connections_per_account`")[2] == "1"
    assert "3 instances, 300 sessions, 5 runs" in block
    assert "not rendered" not in block and "missing" not in block


def test_a_renderer_that_raises_falls_back_to_the_raw_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_: report.Figures) -> list[report.Part]:
        raise KeyError("boom")

    monkeypatch.setitem(report.RENDERERS, "ai", broken)
    block = report.render("ai", {"bare_rps": 15119, "targets": {"x": True}}, RUN)
    assert "The renderer for `ai` failed" in block
    assert row(block, "`bare_rps`") == ["`bare_rps`", "15,119"]
    assert "Targets: **1 of 1 pass**." in block


def test_a_bench_without_renderer_gets_a_key_value_table() -> None:
    block = report.render("newbench", {"a": {"b": 1.5}, "c": [1, 2]}, RUN)
    assert row(block, "`a.b`") == ["`a.b`", "1.5"]
    assert row(block, "`c`")[1] == "[1, 2]"
    # list items with different keys (a newer run's key in some cases only)
    block = report.render("newbench", {"cases": [{"a": 1}, {"a": 2, "b": 3}]}, RUN)
    assert row(block, "`cases[].b`")[1] == "[null, 3]"


SAMPLES = {"runtime": RUNTIME, "pipeline": PIPELINE, "api": API, "sessions": SESSIONS}
SAMPLES["failover"] = FAILOVER

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


DROP = object()


def mangled(data: Any, changes: dict[int, Any], counter: list[int]) -> Any:
    """``data`` with the n-th key visited dropped or its value replaced, per ``changes``."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            counter[0] += 1
            change = changes.get(counter[0], value)
            if change is not DROP:
                out[key] = mangled(value, changes, counter) if change is value else change
        return out
    if isinstance(data, list):
        return [mangled(v, changes, counter) for v in data]
    return data


IGNORED = {"targets", "benchmark", "python", "cpus", "machine", "loop", "pass"}


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(sorted(report.RENDERERS)),
    junk=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    changes=st.dictionaries(st.integers(1, 80), st.just(DROP) | json_values, max_size=8),
)
def test_renderers_never_raise_on_changed_json(
    name: str, junk: dict[str, Any], changes: dict[int, Any]
) -> None:
    sample = SAMPLES.get(name, RUNTIME)
    data = mangled(sample, changes, [0])
    data.update(junk)
    block = report.render(name, data, RUN)
    assert "The renderer for" not in block  # its own renderer coped, not the fallback
    assert "- command: `scripts/bench NAME --flag`" in block
    if set(junk) - set(sample) - IGNORED:
        assert "not rendered" in block


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (1907783, "1,907,783"),
        (15119.4, "15,119"),
        (0.0052, "0.0052"),
        (4.32, "4.32"),
        (math.nan, "—"),
        (math.inf, "∞"),
        (True, "yes"),
        ("a|b", "a\\|b"),
    ],
)
def test_fmt(value: Any, text: str) -> None:
    assert report.fmt(value) == text


# -- the harness ------------------------------------------------------------------------------


def fake_benches(tmp_path: Path) -> Path:
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "runtime.py").write_text(
        "import json, sys\n"
        "print('a log line on stdout')\n"
        "print(json.dumps({'throughput_msgs_per_s': {'ratio': 1.5}, 'argv': sys.argv[1:],"
        " 'targets': {'tell_throughput_ratio_ge_0.5': True}}))\n"
    )
    (bench_dir / "ai.py").write_text("import sys\nsys.exit(3)\n")
    (bench_dir / "report.py").write_text("")  # not a benchmark
    return bench_dir


def test_parse_json_takes_the_last_json_line() -> None:
    assert harness.parse_json('{"a": 1}') == {"a": 1}
    assert harness.parse_json('noise\n{"a": 1}\n{"b": 2}\n') == {"b": 2}
    with pytest.raises(ValueError, match="no JSON"):
        harness.parse_json("nothing\n")


def test_run_bench_ok_failed_and_missing(tmp_path: Path) -> None:
    bench_dir = fake_benches(tmp_path)
    ok = harness.run_bench("runtime", ["--x", "1"], bench_dir)
    assert ok.status == "ok" and ok.result is not None
    assert ok.result["argv"] == ["--x", "1"]
    failed = harness.run_bench("ai", [], bench_dir)
    assert (failed.status, failed.returncode) == ("failed", 3)
    missing = harness.run_bench("failover", [], bench_dir)
    assert missing.status == "skipped" and "does not exist" in missing.reason
    assert harness.available(bench_dir) == ["runtime", "ai"]


def test_a_missing_prerequisite_skips_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench_dir = fake_benches(tmp_path)
    monkeypatch.setitem(harness.PREREQUISITES, "runtime", lambda: "needs a unicorn")
    outcome = harness.run_bench("runtime", [], bench_dir)
    assert (outcome.status, outcome.reason) == ("skipped", "needs a unicorn")


def test_run_all_runs_writes_skips_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_dir = fake_benches(tmp_path)
    doc = tmp_path / "benchmarks.md"
    text = doc_text(*report.BENCHMARKS)
    doc.write_text(text)
    combined, status = harness.run_all(["sessions"], True, doc, "scripts/bench all", bench_dir)
    assert status == 1  # ai exited 3
    assert set(combined["benchmarks"]) == {"runtime"}
    assert combined["failed"] == {"ai": "exit status 3"}
    assert combined["skipped"]["sessions"] == "skipped on request (--skip)"
    assert "does not exist" in combined["skipped"]["pipeline"]
    assert combined["machine"]["cpus"] is not None
    err = capsys.readouterr().err
    assert "scripts/bench: pipeline: skipped: bench/pipeline.py does not exist" in err
    assert "scripts/bench: ai: FAILED: exit status 3" in err
    new = doc.read_text()
    assert "old runtime table" not in new and "`scripts/bench all`" in new
    assert new.count("old ") == len(report.BENCHMARKS) - 1  # only runtime's block changed
    # and with --no-write nothing changes
    doc.write_text(text)
    harness.run_all([], False, doc, "scripts/bench all", bench_dir)
    assert doc.read_text() == text


def test_main_one_bench_prints_its_json_and_rewrites_its_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(harness, "BENCH_DIR", fake_benches(tmp_path))
    monkeypatch.delenv(harness.NO_WRITE_ENV, raising=False)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(doc_text("runtime", "ai"))
    assert harness.main(["runtime", "--rounds", "2"], doc) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "a log line on stdout"  # stdout passes through as printed
    assert json.loads(out.splitlines()[1])["argv"] == ["--rounds", "2"]
    assert "`scripts/bench runtime --rounds 2`" in doc.read_text()
    assert "old ai table" in doc.read_text()

    doc.write_text(doc_text("runtime"))
    assert harness.main(["runtime", "--no-write"], doc) == 0
    monkeypatch.setenv(harness.NO_WRITE_ENV, "1")
    assert harness.main(["runtime"], doc) == 0
    assert doc.read_text() == doc_text("runtime")

    assert harness.main(["ai"], doc) == 3
    assert harness.main(["nosuch"], doc) == 2
    assert harness.main(["failover"], doc) == 2
    assert "failover: cannot run" in capsys.readouterr().err


def test_main_reports_a_doc_without_the_benchs_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(harness, "BENCH_DIR", fake_benches(tmp_path))
    monkeypatch.delenv(harness.NO_WRITE_ENV, raising=False)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(doc_text("ai"))
    assert harness.main(["runtime"], doc) == 1
    err = capsys.readouterr().err
    assert "<!-- bench:runtime:begin -->" in err and "--no-write" in err
