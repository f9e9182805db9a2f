"""Configuration: validation messages name the key path; env overrides; file discovery."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vibee.config import Config, ConfigError, find_config_file, load_config


def problems_of(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return info.value.problems


def test_defaults_are_the_seed_defaults() -> None:
    config = load_config(None, {}) if not Path("config.toml").exists() else Config()
    assert config.telegram.max_sessions == 1000
    assert config.telegram.session_timeout_s == 1800
    assert config.telegram.retry_attempts == 3
    assert config.telegram.retry_delay_s == 1.0
    assert config.telegram.circuit_threshold == 5
    assert config.workers.worker_count == 10
    assert config.workers.batch_size == 100
    assert config.workers.timeout_ms == 30000
    assert config.workers.max_retries == 3
    assert config.limits.api_per_minute == 100
    assert config.limits.chat_messages_per_minute == 10
    assert config.limits.ai_requests_per_day == 1000
    assert config.ai.chain == ["openrouter", "anthropic", "openai", "canned"]
    assert (config.server.port, config.admin.host, config.admin.port) == (8080, "127.0.0.1", 9100)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[limits]\napi_per_minute = 0", "limits.api_per_minute: must be greater than 0"),
        ("[limits]\napi_per_minute = 'x'", "limits.api_per_minute: must be a valid integer"),
        ("[server]\nport = 70000", "server.port: must be less than or equal to 65535"),
        ("[telegram]\nbackend = 'tdlib'", "telegram.backend: must be 'telethon' or 'sim'"),
        ("[workers]\nworker_count = -1", "workers.worker_count: must be greater than 0"),
        ("[logging]\nformat = 'xml'", "logging.format: must be 'json' or 'text'"),
        ("[limits]\nburst = 3", "limits.burst: unknown key"),
        ("[nonsense]\nx = 1", "nonsense: unknown key"),
        (
            "[database]\npool_min_size = 5\npool_max_size = 2",
            "database: pool_min_size must not exceed pool_max_size",
        ),
        (
            "[ai]\nchain = ['openrouter', 'mystery']",
            "ai: chain names providers that are not configured: ['mystery']",
        ),
        ("[ai]\nchain = []", "ai: chain must name at least one provider"),
        (
            "[ai.providers.local]\nkind = 'openai'",
            "ai.providers.local: a provider of kind 'openai' needs base_url and model",
        ),
        ("[ai.providers.local]\nmodel = 'x'", "ai.providers.local.kind: required key is missing"),
        (
            "[ai.providers.openrouter]\napi_key = 'sk-123'",
            "ai.providers.openrouter.api_key: unknown key",
        ),
    ],
)
def test_each_rule_names_its_key(tmp_path: Path, toml: str, expected: str) -> None:
    found = problems_of(toml, tmp_path)
    assert any(problem.startswith(expected) for problem in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems_of("[limits]\napi_per_minute = 0\n[server]\nport = -1\nbogus = 1", tmp_path)
    assert len(found) == 3


def test_not_toml_is_one_clear_problem(tmp_path: Path) -> None:
    (found,) = problems_of("[limits\napi_per_minute = 3", tmp_path)
    assert "not valid TOML" in found and "config.toml" in found


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml", {})


def test_env_overrides_file_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[limits]\napi_per_minute = 7\n[server]\nport = 1234")
    env = {
        "VIBEE_LIMITS__API_PER_MINUTE": "9",
        "VIBEE_AI__CHAIN": '["canned"]',
        "VIBEE_AI__PROVIDERS__OPENROUTER__MODEL": "other/model",
        "VIBEE_TELEGRAM_API_HASH": "not an override (single underscore)",
    }
    config = load_config(path, env)
    assert config.limits.api_per_minute == 9
    assert config.server.port == 1234
    assert config.ai.chain == ["canned"]
    # a partial provider table keeps the built-in keys it does not set
    assert config.ai.providers["openrouter"].model == "other/model"
    assert config.ai.providers["openrouter"].base_url == "https://openrouter.ai/api/v1"


def test_env_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"VIBEE_LIMITS__API_PER_MINUTE": "-3", "VIBEE_LIMITS__": "1"})
    assert "limits.api_per_minute: must be greater than 0" in info.value.problems
    assert any("VIBEE_LIMITS__: malformed override" in p for p in info.value.problems)


def test_config_file_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config_file(None) in (None, Path("/etc/vibee/config.toml"))
    (tmp_path / "config.toml").write_text("[server]\nport = 1\n")
    assert find_config_file(None) == Path("config.toml")
    assert load_config(None, {}).server.port == 1


def test_state_dir_precedence(tmp_path: Path) -> None:
    assert Config().state_dir({"STATE_DIRECTORY": "/var/lib/vibee:/x"}) == Path("/var/lib/vibee")
    assert Config().state_dir({}) == Path.home() / ".local/share/vibee"
    explicit = Config.model_validate({"runtime": {"state_dir": str(tmp_path)}})
    assert explicit.state_dir({"STATE_DIRECTORY": "/var/lib/vibee"}) == tmp_path


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = Path(__file__).parents[2] / "config.toml.example"
    text = example.read_text()
    setting = re.compile(r"^# ([a-z_]+) = ")
    uncommented = "\n".join(line[2:] if setting.match(line) else line for line in text.splitlines())
    tmp = example.with_name(".example-check.toml")
    try:
        tmp.write_text(uncommented)
        load_config(tmp, {})
    finally:
        tmp.unlink(missing_ok=True)

    def keys(model: object, prefix: str) -> list[str]:
        out = []
        for name in type(model).model_fields:  # type: ignore[attr-defined]
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                out += keys(value, f"{prefix}{name}.")
            elif isinstance(value, dict):
                for item, entry in value.items():
                    out += keys(entry, f"{prefix}{name}.{item}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    sections = re.split(r"^\[([a-z_.]+)\]$", text, flags=re.MULTILINE)
    documented = dict(zip(sections[1::2], sections[2::2], strict=True))
    for key in keys(Config(), ""):
        section, _, leaf = key.rpartition(".")
        if section.startswith("ai.providers."):
            section = "ai.providers.openrouter"  # the one provider documented in full
        assert section in documented, f"config.toml.example has no [{section}] section"
        assert f"# {leaf} = " in documented[section], f"config.toml.example lacks {key}"
