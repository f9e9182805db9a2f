"""The in-process GCRA rate limiter, on a clock the test moves."""

from __future__ import annotations

import pytest

from vibee.coord.base import RateLimiter
from vibee.coord.local import LocalRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_of_limit_then_one_per_interval() -> None:
    clock = Clock()
    limiter: RateLimiter = LocalRateLimiter(clock=clock)
    decisions = [await limiter.hit("k", 3, 60) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert decisions[-1].reset_s == pytest.approx(60)
    refused = await limiter.hit("k", 3, 60)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(20)  # one emission interval
    clock.now += 19.9
    assert not (await limiter.hit("k", 3, 60)).allowed
    clock.now += 0.1
    again = await limiter.hit("k", 3, 60)
    assert again.allowed and again.remaining == 0
    clock.now += 60
    assert (await limiter.hit("k", 3, 60)).remaining == 2  # fully replenished


async def test_refused_hits_are_not_counted() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    for _ in range(2):
        await limiter.hit("k", 2, 10)
    for _ in range(50):
        assert not (await limiter.hit("k", 2, 10)).allowed
    clock.now += 5
    assert (await limiter.hit("k", 2, 10)).allowed


async def test_keys_are_independent_and_cost_counts() -> None:
    limiter = LocalRateLimiter(clock=Clock())
    assert (await limiter.hit("a", 5, 60, cost=5)).remaining == 0
    assert not (await limiter.hit("a", 5, 60)).allowed
    assert (await limiter.hit("b", 5, 60)).remaining == 4
    assert not (await limiter.hit("c", 5, 60, cost=6)).allowed


async def test_the_number_of_keys_is_bounded() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(max_keys=100, clock=clock)
    for i in range(1000):
        await limiter.hit(f"ip:{i}", 10, 60)
    assert len(limiter) <= 100
    clock.now += 61  # every key replenished: a sweep frees them all
    await limiter.hit("new", 10, 60)
    assert len(limiter) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        LocalRateLimiter(max_keys=0)
    with pytest.raises(ValueError, match="limit"):
        LocalRateLimiter().hit_now("k", 0, 60)
