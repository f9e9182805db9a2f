"""Lanes: many workers' statements in one round trip, on one or more connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests.integration.telegram.world import eventually
from vibee.automation import lanes
from vibee.automation.lanes import Lane
from vibee.store import Conn


@asynccontextmanager
async def running(lane: Lane[Any, Any]) -> AsyncIterator[None]:
    """The lane's task, running for the block and cancelled at its end."""
    runner = asyncio.create_task(lane.run())
    try:
        yield
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_lane_groups_concurrent_requests_and_isolates_a_bad_one(
    pool: asyncpg.Pool,
) -> None:
    async def parse(conn: Conn, texts: list[str]) -> list[int]:
        rows = await conn.fetch("SELECT x::int FROM unnest($1::text[]) AS x", texts)
        return [r[0] for r in rows]

    lane: Lane[str, int] = Lane("test", pool, parse)
    async with running(lane):
        together = await asyncio.gather(*(lane.call(str(n)) for n in range(200)))
        assert together == list(range(200))
        assert lane.rounds <= 3  # the first alone, the others grouped
        texts = [str(n) for n in range(50)]
        texts[30] = "oops"
        results = await asyncio.gather(*(lane.call(t) for t in texts), return_exceptions=True)
        assert [r for i, r in enumerate(results) if i != 30] == [n for n in range(50) if n != 30]
        assert isinstance(results[30], asyncpg.InvalidTextRepresentationError)
        assert await lane.call("7") == 7  # the lane goes on


async def test_a_gathering_lane_waits_for_requests_coming_one_after_another(
    pool: asyncpg.Pool,
) -> None:
    async def double(conn: Conn, numbers: list[int]) -> list[int]:
        rows = await conn.fetch("SELECT x * 2 FROM unnest($1::int[]) AS x", numbers)
        return [r[0] for r in rows]

    lane: Lane[int, int] = Lane("gather", pool, double, gather_s=0.3)

    async def later(n: int) -> int:
        await asyncio.sleep(n * 0.005)  # one by one, as replies are confirmed
        return await lane.call(n)

    async with running(lane):
        assert await asyncio.gather(*(later(n) for n in range(10))) == list(range(0, 20, 2))
        assert lane.rounds == 1


async def test_submitted_requests_are_not_waited_for_and_failures_are_reported(
    pool: asyncpg.Pool,
) -> None:
    seen: list[int] = []

    async def parse(conn: Conn, texts: list[str]) -> list[None]:
        rows = await conn.fetch("SELECT x::int FROM unnest($1::text[]) AS x", texts)
        seen.extend(r[0] for r in rows)
        return [None] * len(texts)

    failed: list[str] = []
    lane: Lane[str, None] = Lane(
        "behind", pool, parse, gather_s=0.2, on_failed=lambda item, _exc: failed.append(item)
    )
    async with running(lane):
        for text in ("1", "oops", "3"):
            await lane.submit(text)
        assert seen == []  # queued: the callers went on
        await eventually(lambda: sorted(seen) == [1, 3] and failed == ["oops"])
        for text in ("4", "5"):
            await lane.submit(text)
        # leaving the block stops the lane before the round's time: it runs what is queued
    assert sorted(seen) == [1, 3, 4, 5]


async def test_a_wide_lane_runs_rounds_side_by_side_on_its_connections(
    pool: asyncpg.Pool,
) -> None:
    inside: list[int] = []  # the server pid of each round in progress
    release = asyncio.Event()

    async def hold(conn: Conn, items: list[int]) -> list[int]:
        inside.append(await conn.fetchval("SELECT pg_backend_pid()"))
        await release.wait()
        return items

    lane: Lane[int, int] = Lane("wide", pool, hold, width=2)
    async with running(lane):
        calls = [asyncio.create_task(lane.call(n)) for n in range(3)]
        await eventually(lambda: len(inside) == 2)
        assert len(set(inside)) == 2  # two rounds at once, each on its own connection
        await asyncio.sleep(0.05)
        assert len(inside) == 2  # the third waits for a connection
        release.set()
        assert await asyncio.gather(*calls) == [0, 1, 2]
        assert lane.rounds == 3 and len(inside) == 3
    with pytest.raises(ValueError, match="at least one connection"):
        Lane("none", pool, hold, width=0)


async def test_a_wide_lane_hands_back_a_connection_idle_while_its_queue_keeps_busy(
    pool: asyncpg.Pool,
) -> None:
    """Its other connections serve callers who found nothing queued: when the queue is
    never empty for long, they are idle, and go back to the pool all the same."""
    gate = asyncio.Event()

    async def slow(conn: Conn, items: list[int]) -> list[int]:
        await conn.execute("SELECT 1")
        if not gate.is_set():
            await gate.wait()
        await asyncio.sleep(0.005)
        return items

    def in_use() -> int:
        return pool.get_size() - pool.get_idle_size()

    lane: Lane[int, int] = Lane("busy", pool, slow, width=2, max_batch=1, linger_s=0.05)
    async with running(lane):
        both = [asyncio.create_task(lane.call(n)) for n in range(2)]
        await eventually(lambda: in_use() == 2)  # each call on a connection of its own
        gate.set()
        await asyncio.gather(*both)
        stop = asyncio.Event()

        async def keep_queued(n: int) -> None:  # four callers: a round takes one request,
            while not stop.is_set():  # so three stay queued and none finds the queue empty
                assert await lane.call(n) == n

        callers = [asyncio.create_task(keep_queued(n)) for n in range(4)]
        try:
            await eventually(lambda: in_use() == 1)  # the second is back in the pool
            rounds = lane.rounds
            await asyncio.sleep(0.1)
            assert lane.rounds > rounds and in_use() == 1  # the queue kept the first busy
        finally:
            stop.set()
            await asyncio.gather(*callers)


_FIND = "SELECT id FROM lane_plans WHERE id = ANY($1::bigint[])"


async def test_a_lane_plans_its_statements_again_as_the_tables_grow(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new installation: the table is empty when the lane first plans its statement
    (a scan), then fills up long before autovacuum analyzes it again."""
    plans: list[str] = []

    async def find(conn: Conn, ids: list[int]) -> list[bool]:
        found = {r[0] for r in await conn.fetch(_FIND, ids)}
        # the plan the connection keeps for that statement (the one just used)
        name = await conn.fetchval(
            "SELECT name FROM pg_prepared_statements WHERE statement = $1", _FIND
        )
        explained = await conn.fetch(f"EXPLAIN EXECUTE {name}('{{1}}')")
        plans.append("\n".join(r[0] for r in explained))
        return [i in found for i in ids]

    await pool.execute("CREATE TABLE lane_plans (id bigint PRIMARY KEY)")
    try:
        await pool.execute("ANALYZE lane_plans")
        lane: Lane[int, bool] = Lane("plans", pool, find, linger_s=3600)
        async with running(lane):
            monkeypatch.setattr(lanes, "REPLAN_S", 3600.0)
            assert await lane.call(1) is False
            assert "Seq Scan on lane_plans" in plans[-1]  # right for an empty table
            await pool.execute("INSERT INTO lane_plans SELECT generate_series(1, 100000)")
            assert await lane.call(2) is True
            assert "Seq Scan on lane_plans" in plans[-1]  # kept: now wrong
            monkeypatch.setattr(lanes, "REPLAN_S", 0.0)
            assert await lane.call(3) is True
            assert "Seq Scan" not in plans[-1] and "lane_plans_pkey" in plans[-1]
    finally:
        await pool.execute("DROP TABLE lane_plans")


async def test_requests_the_lane_took_are_not_left_waiting_when_it_stops(
    pool: asyncpg.Pool,
) -> None:
    release = asyncio.Event()
    entered: list[list[int]] = []

    async def hold(conn: Conn, items: list[int]) -> list[int]:
        entered.append(items)
        await release.wait()
        return items

    lane: Lane[int, int] = Lane("stopping", pool, hold)
    runner = asyncio.create_task(lane.run())
    leading = asyncio.create_task(lane.call(1))  # runs its own round: holds the connection
    await eventually(lambda: entered == [[1]])
    queued = asyncio.create_task(lane.call(2))  # queued; the lane's task takes it, waits

    def taken() -> bool:  # put, then got by the lane's task (which waits for the connection)
        return lane._queue._unfinished_tasks == 1 and lane._queue.empty()  # type: ignore[attr-defined]

    await eventually(taken)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await eventually(queued.done)  # cancelled, not waiting forever
    assert queued.cancelled()
    release.set()
    assert await leading == 1
