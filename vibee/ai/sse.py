"""Server-sent events: a small, strict parser for the providers' streams.

Follows the WHATWG rules that matter here: lines end in LF, CRLF or CR; a line starting
with ``:`` is a comment (OpenRouter's ``: OPENROUTER PROCESSING`` keep-alives) and is
skipped; ``event:`` names the event, ``data:`` lines are joined with newlines; a blank
line dispatches. A stream that ends without a final blank line drops the partial event,
as browsers do: the caller decides whether the stream ended properly (``[DONE]`` /
``message_stop``), and a cut stream is an error, not a short success.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

MAX_EVENT_BYTES = 1024 * 1024


class SSEError(Exception):
    """The stream broke the SSE rules (an event too large to be real)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its name (``message`` when unnamed) and its data."""

    event: str
    data: str


async def parse(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """Events from a byte stream, however the bytes are split into chunks."""
    buffer = b""
    name = ""
    data: list[str] = []
    size = 0
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > MAX_EVENT_BYTES:
            raise SSEError(f"an SSE line exceeds {MAX_EVENT_BYTES} bytes")
        while True:
            cut, skip = _line_end(buffer)
            if cut < 0:
                break
            line = buffer[:cut].decode("utf-8", errors="replace")
            buffer = buffer[cut + skip :]
            if not line:
                if data:
                    yield Event(name or "message", "\n".join(data))
                name, data, size = "", [], 0
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                size += len(value)
                if size > MAX_EVENT_BYTES:
                    raise SSEError(f"an SSE event exceeds {MAX_EVENT_BYTES} bytes")
                data.append(value)


def _line_end(buffer: bytes) -> tuple[int, int]:
    """(index of the line end, its length), or (-1, 0). A CR at the very end waits for more."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr < 0 or (0 <= lf < cr):
        return (lf, 1) if lf >= 0 else (-1, 0)
    if cr == len(buffer) - 1:
        return (-1, 0)  # might be the first half of CRLF
    return (cr, 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, 1)
