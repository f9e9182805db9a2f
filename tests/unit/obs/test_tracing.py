"""Tracing: spans, parents, links, log correlation, the off path, the extra guard, headers."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from vibee.config import ConfigError, TracingConfig, load_config
from vibee.obs import logging as vlog
from vibee.obs import tracing
from vibee.secrets import SecretError


class Spans:
    """Tracing on, into memory; ``finished()`` flushes the batch processor first."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def finished(self) -> list[ReadableSpan]:
        assert tracing.force_flush()
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]


@pytest.fixture
def spans() -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(TracingConfig(enabled=True), exporter=exporter)
    yield Spans(exporter)
    tracing.shutdown()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    vlog.configure("debug", "json", stream)
    yield stream
    logging.getLogger().handlers.clear()


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


# -- off -------------------------------------------------------------------------------------


def test_off_by_default_yields_a_shared_no_op() -> None:
    tracing.shutdown()
    assert not tracing.enabled()
    assert not tracing.configure(TracingConfig())  # enabled = false: stays off
    first, second = tracing.span("a", x=1), tracing.span("b", links=[(1, 2, 3)])
    assert first is second  # no object per call
    with first as span:
        assert span.recording is False
        span.set(outcome="ok")
        assert tracing.current_ids() is None
        tracing.remember(1, 2, 3)
        tracing.link_messages([(1, 2, 3)])
    assert not tracing._remembered


def test_off_imports_nothing_from_opentelemetry() -> None:
    code = (
        "import sys, io\n"
        "from vibee.obs import logging as vlog, tracing\n"
        "vlog.configure('info', 'json', io.StringIO())\n"
        "with tracing.span('x', a=1):\n"
        "    import logging; logging.getLogger('t').info('inside')\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_shutdown_turns_it_off(spans: Spans) -> None:
    with tracing.span("before"):
        pass
    tracing.shutdown()
    with tracing.span("after") as span:
        assert span.recording is False
    assert [s.name for s in spans.exporter.get_finished_spans()] == ["before"]  # flushed


# -- on --------------------------------------------------------------------------------------


def test_nested_spans_are_parent_and_child_with_prefixed_attributes(spans: Spans) -> None:
    with tracing.span("pipeline.decide", session_id=7, chat=42) as outer:
        with tracing.span("ai.complete") as inner:
            inner.set(outcome="ok", tokens=12)
        assert outer.recording
    (child,) = spans.named("ai.complete")
    (parent,) = spans.named("pipeline.decide")
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id
    assert parent.parent is None
    assert dict(parent.attributes or {}) == {"vibee.session_id": 7, "vibee.chat": 42}
    assert dict(child.attributes or {}) == {"vibee.outcome": "ok", "vibee.tokens": 12}
    assert child.kind is SpanKind.INTERNAL
    assert parent.resource.attributes["service.name"] == "vibee"


def test_sibling_tasks_inherit_the_current_span(spans: Spans) -> None:
    async def child(name: str) -> None:
        with tracing.span(name):
            await asyncio.sleep(0)

    async def main() -> None:
        with tracing.span("parent"):
            await asyncio.gather(child("one"), child("two"))

    asyncio.run(main())
    (parent,) = spans.named("parent")
    for name in ("one", "two"):
        (span,) = spans.named(name)
        assert span.parent is not None and span.parent.span_id == parent.context.span_id


def test_an_exception_is_recorded_redacted_and_propagates(spans: Spans) -> None:
    vlog.register_secret("hunter2-very-secret")
    with pytest.raises(ValueError, match="hunter2"), tracing.span("failing"):
        raise ValueError("bad key hunter2-very-secret")
    (span,) = spans.named("failing")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    (event,) = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes == {"exception.type": "ValueError", "exception.message": "bad key ***"}


def test_cancellation_propagates_and_is_not_an_error(spans: Spans) -> None:
    async def main() -> None:
        async def slow() -> None:
            with tracing.span("cancelled"):
                await asyncio.sleep(10)

        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (span,) = spans.named("cancelled")
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {"vibee.cancelled": True}
    assert span.end_time is not None


def test_a_log_line_inside_a_span_carries_its_ids(spans: Spans, log_stream: io.StringIO) -> None:
    log = logging.getLogger("vibee.test")
    with tracing.span("outer"):
        log.info("inside")
        ids = tracing.current_ids()
    log.info("outside")
    inside, outside = records(log_stream)
    (span,) = spans.named("outer")
    assert ids == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert (inside["trace_id"], inside["span_id"]) == ids
    assert "trace_id" not in outside and "span_id" not in outside


def test_updates_are_linked_from_the_spans_that_handle_them_later(spans: Spans) -> None:
    for message_id in (1, 2):
        with tracing.span("telegram.update", message_id=message_id):
            tracing.remember(5, 50, message_id)
    with tracing.span("ingest.batch", links=[(5, 50, 1), (5, 50, 2), (5, 50, 99)]):
        pass
    with tracing.span("pipeline.decide"):
        tracing.link_messages([(5, 50, 2)])
    updates = {s.attributes["vibee.message_id"]: s for s in spans.named("telegram.update")}  # type: ignore[index]
    (batch,) = spans.named("ingest.batch")
    (decide,) = spans.named("pipeline.decide")
    assert batch.parent is None and decide.parent is None  # roots of their own traces
    assert [link.context.span_id for link in batch.links] == [
        updates[1].context.span_id,
        updates[2].context.span_id,
    ]
    assert [link.context.span_id for link in decide.links] == [updates[2].context.span_id]


def test_the_remembered_contexts_are_bounded(spans: Spans, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "MAX_REMEMBERED", 3)
    with tracing.span("telegram.update"):
        for message_id in range(5):
            tracing.remember(1, 1, message_id)
    assert list(tracing._remembered) == [(1, 1, 2), (1, 1, 3), (1, 1, 4)]
    tracing.remember(1, 1, 9)  # no current span: nothing to remember
    assert (1, 1, 9) not in tracing._remembered


def test_sample_ratio_zero_records_nothing_and_logs_no_ids(log_stream: io.StringIO) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True, sample_ratio=0.0), exporter=exporter)
    try:
        with tracing.span("unsampled") as span:
            span.set(x=1)
            tracing.remember(1, 1, 1)
            logging.getLogger("vibee.test").info("inside")
        assert tracing.force_flush()
        assert exporter.get_finished_spans() == ()
        assert not tracing._remembered
        line = records(log_stream)[-1]
        assert line["msg"] == "inside" and "trace_id" not in line
    finally:
        tracing.shutdown()


# -- the extra and the configuration ---------------------------------------------------------


def test_missing_extra_names_it() -> None:
    assert tracing.missing_extra() is None  # installed in the test environment
    problem = tracing.missing_extra(lambda name: None)
    assert problem is not None and "'otel' extra" in problem and "vibee[otel]" in problem

    def parent_missing(name: str) -> object:
        raise ModuleNotFoundError(name)

    assert "'otel' extra" in (tracing.missing_extra(parent_missing) or "")


def test_enabling_tracing_without_the_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "EXTRA_MODULES", ("vibee_no_such_module_for_the_test",))
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"VIBEE_TRACING__ENABLED": "true"})
    (problem,) = caught.value.problems
    assert problem.startswith("tracing: enabled = true needs the 'otel' extra")
    assert load_config(None, {"VIBEE_TRACING__ENABLED": "false"}).tracing.enabled is False
    built = TracingConfig.model_construct(enabled=True)  # as if validated elsewhere
    with pytest.raises(ConfigError, match="'otel' extra"):
        tracing.configure(built)
    assert not tracing.enabled()


def test_tracing_section_is_validated() -> None:
    config = load_config(
        None, {"VIBEE_TRACING__ENABLED": "true", "VIBEE_TRACING__SAMPLE_RATIO": "0.25"}
    )
    assert (config.tracing.enabled, config.tracing.sample_ratio) == (True, 0.25)
    bad = {
        "VIBEE_TRACING__ENDPOINT": "ftp://collector/v1/traces",
        "VIBEE_TRACING__SAMPLE_RATIO": "1.5",
        "VIBEE_TRACING__SERVICE_NAME": "",
        "VIBEE_TRACING__COLOR": "blue",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(None, bad)
    assert sorted(p.split(":")[0] for p in caught.value.problems) == [
        "tracing.color",
        "tracing.endpoint",
        "tracing.sample_ratio",
        "tracing.service_name",
    ]


# -- collector headers (a secret) ------------------------------------------------------------


def test_headers_come_from_the_secret_sources_in_order(tmp_path: Path) -> None:
    configured = tmp_path / "headers"
    configured.write_text("# for the collector\nAuthorization: Bearer from-the-file-123\n\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "tracing_headers").write_text("X-Scope-OrgID: tenant-from-creds\n")
    config = TracingConfig(headers_file=configured)
    assert tracing.read_headers(config, {}) == {"authorization": "Bearer from-the-file-123"}
    env = {"VIBEE_TRACING_HEADERS": "X-Api-Key: from-the-env-456"}
    assert tracing.read_headers(config, env) == {"x-api-key": "from-the-env-456"}
    env["CREDENTIALS_DIRECTORY"] = str(creds)
    assert tracing.read_headers(config, env) == {"x-scope-orgid": "tenant-from-creds"}
    assert tracing.read_headers(TracingConfig(), {}) == {}


def test_header_values_never_reach_a_log_or_an_error(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    configured = tmp_path / "headers"
    configured.write_text("Authorization: Basic c2VjcmV0LXZhbHVlLTc4OQ==\n")
    tracing.read_headers(TracingConfig(headers_file=configured), {})
    logging.getLogger("vibee.test").info("header is Basic c2VjcmV0LXZhbHVlLTc4OQ==")
    assert "c2VjcmV0LXZhbHVlLTc4OQ" not in log_stream.getvalue()

    configured.write_text("just-a-token-without-a-name-0001\n")
    with pytest.raises(SecretError) as caught:
        tracing.read_headers(TracingConfig(headers_file=configured), {})
    assert "line 1 is not 'Name: value'" in str(caught.value)
    assert "just-a-token" not in str(caught.value)
    with pytest.raises(SecretError, match="does not exist"):
        tracing.read_headers(TracingConfig(headers_file=tmp_path / "missing"), {})
