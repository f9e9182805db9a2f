"""Moderation: a local filter on what goes to a model and what would be sent to Telegram.

The local filter needs no network: a blocklist of words (word-aware, case-insensitive),
regular expressions, and length limits. Flagged output is never sent. An OpenAI-compatible
``/v1/moderations`` endpoint can be added on top (:class:`RemoteModeration`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from vibee.ai.providers.http import HttpClient


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class LocalModeration:
    """Blocklist words, patterns and length limits. ``check`` returns a reason or None."""

    def __init__(
        self,
        blocklist: Sequence[str] = (),
        patterns: Sequence[str] = (),
        max_input_chars: int = 8000,
        max_output_chars: int = 4096,
    ) -> None:
        words = [re.escape(_fold(w)) for w in blocklist if w.strip()]
        self._words = re.compile(r"(?<!\w)(" + "|".join(words) + r")(?!\w)") if words else None
        self._patterns = [re.compile(p, re.IGNORECASE) for p in patterns]
        self._max_input = max_input_chars
        self._max_output = max_output_chars

    def _check(self, text: str, limit: int) -> str | None:
        if len(text) > limit:
            return f"longer than {limit} characters"
        if self._words is not None and self._words.search(_fold(text)):
            return "contains a blocked word"
        for pattern in self._patterns:
            if pattern.search(text):
                return "matches a blocked pattern"
        return None

    def check_input(self, text: str) -> str | None:
        """Why ``text`` must not go to a model, or None."""
        return self._check(text, self._max_input)

    def check_output(self, text: str) -> str | None:
        """Why ``text`` must not be sent, or None (an empty reply is never sent either)."""
        if not text.strip():
            return "empty reply"
        return self._check(text, self._max_output)


class RemoteModeration:
    """OpenAI's ``POST /v1/moderations`` (or a compatible endpoint)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 10.0) -> None:
        self._url = base_url.rstrip("/") + "/moderations"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = HttpClient("moderation", timeout_s, 16)

    async def flagged(self, text: str) -> bool:
        """True when the endpoint flags ``text``. Raises ProviderError when it fails."""
        body = await self._http.post_json(self._url, {"input": text}, self._headers)
        results = body.get("results") or []
        return any(isinstance(r, dict) and r.get("flagged") for r in results)

    async def close(self) -> None:
        """Release connections."""
        await self._http.close()
