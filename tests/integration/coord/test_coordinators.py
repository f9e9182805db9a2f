"""One contract for the local and the Redis coordinators (a real redis-server process)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from vibee.coord.base import Cache, RateLimiter
from vibee.coord.local import LocalCache, LocalRateLimiter
from vibee.coord.redis import RedisCache, RedisRateLimiter

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, on a free port (tests may kill it)."""
    if REDIS is None:
        pytest.skip("redis-server is not installed (Debian package 'redis-server')")
    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        proc.poll()
        if proc.returncode is not None:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    yield port, proc
    proc.kill()
    proc.wait()


def connect(port: int) -> Redis:
    return Redis(host="127.0.0.1", port=port, max_connections=512)


@pytest.fixture
async def client(redis_server: tuple[int, subprocess.Popen[bytes]]) -> AsyncIterator[Redis]:
    connection = connect(redis_server[0])
    yield connection
    await connection.aclose()


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "local":
        yield LocalRateLimiter()
        return
    connection = connect(request.getfixturevalue("redis_server")[0])
    yield RedisRateLimiter(connection)
    await connection.aclose()


@pytest.fixture(params=["local", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "local":
        yield LocalCache(100)
        return
    connection = connect(request.getfixturevalue("redis_server")[0])
    yield RedisCache(connection)
    await connection.aclose()


async def test_a_burst_of_limit_then_refused_without_being_counted(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("user:1", 5, 60.0) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    refused = await limiter.hit("user:1", 5, 60.0)
    assert not refused.allowed and refused.remaining == 0
    assert 10.0 < refused.retry_after_s <= 12.0  # one hit replenishes every 12 s
    again = await limiter.hit("user:1", 5, 60.0)
    assert not again.allowed and again.retry_after_s <= refused.retry_after_s
    other = await limiter.hit("user:2", 5, 60.0)
    assert other.allowed and other.remaining == 4


async def test_cost_counts_several_hits(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", 10, 10.0, cost=7)).remaining == 3
    assert not (await limiter.hit("k", 10, 10.0, cost=4)).allowed
    assert (await limiter.hit("k", 10, 10.0, cost=3)).allowed
    with pytest.raises(ValueError):
        await limiter.hit("k", 0, 10.0)


async def test_cache_round_trip_and_expiry(cache: Cache) -> None:
    assert await cache.get("a") is None
    await cache.set("a", b"\x00value", 60)
    assert await cache.get("a") == b"\x00value"
    await cache.set("b", b"gone", 0)
    assert await cache.get("b") is None
    await cache.set("c", b"short", 0.001)
    await asyncio.sleep(0.1)
    assert await cache.get("c") is None


async def test_the_limit_holds_across_instances(
    client: Redis, redis_server: tuple[int, object]
) -> None:
    other = connect(redis_server[0])
    try:
        one, two = RedisRateLimiter(client), RedisRateLimiter(other)
        results = await asyncio.gather(
            *(limiter.hit("shared", 100, 60.0) for limiter in [one, two] * 150)
        )
        assert sum(d.allowed for d in results) == 100
    finally:
        await other.aclose()


async def test_redis_down_is_an_error_not_an_allowance(
    client: Redis, redis_server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    limiter = RedisRateLimiter(client)
    assert (await limiter.hit("x", 1, 60.0)).allowed
    redis_server[1].kill()
    redis_server[1].wait()
    with pytest.raises(RedisConnectionError):
        await limiter.hit("x", 1, 60.0)
