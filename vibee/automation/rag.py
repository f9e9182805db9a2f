"""RAG for the digital twin: the owner's past replies most similar to an incoming message.

The owner's own outgoing messages are embedded (``index_pending``) and searched by cosine
distance in pgvector (``examples``). Without an embeddings endpoint (``embedder`` None)
RAG is off: nothing is indexed and ``examples`` is empty, and the twin answers without it.
A failing endpoint never stops a reply either: ``examples`` logs and returns nothing.
"""

from __future__ import annotations

import asyncio
import logging

from vibee.ai.base import ProviderError
from vibee.ai.embeddings import Embedder
from vibee.store import Executor
from vibee.store import embeddings as store

log = logging.getLogger("vibee.automation.rag")

INDEX_BATCH = 64
MAX_DISTANCE = 0.8
"""Cosine distance beyond which a past reply says nothing about the new message."""
MAX_EXAMPLE_CHARS = 400
MAX_EMBED_CHARS = 2000
"""Texts are cut to this before embedding: one huge message must not exceed the model's
input limit and block the index with the same failing batch forever."""
EXAMPLES_TIMEOUT_S = 5.0


class Rag:
    """Embeds the owner's messages and finds the ones nearest to a new message."""

    def __init__(
        self,
        embedder: Embedder | None,
        db: Executor,
        max_distance: float = MAX_DISTANCE,
        examples_timeout_s: float = EXAMPLES_TIMEOUT_S,
    ) -> None:
        """``examples_timeout_s`` bounds what RAG may add to a reply's latency."""
        self.embedder = embedder
        self.db = db
        self.max_distance = max_distance
        self.examples_timeout_s = examples_timeout_s

    @property
    def enabled(self) -> bool:
        """Whether an embeddings endpoint is configured."""
        return self.embedder is not None

    async def index_pending(self, user_id: int, limit: int | None = None) -> int:
        """Embed the owner's messages that have no embedding yet (up to ``limit``, default
        all), in batches. Returns how many were stored. Provider errors propagate."""
        if self.embedder is None:
            return 0
        done = 0
        while limit is None or done < limit:
            size = INDEX_BATCH if limit is None else min(INDEX_BATCH, limit - done)
            batch = await store.pending_owner_messages(self.db, user_id, size)
            if not batch:
                break
            vectors = await self.embedder.embed([m.text[:MAX_EMBED_CHARS] for m in batch])
            done += await store.set_embeddings(
                self.db, [(m.id, v) for m, v in zip(batch, vectors, strict=True)]
            )
            if len(batch) < size:
                break
        return done

    async def examples(self, user_id: int, text: str, k: int = 5) -> list[str]:
        """Up to ``k`` distinct past owner replies most similar to ``text``, nearest first.
        Empty when RAG is off, the text is empty, or the endpoint fails or is too slow."""
        if self.embedder is None or not text.strip() or k < 1:
            return []
        try:
            async with asyncio.timeout(self.examples_timeout_s):
                [vector] = await self.embedder.embed([text[:MAX_EMBED_CHARS]])
        except ProviderError as exc:
            log.warning("rag: no examples, the embeddings endpoint failed: %s", exc)
            return []
        except TimeoutError:
            log.warning("rag: no examples, the embeddings endpoint took too long")
            return []
        found = await store.similar_owner_messages(self.db, user_id, vector, k * 2)
        out: list[str] = []
        for item in found:
            example = item.text.strip()[:MAX_EXAMPLE_CHARS]
            if item.distance <= self.max_distance and example not in out:
                out.append(example)
            if len(out) == k:
                break
        return out
