"""What every provider speaks: requests, completions, stream pieces and the error tree.

Exceptions::

    ProviderError                 a provider did not answer; ``retryable`` says whether the
    │                             same provider may be asked again, ``retry_after`` how soon
    ├── RetryableError            408, 409, 429, 5xx, 529, timeouts, connection errors,
    │   └── StreamBroken          a stream that ended or errored before it was complete
    └── PermanentError            400, 401, 402, 403, 404, insufficient quota, spend limits
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol


class ProviderError(Exception):
    """A provider failed to answer. Never carries the API key or the prompt."""

    retryable = False

    def __init__(
        self,
        provider: str,
        reason: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class RetryableError(ProviderError):
    """Worth another attempt (after ``retry_after`` seconds when the provider said so)."""

    retryable = True


class StreamBroken(RetryableError):
    """The stream stopped early; ``text`` is what had arrived."""

    def __init__(self, provider: str, reason: str, text: str = "") -> None:
        super().__init__(provider, reason)
        self.text = text


class PermanentError(ProviderError):
    """Asking again will not help (bad request, bad key, no credits, refused)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the dialog."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What VIBEE asks a model. ``scope`` keeps one user's cache entries from another's."""

    messages: tuple[Message, ...]
    system: str = ""
    max_tokens: int = 512
    temperature: float = 0.7
    scope: str = ""
    language: str = "en"
    mode: str = "digital_twin"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens as the provider counted them (``estimated`` when it did not say)."""

    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished answer and who gave it."""

    text: str
    provider: str
    model: str
    usage: Usage
    partial: bool = False
    canned: bool = False
    cached: bool = False
    fallbacks: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of streamed text."""

    text: str


StreamItem = Delta | Completion
"""A stream yields Deltas, then exactly one Completion (the whole text and the usage)."""


class Provider(Protocol):
    """One LLM endpoint in one wire format."""

    name: str
    model: str

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        """The answer as it is written: Deltas, then one Completion."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def estimate_tokens(text: str) -> int:
    """A pre-flight bound when a provider reports no usage: characters / 3, rounded up.

    Characters / 4 under-counts Russian by about 35 % on cl100k; / 3 keeps a margin.
    """
    return max(1, -(-len(text) // 3))
