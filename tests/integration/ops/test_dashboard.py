"""deploy/grafana/vibee.json: a dashboard Grafana imports as is, whose every expression is
valid PromQL, follows the data source and instance variables."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.integration.ops.refs import (
    DASHBOARD,
    as_promql,
    dashboard,
    dashboard_exprs,
    datasource_uids,
    panels,
    run_promtool,
    variable_queries,
)

INSTANCE_FILTER = 'instance=~"$instance"'


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 38
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"]["uid"] == "${datasource}"
    assert instance["multi"] and instance["includeAll"] and instance["allValue"] == ".*"

    shown = panels(board)
    assert shown, "no panel"
    nested = [p for row in board["panels"] if row["type"] == "row" for p in row["panels"]]
    ids = Counter(p["id"] for p in board["panels"] + nested)
    assert [i for i, n in ids.items() if n > 1] == []
    titles = Counter(p["title"] for p in shown)
    assert [t for t, n in titles.items() if n > 1] == []
    assert set(datasource_uids(board)) == {"${datasource}"}
    for panel in shown:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert INSTANCE_FILTER in target["expr"], f"{panel['title']}: ignores $instance"


def test_dashboard_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every panel expression and variable query, as a recording rule that promtool parses."""
    board = dashboard()
    queries = dashboard_exprs(board) + variable_queries(board)
    assert len(queries) > 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": as_promql(query)}
                    for n, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules, indent=2))  # JSON is YAML
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, f"{DASHBOARD.name}:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
