"""The benchmark harness behind ``scripts/bench``: run benches, print JSON, rewrite the doc.

    scripts/bench all [--skip NAME[,NAME…]] [--no-write]
    scripts/bench NAME [--no-write] [ARGS…]

``all`` runs every bench of ``report.BENCHMARKS`` in turn, each as its own process; a bench
whose file does not exist yet or whose prerequisite is missing (``api`` needs ``wrk``) is
skipped with one line on stderr. It prints one JSON object (the machine, the date, each
bench's JSON, what was skipped or failed) and rewrites each bench's generated block in
``docs/benchmarks.md`` as soon as that bench finishes. ``NAME`` runs one bench with
``ARGS``, prints its JSON exactly as the bench printed it, and rewrites its block.

``--no-write`` (anywhere on the line) or ``VIBEE_BENCH_NO_WRITE=1`` only prints.
Exit status: 0, or 1 when a bench failed or its block could not be written, 2 on a usage
error (an unknown bench, a missing prerequisite for a single bench).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

BENCH_DIR = ROOT / "bench"
NO_WRITE_ENV = "VIBEE_BENCH_NO_WRITE"


def _needs_wrk() -> str | None:
    return None if shutil.which("wrk") else "needs wrk (apt-get install wrk)"


def _needs_redis() -> str | None:
    found = shutil.which("redis-server")
    return None if found else "needs redis-server (apt-get install redis-server)"


#: Bench name → a check returning why it cannot run here, or None.
PREREQUISITES: dict[str, Callable[[], str | None]] = {"api": _needs_wrk, "failover": _needs_redis}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one bench: ``ok`` with its JSON, ``skipped`` or ``failed`` with why."""

    name: str
    status: str
    result: dict[str, Any] | None = None
    reason: str = ""
    stdout: str = ""
    returncode: int = 0


def available(bench_dir: Path | None = None) -> list[str]:
    """Bench files present in ``bench_dir`` (known ones in the doc's order, then others)."""
    bench_dir = bench_dir or BENCH_DIR
    present = {
        p.stem
        for p in bench_dir.glob("*.py")
        if p.stem not in report.NOT_BENCHMARKS and not p.stem.startswith("_")
    }
    known = [name for name in report.BENCHMARKS if name in present]
    return known + sorted(present - set(known))


def why_not(name: str, bench_dir: Path | None = None) -> str | None:
    """Why bench ``name`` cannot run here (no file, a missing prerequisite), or None."""
    bench_dir = bench_dir or BENCH_DIR
    if not (bench_dir / f"{name}.py").is_file():
        return f"bench/{name}.py does not exist (yet)"
    check = PREREQUISITES.get(name)
    return check() if check else None


def parse_json(stdout: str) -> dict[str, Any]:
    """The JSON object a bench printed: all of stdout, or else its last line that is one."""
    try:
        whole = json.loads(stdout)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return whole
    for line in reversed(stdout.splitlines()):
        if line.lstrip().startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    raise ValueError("printed no JSON object on stdout")


def run_bench(name: str, args: Sequence[str] = (), bench_dir: Path | None = None) -> Outcome:
    """Run ``bench_dir/name.py ARGS`` (stderr passes through) and read its JSON."""
    bench_dir = bench_dir or BENCH_DIR
    reason = why_not(name, bench_dir)
    if reason:
        return Outcome(name, "skipped", reason=reason)
    proc = subprocess.run(
        [sys.executable, str(bench_dir / f"{name}.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        reason = f"exit status {proc.returncode}"
        return Outcome(name, "failed", None, reason, proc.stdout, proc.returncode)
    try:
        result = parse_json(proc.stdout)
    except ValueError as error:
        return Outcome(name, "failed", None, str(error), proc.stdout, 1)
    return Outcome(name, "ok", result=result, stdout=proc.stdout)


def write(outcome: Outcome, run: report.RunInfo, doc: Path) -> str | None:
    """Rewrite ``outcome``'s block in ``doc``; the error as text when it cannot."""
    assert outcome.result is not None
    body = report.render(outcome.name, outcome.result, run)
    try:
        report.write_block(doc, outcome.name, body)
    except (report.MarkerError, OSError) as error:
        return f"{doc}: {error}"
    return None


def say(text: str) -> None:
    """One line on stderr."""
    print(f"scripts/bench: {text}", file=sys.stderr, flush=True)


def run_all(
    skip: Sequence[str], write_doc: bool, doc: Path, command: str, bench_dir: Path | None = None
) -> tuple[dict[str, Any], int]:
    """Every bench in turn; the combined JSON and the exit status."""
    bench_dir = bench_dir or BENCH_DIR
    machine = report.machine_info()
    combined: dict[str, Any] = {
        "command": command,
        "date": report.RunInfo.now(command).date,
        "machine": machine,
        "benchmarks": {},
        "skipped": {},
        "failed": {},
    }
    status = 0
    names = [n for n in report.BENCHMARKS if n not in skip]
    for name in report.BENCHMARKS:
        if name in skip:
            combined["skipped"][name] = "skipped on request (--skip)"
            say(f"{name}: skipped on request (--skip)")
    for name in names:
        reason = why_not(name, bench_dir)
        if reason:
            combined["skipped"][name] = reason
            say(f"{name}: skipped: {reason}")
            continue
        say(f"{name}: running")
        run = report.RunInfo.now(command)  # the machine as the bench starts
        outcome = run_bench(name, (), bench_dir)
        if outcome.status == "failed":
            combined["failed"][name] = outcome.reason
            say(f"{name}: FAILED: {outcome.reason}")
            status = 1
            continue
        assert outcome.result is not None
        combined["benchmarks"][name] = outcome.result
        if write_doc:
            error = write(outcome, run, doc)
            if error:
                combined["failed"][name] = f"not written: {error}"
                say(f"{name}: not written to the doc: {error}")
                status = 1
            else:
                say(f"{name}: done, {doc.name} rewritten")
        else:
            say(f"{name}: done")
    return combined, status


USAGE = """\
usage: scripts/bench all [--skip NAME[,NAME...]] [--no-write]
       scripts/bench NAME [--no-write] [ARGS...]
       scripts/bench list

Runs benchmarks (not tests). Each prints one JSON object: its figures, the bare baselines
measured in the same run, and pass/fail per target. `all` runs every one in turn (skipping,
with a line on stderr, those missing a file or a prerequisite) and prints one JSON object
holding them all. Unless --no-write (or VIBEE_BENCH_NO_WRITE=1) is given, each finished
bench's generated block in docs/benchmarks.md is rewritten: the machine, the date, the
command, the figures, ratios and targets; the text outside its markers is left as it is.
"""


def listing(bench_dir: Path | None = None) -> str:
    """The ``list`` text: what exists, and what ``all`` runs but is not written yet."""
    bench_dir = bench_dir or BENCH_DIR
    present = available(bench_dir)
    lines = ["benchmarks: " + " ".join(present)]
    absent = [n for n in report.BENCHMARKS if n not in present]
    if absent:
        lines.append("not written yet (skipped by `all`): " + " ".join(absent))
    lines.append("all: " + " ".join(report.BENCHMARKS))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, doc: Path = report.DOC) -> int:
    """Parse ``scripts/bench``'s arguments and run."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["scripts/bench", *args])
    write_doc = "--no-write" not in args and os.environ.get(NO_WRITE_ENV, "") in ("", "0")
    args = [a for a in args if a != "--no-write"]
    if not args or args[0] in ("list", "help", "-h", "--help"):
        if args and args[0] != "list":
            print(USAGE)
        print(listing())
        return 0
    name, rest = args[0], args[1:]
    if name == "all":
        skip: list[str] = []
        while rest:
            if rest[0] == "--skip" and len(rest) > 1:
                skip += [s for s in rest[1].split(",") if s]
                rest = rest[2:]
            elif rest[0].startswith("--skip="):
                skip += [s for s in rest[0].removeprefix("--skip=").split(",") if s]
                rest = rest[1:]
            else:
                say(f"all: unexpected argument {rest[0]!r}")
                print(USAGE, file=sys.stderr)
                return 2
        unknown = [s for s in skip if s not in report.BENCHMARKS]
        if unknown:
            say(f"all: --skip names no benchmark: {', '.join(unknown)}")
            return 2
        combined, status = run_all(skip, write_doc, doc, command)
        print(json.dumps(combined))
        return status

    if name not in available() and name not in report.BENCHMARKS:
        say(f"no benchmark named {name!r}")
        print(listing(), file=sys.stderr)
        return 2
    run = report.RunInfo.now(command)  # the machine as the bench starts
    outcome = run_bench(name, rest)
    if outcome.status == "skipped":
        say(f"{name}: cannot run: {outcome.reason}")
        return 2
    sys.stdout.write(outcome.stdout)
    sys.stdout.flush()
    if outcome.status == "failed":
        say(f"{name}: FAILED: {outcome.reason}; {doc.name} not rewritten")
        return outcome.returncode or 1
    if write_doc:
        error = write(outcome, run, doc)
        if error:
            say(f"{name}: not written to the doc: {error} (--no-write only prints)")
            return 1
        say(f"{name}: {doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc} rewritten")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
