"""The `vibee` command as a user runs it: exit codes, one-line errors, secrets hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vibee.store.migrate import load_migrations


def vibee(
    *args: str, env: dict[str, str] | None = None, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vibee", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_config_check_prints_config_and_hides_secrets(clean_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[limits]\napi_per_minute = 42\n[admin]\ntoken_file = "token"\n')
    (tmp_path / "token").write_text("admin-token-value-123")
    result = vibee(
        "config", "check", "--config", str(config), env={"VIBEE_AI_OPENAI_API_KEY": "sk-abc12345"}
    )
    assert result.returncode == 0, result.stderr
    assert "api_per_minute = 42" in result.stdout
    assert "# admin_token = *** (file token)" in result.stdout
    assert "# ai_openai_api_key = *** (environment VIBEE_AI_OPENAI_API_KEY)" in result.stdout
    assert "# telegram_api_hash = (not set)" in result.stdout
    assert "admin-token-value-123" not in result.stdout + result.stderr
    assert "sk-abc12345" not in result.stdout + result.stderr


def test_config_check_hides_a_password_written_into_a_url(clean_env: Path) -> None:
    result = vibee(
        "config",
        "check",
        env={
            "VIBEE_REDIS__URL": "redis://:redis-pw-789@10.0.0.5:6379/0",
            "VIBEE_DATABASE__URL": "postgresql://vibee:db-pw-456@10.0.0.6/vibee",
            "VIBEE_REDIS_PASSWORD": "other-pw-000",
        },
    )
    assert result.returncode == 0, result.stderr
    assert 'url = "redis://:***@10.0.0.5:6379/0"' in result.stdout
    assert 'url = "postgresql://vibee:***@10.0.0.6/vibee"' in result.stdout
    assert "# redis_password = *** (environment VIBEE_REDIS_PASSWORD)" in result.stdout
    for secret in ("redis-pw-789", "db-pw-456", "other-pw-000"):
        assert secret not in result.stdout + result.stderr


def test_config_check_reports_each_problem_on_its_own_line(clean_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\napi_per_minute = 0\n[workers]\nworker_count = 0\ncolour = 1\n")
    result = vibee("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert sorted(result.stderr.splitlines()) == [
        "limits.api_per_minute: must be greater than 0",
        "workers.colour: unknown key",
        "workers.worker_count: must be greater than 0",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["config", "check", "--config", "/nonexistent.toml"], "no such config file"),
        (["migrate", "sideways"], "invalid choice: 'sideways'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["migrate", "down", "x"], "invalid int value: 'x'"),
        (["dlq", "list", "--limit", "-3"], "must be at least 1, not -3"),
        (["dlq", "replay", "99999999999999999999"], "no such id: 99999999999999999999"),
        (["dlq", "drop", "0"], "no such id: 0"),
        (["dlq", "drop", "seven"], "not a number: 'seven'"),
        (["history", "import", "--session", "1", "--limit", "0"], "must be at least 1, not 0"),
        (["history", "import", "--session", "-2"], "no such id: -2"),
    ],
)
def test_user_mistakes_are_one_line_without_traceback(
    clean_env: Path, args: list[str], needle: str
) -> None:
    result = vibee(*args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_database_is_one_line(clean_env: Path) -> None:
    result = vibee(
        "migrate", "status", env={"VIBEE_DATABASE__URL": "postgresql://u:pw-sekrit@127.0.0.1:1/x"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("cannot connect to postgresql://u:***@127.0.0.1:1/x")
    assert "pw-sekrit" not in result.stderr and "Traceback" not in result.stderr


def test_migrate_and_users_against_a_database(clean_env: Path, empty_db_url: str) -> None:
    env = {"VIBEE_DATABASE__URL": empty_db_url}
    assert "pending  0001_initial.sql" in vibee("migrate", "status", env=env).stdout
    assert "applied  0001_initial.sql" in vibee("migrate", "up", env=env).stdout
    created = vibee("user", "create", "alice", env=env, stdin="correct horse\n")
    assert created.returncode == 0 and "created user alice" in created.stdout
    again = vibee("user", "create", "Alice", env=env, stdin="correct horse\n")
    assert again.returncode == 1 and again.stderr.strip() == "user 'Alice' already exists"
    short = vibee("user", "create", "bob", env=env, stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert vibee("user", "disable", "alice", env=env).returncode == 0
    listed = vibee("user", "list", env=env).stdout.splitlines()
    assert listed == ["1\talice\tfree\tdisabled"]
    missing = vibee("user", "disable", "nobody", env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == "no user named 'nobody'"
    every = load_migrations()
    down = vibee("migrate", "down", str(len(every)), env=env).stdout.splitlines()
    assert down == [f"reverted {m.filename}" for m in reversed(every)]
    for args in (["user", "list"], ["dlq", "list"], ["dlq", "drop", "1"]):  # not migrated
        unmigrated = vibee(*args, env=env)
        assert unmigrated.returncode == 1, args
        assert unmigrated.stderr.strip() == (
            "the database has no VIBEE tables yet: run `vibee migrate up` first"
        )


def test_migrate_uses_the_embedded_database_by_default(clean_env: Path) -> None:
    result = vibee("migrate", "up")
    assert result.returncode == 0, result.stderr
    assert "applied  0001_initial.sql" in result.stdout
    assert (clean_env / "pg" / "PG_VERSION").exists()
    # the CLI stops the server it started
    again = vibee("migrate", "status")
    assert "applied  0001_initial.sql" in again.stdout
