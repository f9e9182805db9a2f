"""Tracing through the real parts: the router against the fake LLM over HTTP, ingest into
real Postgres, and the OTLP/HTTP exporter reaching a collector on loopback."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import aiohttp
import asyncpg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.automation.test_ingest import inbound
from tests.integration.telegram.test_daemon_sessions import vibee_user
from vibee.ai.base import ChatRequest, Completion, Message
from vibee.ai.providers.canned import CannedProvider
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Router
from vibee.automation.ingest import Ingest
from vibee.config import TracingConfig
from vibee.obs import tracing
from vibee.runtime.breaker import CircuitBreaker
from vibee.store import sessions


class Spans:
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def named(self, name: str) -> list[ReadableSpan]:
        assert tracing.force_flush()
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def spans() -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True), exporter=exporter)
    yield Spans(exporter)
    tracing.shutdown()


@pytest.fixture
async def llm(sim_llm: str) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{sim_llm}/reset")
    yield sim_llm


def router(base: str) -> Router:
    def slot(provider: object, name: str) -> ProviderSlot:
        breaker = CircuitBreaker(f"tracing-test:{name}:{id(provider)}", threshold=10)
        return ProviderSlot(provider, breaker)  # type: ignore[arg-type]

    return Router(
        [
            slot(
                OpenAICompatProvider("openrouter", f"{base}/openai/v1", "sim:status=503", "k"), "a"
            ),
            slot(OpenAICompatProvider("openai", f"{base}/openai/v1", "gpt", "k"), "b"),
            slot(CannedProvider(), "canned"),
        ],
        base_delay_s=0.001,
        max_delay_s=0.01,
        timeout_s=10,
    )


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_the_router_is_one_span_with_a_child_per_provider_attempt(
    llm: str, spans: Spans
) -> None:
    chain = router(llm)
    try:
        with tracing.span("pipeline.decide"):
            answer = await chain.complete(ChatRequest(messages=(Message("user", "hi"),)))
    finally:
        await chain.close()
    assert isinstance(answer, Completion) and answer.provider == "openai"
    (decide,) = spans.named("pipeline.decide")
    (complete,) = spans.named("ai.complete")
    attempts = sorted(spans.named("ai.attempt"), key=lambda s: s.start_time or 0)
    assert complete.parent is not None and complete.parent.span_id == decide.context.span_id
    assert attrs(complete) == {
        "vibee.outcome": "ok",
        "vibee.provider": "openai",
        "vibee.fallbacks": 1,
    }
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id == complete.context.span_id
        assert attempt.context.trace_id == decide.context.trace_id
    summary = [
        (a["vibee.provider"], a["vibee.attempt"], a["vibee.outcome"]) for a in map(attrs, attempts)
    ]
    assert summary == [
        ("openrouter", 1, "retryable"),
        ("openrouter", 2, "retryable"),
        ("openrouter", 3, "retryable"),
        ("openai", 1, "ok"),
    ]
    assert attrs(attempts[-1])["vibee.model"] == "gpt"
    assert isinstance(attrs(attempts[-1])["vibee.tokens"], int)
    assert [a.status.status_code.name for a in attempts] == ["ERROR"] * 3 + ["UNSET"]


async def test_tracing_off_the_router_answers_and_records_nothing(llm: str) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(enabled=True), exporter=exporter)
    tracing.configure(TracingConfig())  # off again: the first provider is shut down
    chain = router(llm)
    try:
        with tracing.span("pipeline.decide") as span:
            answer = await chain.complete(ChatRequest(messages=(Message("user", "hi"),)))
            assert tracing.current_ids() is None and not span.recording
    finally:
        await chain.close()
    assert isinstance(answer, Completion) and answer.provider == "openai"
    assert answer.fallbacks == ("openrouter: HTTP 503 api_error",)
    assert exporter.get_finished_spans() == ()


async def test_ingest_stores_a_batch_in_a_span_linked_to_each_update(
    pool: asyncpg.Pool, spans: Spans
) -> None:
    user = await vibee_user(pool)
    session = (await sessions.create(pool, user, "+15550001")).id
    stored: list[set[tuple[int, int]]] = []
    ingest = Ingest(pool, batch_size=10, queue_size=10, on_stored=stored.append)
    for message_id in (1, 2):  # queued before ingest runs: one batch
        with tracing.span("telegram.update", message_id=message_id):
            await ingest.deliver(inbound(session, user, message_id))
    await ingest.start()
    try:
        async with asyncio.timeout(10):
            while not stored:
                await asyncio.sleep(0.01)
    finally:
        await ingest.stop(10)
    assert stored == [{(session, 777)}]
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", session) == 2
    updates = {attrs(s)["vibee.message_id"]: s for s in spans.named("telegram.update")}
    (batch,) = spans.named("ingest.batch")
    assert batch.parent is None and attrs(batch) == {"vibee.messages": 2}
    assert [link.context.span_id for link in batch.links] == [
        updates[1].context.span_id,
        updates[2].context.span_id,
    ]
    assert batch.context.trace_id not in {u.context.trace_id for u in updates.values()}


class Collector(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: records each request, answers 200."""

    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.received.append((self.path, headers, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_spans_reach_an_otlp_http_collector_with_the_configured_headers(
    collector: tuple[str, list[tuple[str, dict[str, str], bytes]]], tmp_path: Path
) -> None:
    url, received = collector
    headers = tmp_path / "tracing_headers"
    headers.write_text("Authorization: Bearer collector-token-0123\n")
    config = TracingConfig(
        enabled=True,
        endpoint=f"{url}/v1/traces",
        service_name="vibee-test",
        headers_file=headers,
    )
    assert tracing.configure(config, environ={})
    try:
        with tracing.span("telegram.update", session_id=3), tracing.span("ingest.batch"):
            pass
    finally:
        tracing.shutdown()  # flushes the batch processor
    assert received, "the exporter sent nothing"
    path, sent_headers, body = received[0]
    assert path == "/v1/traces"
    assert sent_headers["content-type"] == "application/x-protobuf"
    assert sent_headers["authorization"] == "Bearer collector-token-0123"
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "vibee-test"
    names = {s.name for scope in resource_spans.scope_spans for s in scope.spans}
    assert names == {"telegram.update", "ingest.batch"}
