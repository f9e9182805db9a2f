"""Predefined replies: the last resort when every model is down. Never empty.

Replies are chosen per language and mode, deterministically from the conversation (the
same incoming message gets the same reply), and the result is marked ``canned``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence

from vibee.ai.base import ChatRequest, Completion, Delta, StreamItem, Usage

DEFAULT_REPLIES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "digital_twin": (
            "Got your message, I'll get back to you a bit later.",
            "Thanks! I'm a little busy right now, will reply soon.",
            "Seen it, let me come back to you shortly.",
        ),
        "sniper": ("Thanks for your interest! I'll message you with details soon.",),
    },
    "ru": {
        "digital_twin": (
            "Получил сообщение, отвечу чуть позже.",
            "Спасибо! Сейчас немного занят, скоро отвечу.",
            "Увидел, вернусь к тебе в ближайшее время.",
        ),
        "sniper": ("Спасибо за интерес! Скоро напишу подробности.",),
    },
}


class CannedProvider:
    """A provider that never fails: one of the predefined replies."""

    def __init__(
        self,
        name: str = "canned",
        replies: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    ) -> None:
        self.name = name
        self.model = "predefined"
        self._replies = {
            lang: {mode: tuple(r for r in texts if r.strip()) for mode, texts in modes.items()}
            for lang, modes in (replies or DEFAULT_REPLIES).items()
        }

    def choose(self, request: ChatRequest) -> str:
        """The reply for ``request``: by language (else English), by mode (else twin)."""
        modes = self._replies.get(request.language) or self._replies.get("en") or {}
        texts = modes.get(request.mode) or modes.get("digital_twin") or ()
        if not texts:
            texts = DEFAULT_REPLIES["en"]["digital_twin"]
        last = request.messages[-1].content if request.messages else ""
        index = int.from_bytes(hashlib.sha256(last.encode()).digest()[:4], "big") % len(texts)
        return texts[index]

    async def complete(self, request: ChatRequest) -> Completion:
        """A predefined reply, marked ``canned``."""
        text = self.choose(request)
        return Completion(text, self.name, self.model, Usage(0, 0), canned=True)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        """The same reply as one Delta, then the Completion."""
        completion = await self.complete(request)
        yield Delta(completion.text)
        yield completion

    async def close(self) -> None:
        """Nothing to release."""
