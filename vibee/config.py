"""Configuration: TOML file + ``VIBEE_<SECTION>__<KEY>`` environment overrides, validated.

Exceptions::

    ConfigError            one or more problems; ``problems`` holds one line per problem,
                           each naming the key path (``limits.api_per_minute: must be ...``)

Where the file comes from: ``--config PATH``, else ``./config.toml``, else
``/etc/vibee/config.toml``, else built-in defaults. Every key has a default (documented in
``config.toml.example``); unknown keys are errors. Secrets are never written in this file:
only ``*_file`` paths to them (see :mod:`vibee.secrets`).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATHS = (Path("config.toml"), Path("/etc/vibee/config.toml"))
ENV_PREFIX = "VIBEE_"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` has one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    """The public REST API listener."""

    host: str = "0.0.0.0"  # noqa: S104 - the public API is meant to listen everywhere
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(65536, gt=0)
    user_cache_ttl_s: float = Field(2.0, ge=0)
    allow_registration: bool = True


class AdminConfig(_Section):
    """The admin endpoint (health, readiness, metrics, /admin)."""

    host: str = "127.0.0.1"
    port: int = Field(9100, ge=0, le=65535)
    token_file: Path | None = None


class DatabaseConfig(_Section):
    """Postgres. An empty ``url`` starts the embedded Postgres in the state directory."""

    url: str = ""
    password_file: Path | None = None
    pool_min_size: int = Field(2, ge=0)
    pool_max_size: int = Field(20, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _pool_bounds(self) -> DatabaseConfig:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


class RedisConfig(_Section):
    """Redis, for several instances. Empty ``url`` means a single instance, no Redis.

    Leases follow Kubernetes' leader-election defaults: a session's lease lasts
    ``lease_s``; its owner renews every ``retry_s`` and disconnects the session if no
    renewal succeeded for ``renew_deadline_s`` (before the lease can expire), so two
    instances never hold one Telegram session at once.
    """

    url: str = ""
    password_file: Path | None = None
    instance_id: str = ""
    lease_s: float = Field(15.0, gt=0)
    renew_deadline_s: float = Field(10.0, gt=0)
    retry_s: float = Field(2.0, gt=0)
    key_prefix: str = Field("vibee", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")

    @model_validator(mode="after")
    def _lease_timings(self) -> RedisConfig:
        if not self.lease_s > self.renew_deadline_s > 1.2 * self.retry_s:
            raise ValueError("lease_s > renew_deadline_s > 1.2 × retry_s must hold")
        return self


class TelegramConfig(_Section):
    """Telegram accounts: backend, API credentials, limits."""

    backend: Literal["telethon", "sim"] = "telethon"
    sim_url: str = "http://127.0.0.1:8090"
    api_id: int = Field(0, ge=0)
    api_hash_file: Path | None = None
    device_model: str = "VIBEE"
    app_version: str = "0.1"
    max_sessions: int = Field(1000, gt=0)
    session_timeout_s: float = Field(1800.0, gt=0)
    retry_attempts: int = Field(3, ge=0)
    retry_delay_s: float = Field(1.0, ge=0)
    circuit_threshold: int = Field(5, gt=0)
    messages_per_minute_per_chat: int = Field(10, gt=0)
    flood_sleep_threshold_s: int = Field(0, ge=0)


class AIProviderConfig(_Section):
    """One LLM provider; its API key is the secret ``ai_<name>_api_key``."""

    kind: Literal["openai", "anthropic", "canned"]
    base_url: str = ""
    model: str = ""
    models: list[str] = Field(default_factory=list)
    api_key_file: Path | None = None
    timeout_ms: int = Field(30000, gt=0)
    max_concurrency: int = Field(64, gt=0)

    @model_validator(mode="after")
    def _needs_endpoint(self) -> AIProviderConfig:
        if self.kind != "canned" and not (self.base_url and self.model):
            raise ValueError(f"a provider of kind {self.kind!r} needs base_url and model")
        return self


def _default_providers() -> dict[str, AIProviderConfig]:
    return {
        "openrouter": AIProviderConfig(
            kind="openai", base_url="https://openrouter.ai/api/v1", model="x-ai/grok-4.1-fast"
        ),
        "anthropic": AIProviderConfig(
            kind="anthropic", base_url="https://api.anthropic.com", model="claude-sonnet-4-5"
        ),
        "openai": AIProviderConfig(
            kind="openai", base_url="https://api.openai.com/v1", model="gpt-4o-mini"
        ),
        "canned": AIProviderConfig(kind="canned"),
    }


class AIConfig(_Section):
    """The LLM fallback chain and its providers."""

    chain: list[str] = Field(
        default_factory=lambda: ["openrouter", "anthropic", "openai", "canned"]
    )
    providers: dict[str, AIProviderConfig] = Field(default_factory=_default_providers)
    timeout_ms: int = Field(30000, gt=0)
    retry_attempts: int = Field(3, ge=0)
    cache_ttl_s: int = Field(3600, ge=0)
    cache_max_entries: int = Field(10_000, gt=0)
    max_tokens: int = Field(512, gt=0)
    moderation_blocklist: list[str] = Field(default_factory=list)
    moderation_patterns: list[str] = Field(default_factory=list)
    max_input_chars: int = Field(8000, gt=0)
    max_output_chars: int = Field(4096, gt=0, le=4096)
    canned_replies: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    moderation_provider: str = ""
    embeddings_provider: str = ""
    embeddings_model: str = "text-embedding-3-small"

    @model_validator(mode="after")
    def _patterns_compile(self) -> AIConfig:
        import re

        for pattern in self.moderation_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"moderation_patterns: {pattern!r} is not a regex: {exc}"
                ) from None
        for language, modes in self.canned_replies.items():
            for mode, texts in modes.items():
                if not any(t.strip() for t in texts):
                    raise ValueError(f"canned_replies.{language}.{mode}: needs a non-empty reply")
        return self

    @model_validator(mode="before")
    @classmethod
    def _merge_default_providers(cls, data: Any) -> Any:
        """A partial ``[ai.providers.openrouter]`` table overrides the built-in one key by key."""
        if not isinstance(data, dict) or not isinstance(data.get("providers"), dict):
            return data
        merged: dict[str, Any] = {
            name: provider.model_dump(exclude_defaults=True)
            for name, provider in _default_providers().items()
        }
        for name, table in data["providers"].items():
            if isinstance(table, dict) and name in merged:
                merged[name] = {**merged[name], **table}
            else:
                merged[name] = table
        return {**data, "providers": merged}

    @model_validator(mode="after")
    def _chain_names_providers(self) -> AIConfig:
        if not self.chain:
            raise ValueError("chain must name at least one provider")
        unknown = [name for name in self.chain if name not in self.providers]
        if unknown:
            raise ValueError(f"chain names providers that are not configured: {unknown}")
        for key in ("moderation_provider", "embeddings_provider"):
            name = getattr(self, key)
            if name and (name not in self.providers or self.providers[name].kind != "openai"):
                raise ValueError(f"{key}: {name!r} is not a configured provider of kind 'openai'")
        return self


class TierConfig(_Section):
    """One subscription tier's limits; a key left out keeps the ``[limits]`` value."""

    api_per_minute: int | None = Field(None, gt=0)
    ai_requests_per_day: int | None = Field(None, gt=0)
    ai_tokens_per_day: int | None = Field(None, gt=0)
    chat_messages_per_minute: int | None = Field(None, gt=0)


class LimitsConfig(_Section):
    """Rate limits and quotas (the ``free`` tier's; ``tiers`` override them per tier)."""

    api_per_minute: int = Field(100, gt=0)
    chat_messages_per_minute: int = Field(10, gt=0)
    ai_requests_per_day: int = Field(1000, gt=0)
    ai_tokens_per_day: int = Field(1_000_000, gt=0)
    auth_per_minute_per_ip: int = Field(10, gt=0)
    token_per_minute_per_ip: int = Field(60, gt=0)
    tiers: dict[str, TierConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tier_names(self) -> LimitsConfig:
        import re

        bad = [name for name in self.tiers if not re.fullmatch(r"[a-z0-9_-]+", name)]
        if bad:
            raise ValueError(f"tiers: names are lower-case letters, digits, '_' or '-': {bad}")
        return self


class WorkersConfig(_Section):
    """The automation pipeline."""

    worker_count: int = Field(10, gt=0)
    batch_size: int = Field(100, gt=0)
    queue_size: int = Field(10_000, gt=0)
    timeout_ms: int = Field(30000, gt=0)
    max_retries: int = Field(3, ge=0)
    sweep_s: float = Field(5.0, gt=0)


class SecurityConfig(_Section):
    """Keyrings and token lifetimes."""

    jwt_keys_file: Path | None = None
    session_keys_file: Path | None = None
    access_token_ttl_s: int = Field(900, gt=0)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, gt=0)


class LoggingConfig(_Section):
    """Log output."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class RuntimeConfig(_Section):
    """The process itself."""

    state_dir: Path | None = None
    shutdown_timeout_s: float = Field(30.0, gt=0)


class TracingConfig(_Section):
    """OpenTelemetry tracing over OTLP/HTTP (needs the ``otel`` extra); off by default.

    Headers for the collector (an ``Authorization`` line, say) are the secret
    ``tracing_headers``: one ``Name: value`` per line, from ``$CREDENTIALS_DIRECTORY``,
    ``VIBEE_TRACING_HEADERS`` or ``headers_file``.
    """

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = Field("vibee", min_length=1)
    sample_ratio: float = Field(1.0, ge=0, le=1)
    headers_file: Path | None = None

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            url = urlsplit(value)
            valid = url.scheme in ("http", "https") and bool(url.hostname) and " " not in value
            url.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            valid = False
        if not valid:
            raise ValueError("must be an http:// or https:// URL (OTLP/HTTP, e.g. …/v1/traces)")
        return value

    @model_validator(mode="after")
    def _extra_installed(self) -> TracingConfig:
        if self.enabled:
            from vibee.obs.tracing import missing_extra

            problem = missing_extra()
            if problem:
                raise ValueError(problem)
        return self


class Config(_Section):
    """The whole configuration."""

    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    telegram: TelegramConfig = TelegramConfig()
    ai: AIConfig = AIConfig()
    limits: LimitsConfig = LimitsConfig()
    workers: WorkersConfig = WorkersConfig()
    security: SecurityConfig = SecurityConfig()
    logging: LoggingConfig = LoggingConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tracing: TracingConfig = TracingConfig()

    def state_dir(self, environ: Mapping[str, str] | None = None) -> Path:
        """The state directory: the config's, else ``$STATE_DIRECTORY``, else ~/.local/share."""
        env = os.environ if environ is None else environ
        if self.runtime.state_dir is not None:
            return self.runtime.state_dir
        if env.get("STATE_DIRECTORY"):
            # systemd may pass several, colon-separated; the first is ours.
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        return Path.home() / ".local" / "share" / "vibee"


def find_config_file(explicit: Path | None) -> Path | None:
    """The config file to read: the explicit one (must exist), else the first default found."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError([f"{explicit}: no such config file"])
        return explicit
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate. Raises :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = find_config_file(path)
    if source is not None:
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{source}: cannot read: {exc}"]) from None
    problems = _apply_env_overrides(data, env)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(exc))
    if problems:
        raise ConfigError(problems)
    return config


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Apply ``VIBEE_A__B__C=value`` to ``data['a']['b']['c']``; JSON values for lists/maps."""
    problems: list[str] = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in parts):
            problems.append(f"{name}: malformed override (empty key between '__')")
            continue
        target = data
        for part in parts[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{name}: {'.'.join(parts)} is not a table")
                break
            target = child
        else:
            target[parts[-1]] = _parse_env_value(raw)
    return problems


def _parse_env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return raw
    return raw


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "config"
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "value_error":
            message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        else:
            message = error["msg"]
            if message.startswith("Input should be "):
                message = "must be " + message[len("Input should be ") :]
            elif message.startswith("Input "):
                message = message[len("Input ") :]
        lines.append(f"{path}: {message}")
    return lines
