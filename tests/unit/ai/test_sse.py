"""The SSE parser: however the bytes are split, the same events come out."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from vibee.ai.sse import Event, parse

STREAM = (
    b": OPENROUTER PROCESSING\r\n\r\n"
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"event: ping\rdata: {}\r\r"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
    b"data: unfinished"
)
EXPECTED = [
    Event("message_start", '{"a": 1}'),
    Event("message", "line one\nline two"),
    Event("ping", "{}"),
    Event("message", "no-space"),
    Event("message", "[DONE]"),
]


async def events_of(chunks: list[bytes]) -> list[Event]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for event in parse(source())]


async def test_whole_stream() -> None:
    assert await events_of([STREAM]) == EXPECTED


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
async def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert await events_of(chunks) == EXPECTED
