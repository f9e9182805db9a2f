"""Structured logging: one JSON object per line (or text for a terminal), context, redaction.

Every record carries ``ts``, ``level``, ``logger``, ``msg`` and whatever context is bound in
this task (``session_id``, ``user_id`` through :func:`bind`), ``trace_id`` and ``span_id``
when an OpenTelemetry span is current (:mod:`vibee.obs.tracing`), plus the ``extra=``
fields of the call. Redaction runs on every record, whatever the caller passed:

* every secret value VIBEE loaded (registered with :func:`register_secret`) becomes ``***``;
* fields whose name says secret (``password``, ``token``, ``api_key``, ``auth_key``, …);
* bytes values of 256 bytes (a Telegram auth key) and ``Bearer …`` / ``sk-…`` / Telethon
  ``StringSession`` shapes inside any text.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

from vibee.obs import tracing

REDACTED = "***"
_MIN_SECRET_LEN = 6
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "vibee_log_context", default=None
)
_secrets: set[str] = set()
_SECRET_FIELD = re.compile(
    r"pass(word|wd)?|secret|token|api_?key|auth_?key|authorization|credential|phone_code_hash",
    re.IGNORECASE,
)
_SECRET_SHAPES = re.compile(
    r"(?P<bearer>(?i:bearer)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|sk-[A-Za-z0-9_-]{16,}"
    r"|\b1[A-Za-z0-9_-]{340,}={0,2}"  # Telethon StringSession: dc, ip, port, auth key
)
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def register_secret(value: str) -> None:
    """Make sure ``value`` (and each line of it) never reaches a log line."""
    for part in {value, *value.splitlines(), *(ln.partition(":")[2] for ln in value.splitlines())}:
        part = part.strip()
        if len(part) >= _MIN_SECRET_LEN:
            _secrets.add(part)


def redact_text(text: str) -> str:
    """``text`` with every registered secret and every secret-shaped token replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _SECRET_SHAPES.sub(lambda m: (m.group("bearer") or "") + REDACTED, text)


def redact_value(key: str, value: Any) -> Any:
    """A JSON-safe, redacted version of one field."""
    if _SECRET_FIELD.search(key):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes redacted>"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(key, v) for v in value]
    return redact_text(repr(value) if not isinstance(value, Exception) else str(value))


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add context fields (``session_id=…``) to every record logged inside the block."""
    current = _context.get() or {}
    token = _context.set({**current, **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _Redacted:
    """Stands in for a bytes argument, whatever the format spec (%s or %r)."""

    def __init__(self, size: int) -> None:
        self._text = f"<{size} bytes redacted>"

    def __repr__(self) -> str:
        return self._text

    __str__ = __repr__


def _safe_message(record: logging.LogRecord) -> str:
    if record.args:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        safe = tuple(_Redacted(len(a)) if isinstance(a, bytes | bytearray) else a for a in args)
        try:
            return redact_text(str(record.msg) % safe)
        except (TypeError, ValueError):
            return redact_text(f"{record.msg} {safe!r}")
    return redact_text(str(record.msg))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The redacted fields of one record, in output order."""
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": _safe_message(record),
    }
    for key, value in (_context.get() or {}).items():
        fields[key] = redact_value(key, value)
    ids = tracing.current_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = redact_value(key, value)
    if record.exc_info and record.exc_info[0] is not None:
        fields["exc"] = redact_text(logging.Formatter().formatException(record.exc_info))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        return orjson.dumps(record_fields(record), default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts level logger: msg key=value …`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one readable line (plus a traceback when there is one)."""
        fields = record_fields(record)
        exc = fields.pop("exc", None)
        head = f"{fields.pop('ts')} {fields.pop('level'):<7} {fields.pop('logger')}: "
        line = head + fields.pop("msg")
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{line}\n{exc}" if exc else line


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every logger to one handler on ``stream`` (stdout by default)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("pgserver", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
