"""deploy/prometheus/alerts.yml: promtool accepts it, its unit tests pass, and they fail when
an alert stops waiting for its ``for:`` or loses its firing and quiet cases."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration.ops.refs import ALERT_TESTS, ALERTS, rule_text, run_promtool

ALERT_LINE = re.compile(r"^\s*- alert: (?P<name>\S+)\s*$")
FOR_LINE = re.compile(r"^(?P<indent>\s*)for: (?P<value>\S+)\s*$")
SEVERITIES = {"critical", "warning"}
INSTANCE = re.compile(r'instance="(?P<value>[^"]+)"')


def alert_names() -> list[str]:
    """The alerts in force, in file order (commented-out rules left out)."""
    return [m["name"] for line in rule_text(ALERTS).splitlines() if (m := ALERT_LINE.match(line))]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    names = alert_names()
    assert len(names) == len(set(names)), f"alert names repeat: {names}"
    assert f"SUCCESS: {len(names)} rules found" in result.stdout, result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_fail_when_an_alert_stops_waiting(promtool: str, tmp_path: Path) -> None:
    """Each alert in turn gets ``for: 0s``: its unit test must then fail, because every
    alert is checked to be still pending before its ``for:`` has elapsed."""
    lines = rule_text(ALERTS).splitlines(keepends=False)
    original = ALERTS.read_text().splitlines(keepends=False)
    assert len(lines) == len(original)
    owners: dict[int, str] = {}
    current = ""
    for number, line in enumerate(lines):
        if match := ALERT_LINE.match(line):
            current = match["name"]
        elif FOR_LINE.match(line):
            owners[number] = current
    assert sorted(owners.values()) == sorted(alert_names()), "every alert needs one `for:`"

    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    survivors = []
    for number, alert in owners.items():
        mutated = list(original)
        mutated[number] = FOR_LINE.sub(r"\g<indent>for: 0s", original[number])
        (tmp_path / ALERTS.name).write_text("\n".join(mutated) + "\n")
        result = run_promtool(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
        if result.returncode == 0:
            survivors.append(alert)
    assert not survivors, f"unit tests still pass with `for: 0s` on {survivors}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the rule files")
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {
        rule["alert"]: rule
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert sorted(alerts) == sorted(alert_names())

    problems: list[str] = []
    for name, rule in alerts.items():
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
        if not rule.get("for") or re.fullmatch(r"0+[smhd]?", str(rule["for"])):
            problems.append(f"{name}: needs a non-zero `for:`")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: needs a {key} annotation")

    cases: dict[str, set[str]] = defaultdict(set)
    for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        instances = {
            m["value"]
            for series in group["input_series"]
            for m in INSTANCE.finditer(series["series"])
        }
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            if name not in alerts:
                problems.append(f"the unit tests check {name!r}, which alerts.yml does not define")
            expected = case.get("exp_alerts") or []
            if not expected:
                cases[name].add("quiet before its `for:` or below its threshold")
                continue
            cases[name].add("firing")
            firing = {alert["exp_labels"].get("instance") for alert in expected}
            if instances - firing:
                cases[name].add("a series that does not fire it")
    for name in alerts:
        for needed in (
            "firing",
            "quiet before its `for:` or below its threshold",
            "a series that does not fire it",
        ):
            if needed not in cases[name]:
                problems.append(f"{name}: no unit test with {needed}")
    assert not problems, "\n".join(problems)
