"""Anthropic Messages API: ``x-api-key``, ``anthropic-version``, a top-level ``system``.

Streams are named SSE events: ``message_start`` (input usage), ``content_block_delta``
(``text_delta``), ``message_delta`` (cumulative output usage), ``message_stop``; ``ping``
may come at any time; ``event: error`` can arrive after a 200. A stream must end with
``message_stop``; anything else raises :class:`StreamBroken` carrying the text so far.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
)
from vibee.ai.providers.http import HttpClient

API_VERSION = "2023-06-01"


class AnthropicProvider:
    """A provider speaking Anthropic's ``/v1/messages``."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout_s: float = 30.0,
        max_concurrency: int = 64,
    ) -> None:
        self.name = name
        self.model = model
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._headers = {"anthropic-version": API_VERSION}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._http = HttpClient(name, timeout_s, max_concurrency)

    def _payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.system:
            payload["system"] = request.system
        if stream:
            payload["stream"] = True
        return payload

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once."""
        body = await self._http.post_json(self._url, self._payload(request, False), self._headers)
        blocks = body.get("content")
        if not isinstance(blocks, list):
            raise RetryableError(self.name, "the answer has no content blocks")
        text = "".join(
            str(b.get("text", ""))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        )
        raw = body.get("usage") or {}
        usage = Usage(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0))
        return Completion(text, self.name, str(body.get("model") or self.model), usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        """Deltas as they arrive, then one Completion."""
        parts: list[str] = []
        input_tokens = output_tokens = 0
        model = self.model
        stopped = False
        async with self._http.post(self._url, self._payload(request, True), self._headers) as r:
            try:
                async for event in sse.parse(r.content.iter_any()):
                    if event.event == "ping":
                        continue
                    try:
                        data = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        raise StreamBroken(self.name, "malformed event", "".join(parts)) from None
                    if event.event == "error":
                        kind = (data.get("error") or {}).get("type", "error")
                        raise StreamBroken(self.name, f"error mid-stream: {kind}", "".join(parts))
                    if event.event == "message_start":
                        message = data.get("message") or {}
                        model = str(message.get("model") or model)
                        usage = message.get("usage") or {}
                        input_tokens = int(usage.get("input_tokens") or 0)
                        output_tokens = int(usage.get("output_tokens") or 0)
                    elif event.event == "content_block_delta":
                        delta = data.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            parts.append(str(delta["text"]))
                            yield Delta(str(delta["text"]))
                    elif event.event == "message_delta":
                        usage = data.get("usage") or {}
                        output_tokens = int(usage.get("output_tokens") or output_tokens)
                    elif event.event == "message_stop":
                        stopped = True
                        break
            except (aiohttp.ClientError, TimeoutError, sse.SSEError) as exc:
                reason = f"stream failed: {exc.__class__.__name__}"
                raise StreamBroken(self.name, reason, "".join(parts)) from None
        if not stopped:
            raise StreamBroken(self.name, "stream ended without message_stop", "".join(parts))
        text = "".join(parts)
        yield Completion(text, self.name, model, Usage(input_tokens, output_tokens))

    async def close(self) -> None:
        """Release connections."""
        await self._http.close()
