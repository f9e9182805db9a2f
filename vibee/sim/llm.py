"""Fake LLM providers on loopback: ``vibee sim llm`` (tests, benchmarks, ``vibee demo``).

One server speaks three wire formats, streaming and not, under these prefixes::

    /openai/v1/...            OpenAI       chat/completions, embeddings, moderations
    /openrouter/api/v1/...    OpenRouter   chat/completions (errors with integer codes, cost)
    /anthropic/v1/messages    Anthropic    Messages API (named SSE events, ping)
    /v1/...                   the same as /openai/v1/...

Behaviour is scripted per request, by the ``x-sim`` header or by a model name that starts
with ``sim:`` (``"model": "sim:status=429;retry_after=2"``), as ``key=value`` pairs split by
``;``:

    latency_ms=N         wait before answering (and between stream chunks: chunk_ms=N)
    status=N             answer with this HTTP error in the provider's error format
    fail_first=N;key=K   only the first N requests carrying key K fail (then succeed)
    retry_after=S        Retry-After in seconds      retry_after_date=S  as an HTTP date
    retry_after_ms=MS    retry-after-ms (OpenAI)     code=insufficient_quota  error code
    malformed=1          200 with a body that is not JSON
    cut_after=N          stream N text chunks, then close without [DONE] / message_stop
    error_after=N        stream N text chunks, then an error (chunk with "error" / event: error)
    keepalive=1          interleave ": OPENROUTER PROCESSING" comments / ping events
    text=...             the reply text (default: deterministic, derived from the prompt)

The API key ``sk-invalid`` gets 401. ``GET /stats`` counts requests per format;
``POST /reset`` clears counters and ``fail_first`` state.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

Script = dict[str, str]


class SimState:
    """Request counters and ``fail_first`` bookkeeping."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.failures_left: dict[str, int] = {}


_STATE_KEY = web.AppKey("sim_llm_state", SimState)


def parse_script(request: web.Request, body: dict[str, Any]) -> Script:
    """The behaviour for this request, from the ``x-sim`` header and a ``sim:`` model name."""
    parts = []
    model = str(body.get("model", ""))
    if model.startswith("sim:"):
        parts.append(model[4:])
    parts.append(request.headers.get("x-sim", ""))
    script: Script = {}
    for chunk in ";".join(parts).split(";"):
        key, sep, value = chunk.partition("=")
        if sep and key.strip():
            script[key.strip()] = value.strip()
    return script


def _prompt_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict)
                ).strip()
            return str(content or "")
    return ""


def reply_text(body: dict[str, Any], script: Script) -> str:
    """The deterministic reply: ``text=`` if scripted, else derived from the prompt."""
    if "text" in script:
        return script["text"]
    prompt = _prompt_text(body)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return f"Sim reply {digest} to: {prompt[:200]}"


def usage_of(body: dict[str, Any], text: str) -> tuple[int, int]:
    """Deterministic (prompt, completion) token counts: about 4 characters a token."""
    prompt_chars = len(orjson.dumps(body.get("messages") or [])) + len(str(body.get("system", "")))
    return max(1, prompt_chars // 4), max(1, len(text) // 4)


def _chunks(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _error_body(fmt: str, status: int, code: str | None) -> dict[str, Any]:
    message = {
        400: "Bad request",
        401: "Invalid API key",
        402: "Insufficient credits",
        403: "Flagged by moderation",
        404: "Model not found",
        408: "Request timeout",
        413: "Request too large",
        429: "Rate limit exceeded",
        500: "Internal server error",
        502: "Bad gateway",
        503: "Service unavailable",
        529: "Overloaded",
    }.get(status, "Error")
    if fmt == "anthropic":
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if fmt == "openrouter":
        return {"error": {"code": status, "message": message}}
    kind = "insufficient_quota" if code == "insufficient_quota" else "api_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _error_response(fmt: str, status: int, script: Script) -> web.Response:
    headers: dict[str, str] = {}
    if "retry_after" in script:
        headers["Retry-After"] = script["retry_after"]
    if "retry_after_date" in script:
        headers["Retry-After"] = formatdate(
            time.time() + float(script["retry_after_date"]), usegmt=True
        )
    if "retry_after_ms" in script:
        headers["retry-after-ms"] = script["retry_after_ms"]
    body = _error_body(fmt, status, script.get("code"))
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _should_fail(state: SimState, script: Script) -> bool:
    if "status" not in script:
        return False
    if "fail_first" not in script:
        return True
    key = script.get("key", "default")
    left = state.failures_left.setdefault(key, int(script["fail_first"]))
    if left <= 0:
        return False
    state.failures_left[key] = left - 1
    return True


async def _read_json(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": {"message": "body must be an object"}}, status=400)
    return body


def _authorized(request: web.Request) -> bool:
    key = request.headers.get("x-api-key") or request.headers.get("Authorization") or ""
    return bool(key) and not key.endswith("sk-invalid")


async def _prologue(
    request: web.Request, fmt: str
) -> tuple[dict[str, Any], Script] | web.StreamResponse:
    state = request.app[_STATE_KEY]
    state.requests[fmt] += 1
    parsed = await _read_json(request)
    if isinstance(parsed, web.Response):
        return parsed
    script = parse_script(request, parsed)
    if "latency_ms" in script:
        await asyncio.sleep(float(script["latency_ms"]) / 1000)
    if not _authorized(request):
        return _error_response(fmt, 401, {})
    if _should_fail(state, script):
        return _error_response(fmt, int(script["status"]), script)
    if script.get("malformed"):
        return web.Response(body=b'{"id": "broken', content_type="application/json")
    return parsed, script


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def _pause(script: Script) -> None:
    if "chunk_ms" in script:
        await asyncio.sleep(float(script["chunk_ms"]) / 1000)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """OpenAI / OpenRouter ``POST .../chat/completions``."""
    fmt = "openrouter" if request.path.startswith("/openrouter") else "openai"
    start = await _prologue(request, fmt)
    if isinstance(start, web.StreamResponse):
        return start
    body, script = start
    text = reply_text(body, script)
    prompt_tokens, completion_tokens = usage_of(body, text)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if fmt == "openrouter":
        usage["cost"] = round((prompt_tokens + completion_tokens) * 1e-6, 8)
    model = str(body.get("model", "sim"))
    ident = "chatcmpl-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
            },
            dumps=lambda v: orjson.dumps(v).decode(),
        )
    response = await _sse(request)

    async def send(payload: dict[str, Any]) -> None:
        await response.write(b"data: " + orjson.dumps(payload) + b"\n\n")

    base = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = model
    for number, piece in enumerate(_chunks(text)):
        if script.get("keepalive"):
            await response.write(b": OPENROUTER PROCESSING\n\n")
        if number == int(script.get("cut_after", -1)):
            return response
        if number == int(script.get("error_after", -1)):
            error = _error_body(fmt, 502 if fmt == "openrouter" else 500, None)["error"]
            choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
            await send({**base, "error": error, "choices": [choice]})
            return response
        delta = {"role": "assistant", "content": piece} if number == 0 else {"content": piece}
        await send({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await _pause(script)
    await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage") or fmt == "openrouter":
        await send({**base, "choices": [], "usage": usage})
    await response.write(b"data: [DONE]\n\n")
    return response


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic ``POST /v1/messages``."""
    if request.headers.get("anthropic-version") is None:
        return _error_response("anthropic", 400, {})
    start = await _prologue(request, "anthropic")
    if isinstance(start, web.StreamResponse):
        return start
    body, script = start
    text = reply_text(body, script)
    input_tokens, output_tokens = usage_of(body, text)
    ident = "msg_" + hashlib.sha256(text.encode()).hexdigest()[:12]
    model = str(body.get("model", "sim"))
    if not body.get("stream"):
        return web.json_response(
            {
                "id": ident,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        )
    response = await _sse(request)

    async def event(name: str, payload: dict[str, Any]) -> None:
        data = orjson.dumps({"type": name, **payload})
        await response.write(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n")

    usage = {"input_tokens": input_tokens, "output_tokens": 1}
    message = {"id": ident, "type": "message", "role": "assistant", "model": model}
    await event("message_start", {"message": {**message, "content": [], "usage": usage}})
    await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    for number, piece in enumerate(_chunks(text)):
        if script.get("keepalive"):
            await event("ping", {})
        if number == int(script.get("cut_after", -1)):
            return response
        if number == int(script.get("error_after", -1)):
            await event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
            return response
        delta = {"type": "text_delta", "text": piece}
        await event("content_block_delta", {"index": 0, "delta": delta})
        await _pause(script)
    await event("content_block_stop", {"index": 0})
    await event(
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )
    await event("message_stop", {})
    return response


def embedding_of(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``: equal texts give equal vectors."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend(v / 2**31 - 1.0 for v in struct.unpack("<8I", block))
        counter += 1
    vector = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


async def embeddings(request: web.Request) -> web.StreamResponse:
    """OpenAI ``POST /v1/embeddings`` with deterministic vectors (1536 by default)."""
    start = await _prologue(request, "embeddings")
    if isinstance(start, web.StreamResponse):
        return start
    body, _ = start
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    dimensions = int(body.get("dimensions") or 1536)
    data = [
        {"object": "embedding", "index": i, "embedding": embedding_of(str(t), dimensions)}
        for i, t in enumerate(texts)
    ]
    tokens = sum(max(1, len(str(t)) // 4) for t in texts)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "sim"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        dumps=lambda v: orjson.dumps(v).decode(),
    )


async def moderations(request: web.Request) -> web.StreamResponse:
    """OpenAI ``POST /v1/moderations``: flags any input containing the word ``forbidden``."""
    start = await _prologue(request, "moderations")
    if isinstance(start, web.StreamResponse):
        return start
    body, _ = start
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    results = []
    for text in texts:
        flagged = "forbidden" in str(text).lower()
        results.append(
            {"flagged": flagged, "categories": {"harassment": flagged}, "category_scores": {}}
        )
    return web.json_response({"id": "modr-sim", "model": "omni-moderation", "results": results})


async def stats(request: web.Request) -> web.Response:
    """Requests served per wire format."""
    return web.json_response({"requests": dict(request.app[_STATE_KEY].requests)})


async def reset(request: web.Request) -> web.Response:
    """Clear counters and ``fail_first`` state."""
    state = request.app[_STATE_KEY]
    state.requests.clear()
    state.failures_left.clear()
    return web.json_response({"ok": True})


def build_app() -> web.Application:
    """The fake providers' aiohttp application."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[_STATE_KEY] = SimState()
    for prefix in ("/v1", "/openai/v1", "/openrouter/api/v1"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_post(f"{prefix}/moderations", moderations)
    for prefix in ("/v1", "/anthropic/v1"):
        app.router.add_post(f"{prefix}/messages", messages)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    return app


async def serve(host: str, port: int) -> None:
    """Serve until cancelled; prints ``listening on http://HOST:PORT`` once bound."""
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``vibee sim llm --listen HOST:PORT`` (port 0 picks a free one)."""
    parser = argparse.ArgumentParser(prog="vibee sim llm", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8091", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"vibee sim llm: --listen must be HOST:PORT, not {args.listen!r}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.run(serve(host, int(port)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
