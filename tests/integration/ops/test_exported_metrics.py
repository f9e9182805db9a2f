"""Every metric the alert rules and the dashboard name is one VIBEE really exports.

``vibee run`` is started as a subprocess (with the simulated Telegram backend, so that the
whole tree runs without Telegram credentials) and its ``/metrics`` is scraped once. Names
are compared with the exposition's ``# TYPE`` lines, which a labelled metric without any
sample yet still has.
"""

from __future__ import annotations

import os
import signal
import warnings

import pytest

from tests.integration.ops.refs import (
    ALERTS,
    dashboard,
    dashboard_names,
    exposed_names,
    names_in,
    rule_text,
    run_promtool,
)
from tests.integration.test_run import Daemon

OUTSIDE_ENV = ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC")


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The text of one GET /metrics from a fresh `vibee run`."""
    home = tmp_path_factory.mktemp("ops")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("VIBEE_") or name in OUTSIDE_ENV:
                patch.delenv(name)
        patch.chdir(home)  # no ./config.toml from the developer's checkout
        daemon = Daemon(
            {
                "VIBEE_RUNTIME__STATE_DIR": str(home / "state"),
                "VIBEE_TELEGRAM__BACKEND": "sim",
                "VIBEE_TELEGRAM__SIM_URL": "http://127.0.0.1:9",  # no session: never dialled
            }
        )
        try:
            daemon.wait_for("vibee ready")
            status, body = daemon.get("/metrics")
            daemon.proc.send_signal(signal.SIGTERM)  # stops the embedded Postgres too
            daemon.proc.wait(timeout=60)
        finally:
            daemon.stop()
    assert status == 200, body
    return body.decode()


def referenced() -> dict[str, set[str]]:
    """Where each referenced metric name is used."""
    uses = {"deploy/prometheus/alerts.yml": names_in(rule_text(ALERTS))}
    uses["deploy/grafana/vibee.json"] = dashboard_names(dashboard())
    return uses


def test_the_scrape_is_read_correctly(scrape: str) -> None:
    """The comparison below would pass on an empty set: check what it compares against."""
    exported = exposed_names(scrape)
    assert {"vibee_queue_depth", "vibee_actor_restarts_total", "vibee_sessions"} <= exported
    assert "vibee_actor_restarts" not in exported  # counters only with _total
    assert "vibee_sessions{" not in scrape  # no session: a family with HELP/TYPE only
    uses = referenced()
    assert len(uses["deploy/prometheus/alerts.yml"]) >= 8
    assert len(uses["deploy/grafana/vibee.json"]) >= 10


def test_every_referenced_metric_is_exported(scrape: str) -> None:
    exported = exposed_names(scrape)
    problems = [
        f"{where}: {name} is not exported by `vibee run`"
        for where, names in referenced().items()
        for name in sorted(names - exported)
    ]
    assert not problems, "\n".join(problems) + "\n\nexported: " + ", ".join(sorted(exported))


def test_promtool_check_metrics(promtool: str, scrape: str) -> None:
    """promtool's lint over the scrape. Findings about a vibee_* name fail; the others
    (the process and Python collectors') are reported as warnings."""
    result = run_promtool(promtool, "check", "metrics", stdin=scrape)
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    ours = [line for line in findings if "vibee_" in line]
    others = [line for line in findings if "vibee_" not in line]
    if others:
        warnings.warn(f"promtool check metrics: {others}", stacklevel=1)
    assert not ours, "\n".join(ours)
    assert result.returncode == 0 or others, f"promtool exited {result.returncode}"
