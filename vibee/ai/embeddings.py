"""An OpenAI-compatible ``/v1/embeddings`` client for the digital twin's RAG.

``embed(texts)`` returns one vector per text, in order, asking in batches of
``batch_size``. Errors are the providers' typed ones (:mod:`vibee.ai.base`):
``RetryableError`` (429, 5xx, timeouts, a malformed answer) and ``PermanentError``
(400, 401, 403, 404, no credits, vectors of the wrong size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from vibee.ai.base import PermanentError, RetryableError
from vibee.ai.providers.http import HttpClient

DEFAULT_DIMENSIONS = 1536
"""The size of ``messages.embedding`` (``vector(1536)``)."""


class Embedder(Protocol):
    """Anything that turns texts into vectors (the HTTP client, or a test double)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class EmbeddingsClient:
    """``POST {base_url}/embeddings`` in the OpenAI format, batched."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        name: str = "embeddings",
        timeout_s: float = 30.0,
        max_concurrency: int = 4,
        batch_size: int = 64,
        dimensions: int = DEFAULT_DIMENSIONS,
        send_dimensions: bool = False,
    ) -> None:
        """``send_dimensions`` asks the model for ``dimensions`` (text-embedding-3-*);
        the answer is checked against ``dimensions`` either way."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.name = name
        self.model = model
        self.dimensions = dimensions
        self._url = base_url.rstrip("/") + "/embeddings"
        self._batch_size = batch_size
        self._send_dimensions = send_dimensions
        self._headers: dict[str, str] = {}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._http = HttpClient(name, timeout_s, max_concurrency)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order (an empty input asks nothing)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors.extend(await self._batch(list(texts[start : start + self._batch_size])))
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {"model": self.model, "input": texts}
        if self._send_dimensions:
            payload["dimensions"] = self.dimensions
        answer = await self._http.post_json(self._url, payload, self._headers)
        return self._parse(answer, len(texts))

    def _parse(self, answer: dict[str, Any], expected: int) -> list[list[float]]:
        data = answer.get("data")
        if not isinstance(data, list) or len(data) != expected:
            raise RetryableError(self.name, "the answer does not hold one embedding per input")
        ordered: list[list[float] | None] = [None] * expected
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise RetryableError(self.name, "malformed embedding in the answer")
            index = item.get("index", position)
            vector = item.get("embedding")
            if not isinstance(index, int) or not 0 <= index < expected:
                raise RetryableError(self.name, "embedding index out of range")
            if not isinstance(vector, list) or not all(isinstance(v, int | float) for v in vector):
                raise RetryableError(self.name, "malformed embedding in the answer")
            if len(vector) != self.dimensions:
                raise PermanentError(
                    self.name, f"embeddings have {len(vector)} dimensions, not {self.dimensions}"
                )
            ordered[index] = [float(v) for v in vector]
        result = [v for v in ordered if v is not None]
        if len(result) != expected:
            raise RetryableError(self.name, "duplicate embedding indexes in the answer")
        return result

    async def close(self) -> None:
        """Release connections."""
        await self._http.close()
