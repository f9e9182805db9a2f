"""What the alert rules and the dashboard refer to, and what an exposition offers.

Metric names are read from the PromQL in ``alerts.yml`` (every line that is not a YAML
comment, so the operator text in annotations is checked too) and from every expression
and variable query of the dashboard. An exposition's names come from its ``# TYPE`` lines,
which are written even for a labelled metric that has no sample yet.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "vibee.json"

# our metrics, and the process collector's that VIBEE exports beside them
METRIC_NAME = re.compile(r"\b(?:vibee|process)_[a-z0-9_]+\b")
COMMENT = re.compile(r"(?:^|\s)#.*$")
SAMPLE_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("",),
    "stateset": ("",),
}
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "${instance}": ".*",
}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


def rule_text(path: Path) -> str:
    """``path`` without its YAML comments (the rules commented out are not in force)."""
    return "\n".join(COMMENT.sub("", line) for line in path.read_text().splitlines())


def names_in(text: str) -> set[str]:
    """The ``vibee_*`` and ``process_*`` names mentioned in ``text``."""
    return set(METRIC_NAME.findall(text))


def exposed_names(exposition: str) -> set[str]:
    """Every sample name an exposition (Prometheus text format) offers, by its TYPE lines:
    ``x_total`` for a counter, ``x_bucket``/``x_sum``/``x_count`` for a histogram, ..."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + suffix for suffix in SAMPLE_SUFFIXES[kind.strip()])
    return names


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows left out, panels inside collapsed rows included)."""
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    """The PromQL of every target of every panel."""
    return [target["expr"] for panel in panels(board) for target in panel["targets"]]


def variable_queries(board: dict[str, Any]) -> list[str]:
    """The queries of the dashboard's query variables (``label_values(...)``)."""
    queries: list[str] = []
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        queries.append(query["query"] if isinstance(query, dict) else query)
        if variable.get("definition"):
            queries.append(variable["definition"])
    return queries


def as_promql(text: str) -> str:
    """A dashboard expression or variable query as plain PromQL: Grafana's variables
    replaced by values, ``label_values(selector, label)`` by its selector."""
    match = LABEL_VALUES.match(text.strip())
    if match:
        text = match["selector"]
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(variable, value)
    return text


def dashboard_names(board: dict[str, Any]) -> set[str]:
    """Metric names used by the dashboard's expressions and variable queries."""
    return set().union(*(names_in(q) for q in dashboard_exprs(board) + variable_queries(board)))


def datasource_uids(board: dict[str, Any]) -> Iterator[str]:
    """Every datasource uid the dashboard's panels and targets name."""
    for panel in panels(board):
        for node in _walk(panel):
            source = node.get("datasource")
            if isinstance(source, dict):
                yield str(source.get("uid"))


def run_promtool(
    promtool: str, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` with its output captured (never raises on a non-zero exit)."""
    return subprocess.run(
        [promtool, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )
