"""`vibee ai ask` as an operator checks provider keys: who answered, fallbacks, exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def ask(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vibee", "ai", "ask", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def write_config(tmp_path: Path, base: str, openrouter_model: str) -> Path:
    config = tmp_path / "ai.toml"
    config.write_text(
        f"""
[ai]
chain = ["openrouter", "anthropic", "canned"]
retry_attempts = 1
[ai.providers.openrouter]
base_url = "{base}/openrouter/api/v1"
model = "{openrouter_model}"
[ai.providers.anthropic]
base_url = "{base}/anthropic"
"""
    )
    return config


def test_reports_who_answered_and_each_fallback(
    sim_llm: str, tmp_path: Path, clean_env: Path
) -> None:
    config = write_config(tmp_path, sim_llm, "sim:status=503")
    keys = {"VIBEE_AI_OPENROUTER_API_KEY": "sk-or-secret-1", "VIBEE_AI_ANTHROPIC_API_KEY": "k2"}
    result = ask(config, "Привет!", env=keys)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "fell back openrouter: HTTP 503"
    assert lines[1].startswith("Sim reply ") and "Привет!" in lines[1]
    assert lines[2].startswith("answered by anthropic (claude-sonnet-4-5) in ")
    assert "sk-or-secret-1" not in result.stdout + result.stderr

    streamed = ask(config, "hello", "--stream", env=keys)
    assert streamed.returncode == 0 and "answered by anthropic" in streamed.stdout


def test_missing_keys_are_named_and_canned_is_marked(
    sim_llm: str, tmp_path: Path, clean_env: Path
) -> None:
    config = write_config(tmp_path, sim_llm, "gpt")
    result = ask(config, "hi", env={})
    assert result.returncode == 0, result.stderr
    assert "skipped   openrouter: no API key (secret ai_openrouter_api_key)" in result.stdout
    assert "skipped   anthropic: no API key (secret ai_anthropic_api_key)" in result.stdout
    assert "answered by canned (predefined) [canned]" in result.stdout


def test_nothing_answered_exits_non_zero_with_one_line(
    sim_llm: str, tmp_path: Path, clean_env: Path
) -> None:
    config = write_config(tmp_path, sim_llm, "sim:status=401")
    result = ask(
        config, "hi", env={"VIBEE_AI__CHAIN": '["openrouter"]', "VIBEE_AI_OPENROUTER_API_KEY": "k"}
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "no answer: no_provider: no provider answered"
    assert "fell back openrouter: HTTP 401" in result.stdout
