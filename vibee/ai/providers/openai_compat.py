"""OpenAI Chat Completions, and everything that speaks it: OpenRouter, local model servers.

OpenRouter extras: ``models`` (OpenRouter's own fallback list), the attribution headers
``HTTP-Referer`` / ``X-Title``, ``cost`` in the usage, and keep-alive comments (skipped by
the SSE parser). A stream must end with ``data: [DONE]``; an ``error`` chunk or a cut
connection before it raises :class:`StreamBroken` carrying the text so far.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from vibee.ai import sse
from vibee.ai.base import (
    ChatRequest,
    Completion,
    Delta,
    RetryableError,
    StreamBroken,
    StreamItem,
    Usage,
    estimate_tokens,
)
from vibee.ai.providers.http import HttpClient, error_code


def _usage(raw: Any, request: ChatRequest, text: str) -> Usage:
    if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
        cost = raw.get("cost")
        return Usage(
            prompt_tokens=int(raw["prompt_tokens"]),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            cost=float(cost) if isinstance(cost, int | float) else None,
        )
    prompt = request.system + "".join(m.content for m in request.messages)
    return Usage(estimate_tokens(prompt), estimate_tokens(text), estimated=True)


class OpenAICompatProvider:
    """A provider speaking OpenAI's ``/chat/completions``."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout_s: float = 30.0,
        max_concurrency: int = 64,
        models: list[str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._models = models or []
        self._headers = dict(extra_headers or {})
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._http = HttpClient(name, timeout_s, max_concurrency)

    def _payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if self._models:
            payload["models"] = self._models
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once."""
        body = await self._http.post_json(self._url, self._payload(request, False), self._headers)
        try:
            text = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RetryableError(self.name, "the answer has no choices[0].message") from None
        if not isinstance(text, str):
            raise RetryableError(self.name, "the answer's content is not text")
        model = str(body.get("model") or self.model)
        return Completion(text, self.name, model, _usage(body.get("usage"), request, text))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        """Deltas as they arrive, then one Completion."""
        parts: list[str] = []
        usage_raw: Any = None
        model = self.model
        done = False
        async with self._http.post(self._url, self._payload(request, True), self._headers) as r:
            try:
                async for event in sse.parse(r.content.iter_any()):
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        raise StreamBroken(self.name, "malformed chunk", "".join(parts)) from None
                    if not isinstance(chunk, dict):
                        continue
                    if "error" in chunk:
                        code = error_code(chunk) or "error"
                        raise StreamBroken(self.name, f"error mid-stream: {code}", "".join(parts))
                    model = str(chunk.get("model") or model)
                    if chunk.get("usage"):
                        usage_raw = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if isinstance(piece, str) and piece:
                            parts.append(piece)
                            yield Delta(piece)
            except (aiohttp.ClientError, TimeoutError, sse.SSEError) as exc:
                reason = f"stream failed: {exc.__class__.__name__}"
                raise StreamBroken(self.name, reason, "".join(parts)) from None
        if not done:
            raise StreamBroken(self.name, "stream ended without [DONE]", "".join(parts))
        text = "".join(parts)
        yield Completion(text, self.name, model, _usage(usage_raw, request, text))

    async def close(self) -> None:
        """Release connections."""
        await self._http.close()
