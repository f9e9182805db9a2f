"""OpenTelemetry tracing: optional (the ``otel`` extra), off by default, near free when off.

The rest of VIBEE uses only this module, never ``opentelemetry`` itself::

    with tracing.span("ai.attempt", provider=name) as sp:   # attributes become vibee.<key>
        ...
        if sp.recording:
            sp.set(outcome="ok")
    tracing.current_ids()          # (trace_id, span_id) in hex, or None (the log formatter)

While tracing is off (the default, or before :func:`configure`), :func:`span` checks one
module flag and returns a shared do-nothing context manager: no span object, no context
switch, nothing imported from OpenTelemetry (the extra need not be installed at all).
When on, spans go through a ``BatchSpanProcessor`` (a background thread) to the OTLP/HTTP
exporter; :func:`shutdown` flushes what is left.

The spans, for one message and its reply::

    telegram.update   the session actor hands a new message to ingest      (a trace's root)
    ingest.batch      one transaction storing a batch        (root; links: each update)
    pipeline.decide   one chat turn: policy, context, AI, outbox, send
                                                        (root; links: the updates decided)
    ├── ai.complete   the router: cache, quota, moderation, the chain
    │   └── ai.attempt  one per provider attempt: provider, model, attempt, outcome
    └── telegram.send   one outbox row handed to Telegram

Carrying a trace across the durable queue: the message is stored in Postgres by ingest and
decided later, by a worker, in another task (after a restart perhaps on another
incarnation). We keep a bounded in-memory map ``(session, chat, message id) → the
telegram.update span's context`` (:func:`remember`, filled when ingest accepts the
message) and *link* the later spans to it (:func:`link_messages`) rather than storing
anything: a column or a migration for diagnostics is not worth it, a batch or a chat turn
covers several messages (links, not one parent, is what OpenTelemetry prescribes for
batches), and a message decided after a crash simply gets a decide span without a link —
its attributes (session, chat) still find it. The map holds at most
:data:`MAX_REMEMBERED` entries, oldest dropped first, and stays empty while tracing is off.

Secrets: span attributes are ids, names and counts, never message text; an exception on a
span is recorded by type and redacted message (no ``str(exc)`` unfiltered, no stack). The
collector headers are the secret ``tracing_headers`` (``Name: value`` per line), read from
``$CREDENTIALS_DIRECTORY/tracing_headers``, ``VIBEE_TRACING_HEADERS`` or
``tracing.headers_file``, and registered with the log redactor.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import SpanContext, Tracer

    from vibee.config import TracingConfig

log = logging.getLogger("vibee.obs.tracing")

EXTRA = "otel"
EXTRA_MODULES = (
    "opentelemetry.trace",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
"""What the ``otel`` extra provides (checked by :func:`missing_extra`)."""
HEADERS_SECRET = "tracing_headers"  # noqa: S105 - the secret's name, not its value
MAX_REMEMBERED = 10_000
EXPORT_TIMEOUT_S = 5.0

AttrValue = str | bool | int | float
MessageKey = tuple[int, int, int]
"""(session id, Telegram chat id, message id)."""


class NoSpan:
    """What :func:`span` yields while tracing is off: every method does nothing."""

    __slots__ = ()
    recording = False

    def set(self, **attrs: AttrValue) -> None:
        """Ignore the attributes."""


class LiveSpan:
    """A recording span (tracing on); also its own context manager (see :func:`span`)."""

    __slots__ = ("_attrs", "_links", "_name", "_otel", "_state", "_token")
    recording = True

    def __init__(self, name: str, attrs: dict[str, AttrValue], links: Iterable[MessageKey]):
        self._name = name
        self._attrs = attrs
        self._links = links
        self._otel: OtelSpan | None = None
        self._state: _Tracing | None = None
        self._token: object = None

    def set(self, **attrs: AttrValue) -> None:
        """Set attributes (``vibee.<key>``) on the span."""
        if self._otel is not None:
            self._otel.set_attributes({f"vibee.{k}": v for k, v in attrs.items()})

    def __enter__(self) -> LiveSpan:
        state = self._state = _state
        if state is None:  # shut down since span() was called: record nothing
            return self
        links = [state.link(ctx) for ctx in _contexts_of(self._links)]
        self._otel = state.tracer.start_span(
            self._name,
            attributes={f"vibee.{k}": v for k, v in self._attrs.items()},
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = state.attach(state.with_span(self._otel))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel, state = self._otel, self._state
        if otel is None or state is None:
            return
        try:
            state.detach(self._token)
            if exc is not None:
                _record(otel, exc)
        finally:
            otel.end()


_NO_SPAN = NoSpan()
_OFF: AbstractContextManager[NoSpan] = nullcontext(_NO_SPAN)
_state: _Tracing | None = None
_remembered: OrderedDict[MessageKey, SpanContext] = OrderedDict()


def enabled() -> bool:
    """Whether spans are being recorded."""
    return _state is not None


def span(
    name: str, *, links: Iterable[MessageKey] = (), **attrs: AttrValue
) -> AbstractContextManager[NoSpan | LiveSpan]:
    """A span named ``name``, current inside the ``with`` block, child of the current one.

    ``attrs`` become attributes ``vibee.<key>``; ``links`` are message keys whose
    remembered ``telegram.update`` contexts the span links to. Off: a shared no-op.
    """
    if _state is None:
        return _OFF
    return LiveSpan(name, attrs, links)


def current_ids() -> tuple[str, str] | None:
    """The current span's (trace id, span id) in hex, or None (no span, a span not sampled,
    or tracing off): a log line names only traces the collector has."""
    state = _state
    if state is None:
        return None
    ctx = state.current().get_span_context()
    if not ctx.trace_flags.sampled:  # also false for no span at all
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def remember(session_id: int, chat_id: int, message_id: int) -> None:
    """Keep the current span's context for this message, for the spans that handle it later
    in other tasks (:func:`span` ``links=``, :func:`link_messages`)."""
    state = _state
    if state is None:
        return
    ctx = state.current().get_span_context()
    if not ctx.trace_flags.sampled:  # no span, or one not recorded: nothing to link to
        return
    key = (session_id, chat_id, message_id)
    _remembered[key] = ctx
    _remembered.move_to_end(key)
    if len(_remembered) > MAX_REMEMBERED:
        _remembered.popitem(last=False)


def link_messages(keys: Iterable[MessageKey]) -> None:
    """Link the current span to the remembered contexts of these messages."""
    state = _state
    if state is None:
        return
    current = state.current()
    if not current.is_recording():
        return
    for ctx in _contexts_of(keys):
        current.add_link(ctx)


def _contexts_of(keys: Iterable[MessageKey]) -> list[SpanContext]:
    found = []
    for key in keys:
        ctx = _remembered.get(key)
        if ctx is not None:
            found.append(ctx)
    return found


def _record(otel: OtelSpan, exc: BaseException) -> None:
    """Mark the span failed: exception type and redacted message (a cancellation is not a
    failure: an attribute only)."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        otel.set_attribute("vibee.cancelled", True)
        return
    from opentelemetry.trace import Status, StatusCode

    from vibee.obs.logging import redact_text

    kind = type(exc).__qualname__
    message = redact_text(str(exc))[:500]
    otel.add_event("exception", {"exception.type": kind, "exception.message": message})
    otel.set_status(Status(StatusCode.ERROR, kind))


# -- configuration ---------------------------------------------------------------------------


def missing_extra(find_spec: Callable[[str], object] = importlib.util.find_spec) -> str | None:
    """Why tracing cannot be enabled here (the ``otel`` extra is not importable), or None."""
    for name in EXTRA_MODULES:
        try:
            found = find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            return (
                f"enabled = true needs the {EXTRA!r} extra, which is not installed "
                f"(pip install 'vibee[{EXTRA}]', or scripts/install {EXTRA}): "
                f"no module {name}"
            )
    return None


def read_headers(config: TracingConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The collector's headers (secret ``tracing_headers``), registered with the redactor.

    Raises :class:`vibee.secrets.SecretError` (naming the source, never a value) when the
    configured file is missing or a line is not ``Name: value``.
    """
    from vibee.obs.logging import register_secret
    from vibee.secrets import SecretError

    env = os.environ if environ is None else environ
    text: str | None = None
    source = ""
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / HEADERS_SECRET).is_file():
        source = f"$CREDENTIALS_DIRECTORY/{HEADERS_SECRET}"
        text = _read_secret(Path(creds) / HEADERS_SECRET, source)
    elif env.get("VIBEE_TRACING_HEADERS"):
        source = "VIBEE_TRACING_HEADERS"
        text = env["VIBEE_TRACING_HEADERS"]
    elif config.headers_file is not None:
        source = f"tracing.headers_file {config.headers_file}"
        if not config.headers_file.is_file():
            raise SecretError(f"{HEADERS_SECRET}: the configured file does not exist ({source})")
        text = _read_secret(config.headers_file, source)
    if text is None:
        return {}
    register_secret(text)
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip() or not value.strip():
            raise SecretError(f"{HEADERS_SECRET}: line {number} is not 'Name: value' ({source})")
        register_secret(value.strip())
        headers[name.strip().lower()] = value.strip()
    return headers


def _read_secret(path: Path, source: str) -> str:
    from vibee.secrets import SecretError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        message = f"{HEADERS_SECRET}: cannot read {source}: {exc.__class__.__name__}"
        raise SecretError(message) from None


class _Tracing:
    """What is live while tracing is on: the provider, the tracer, the context functions."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("vibee")
        self.current: Callable[[], OtelSpan] = trace.get_current_span
        self.with_span: Callable[[OtelSpan], Any] = trace.set_span_in_context
        self.attach: Callable[[Any], object] = context.attach
        self.detach: Callable[[Any], None] = context.detach
        self.link: Callable[[SpanContext], trace.Link] = trace.Link


def configure(
    config: TracingConfig,
    *,
    exporter: SpanExporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Start tracing when ``config.enabled`` (else make sure it is off). Returns whether on.

    ``exporter`` replaces the OTLP/HTTP exporter (tests pass an in-memory one). Raises
    :class:`vibee.config.ConfigError` without the extra, ``SecretError`` for bad headers.
    """
    global _state
    shutdown()
    if not config.enabled:
        return False
    problem = missing_extra()
    if problem is not None:
        from vibee.config import ConfigError

        raise ConfigError([f"tracing: {problem}"])
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from vibee import __version__

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=config.endpoint,
            headers=read_headers(config, environ),
            timeout=EXPORT_TIMEOUT_S,
        )
    resource = Resource.create(
        {"service.name": config.service_name, "service.version": __version__}
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio))
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _state = _Tracing(provider)
    where = urlsplit(config.endpoint)
    log.info(
        "tracing on",
        extra={
            "endpoint": f"{where.scheme}://{where.hostname}{where.path}",  # no user, no query
            "sample_ratio": config.sample_ratio,
        },
    )
    return True


def force_flush(timeout_s: float = EXPORT_TIMEOUT_S) -> bool:
    """Export every finished span now (blocks up to ``timeout_s``). True when all went."""
    state = _state
    if state is None:
        return True
    return state.provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Flush what is left and stop tracing (blocks up to the export timeout). Idempotent."""
    global _state
    state, _state = _state, None
    _remembered.clear()
    if state is not None:
        state.provider.shutdown()
