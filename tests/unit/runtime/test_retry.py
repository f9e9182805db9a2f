"""retry(): attempts, jitter, permanent errors, retry-after, deadline (fake sleep and clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vibee.runtime import CircuitOpenError, RetryPolicy, retry


class Transient(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("transient")
        self.retry_after = retry_after


class Permanent(Exception):
    pass


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        assert delay >= 0
        self.sleeps.append(delay)
        self.now += delay


def failing(
    errors: Sequence[BaseException], result: str = "ok"
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, fn


async def test_retries_with_full_jitter_until_success() -> None:
    fake = FakeTime()
    calls, fn = failing([Transient(), Transient()])
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0)
    seen: list[tuple[int, float]] = []
    result = await retry(
        fn,
        policy,
        sleep=fake.sleep,
        rand=lambda: 0.5,
        clock=fake.clock,
        on_retry=lambda attempt, _exc, delay: seen.append((attempt, delay)),
    )
    assert result == "ok"
    assert len(calls) == 3
    assert fake.sleeps == [0.5, 1.0]  # 0.5 × 1 s, 0.5 × 2 s
    assert seen == [(1, 0.5), (2, 1.0)]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fake = FakeTime()
    last = Transient()
    calls, fn = failing([Transient(), Transient(), last, Transient()])
    with pytest.raises(Transient) as error:
        await retry(fn, RetryPolicy(max_attempts=3), sleep=fake.sleep, clock=fake.clock)
    assert error.value is last
    assert len(calls) == 3
    assert "gave up after 3 attempts" in str(error.value.__notes__)


async def test_the_delay_is_capped() -> None:
    fake = FakeTime()
    _, fn = failing([Transient()] * 6)
    policy = RetryPolicy(max_attempts=7, base_delay=1.0, max_delay=4.0)
    await retry(fn, policy, sleep=fake.sleep, rand=lambda: 1.0, clock=fake.clock)
    assert fake.sleeps == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


async def test_permanent_errors_are_not_retried() -> None:
    fake = FakeTime()
    calls, fn = failing([Permanent()])
    policy = RetryPolicy(max_attempts=5, permanent=lambda e: isinstance(e, Permanent))
    with pytest.raises(Permanent):
        await retry(fn, policy, sleep=fake.sleep, clock=fake.clock)
    assert len(calls) == 1 and fake.sleeps == []


@pytest.mark.parametrize("error", [asyncio.CancelledError(), KeyboardInterrupt()])
async def test_base_exceptions_propagate_at_once(error: BaseException) -> None:
    fake = FakeTime()
    calls, fn = failing([error])
    with pytest.raises(type(error)):
        await retry(fn, RetryPolicy(max_attempts=5), sleep=fake.sleep, clock=fake.clock)
    assert len(calls) == 1


async def test_retry_after_is_honoured_even_beyond_max_delay() -> None:
    fake = FakeTime()
    _, fn = failing([Transient(retry_after=7.0), CircuitOpenError("b", retry_after=2.5)])
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0)
    assert await retry(fn, policy, sleep=fake.sleep, rand=lambda: 0.0, clock=fake.clock) == "ok"
    assert fake.sleeps == [7.0, 2.5]


async def test_never_sleeps_past_the_deadline() -> None:
    fake = FakeTime()
    calls, fn = failing([Transient()] * 10)
    policy = RetryPolicy(max_attempts=10, base_delay=0.4, max_delay=10.0, deadline=1.0)
    with pytest.raises(Transient) as error:
        await retry(fn, policy, sleep=fake.sleep, rand=lambda: 1.0, clock=fake.clock)
    assert fake.sleeps == [0.4, pytest.approx(0.6)]  # the 2nd delay (0.8) was cut to what was left
    assert len(calls) == 3
    assert "deadline" in str(error.value.__notes__)


async def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    fake = FakeTime()
    calls, fn = failing([Transient(retry_after=30.0)])
    with pytest.raises(Transient):
        await retry(
            fn, RetryPolicy(max_attempts=5, deadline=10.0), sleep=fake.sleep, clock=fake.clock
        )
    assert len(calls) == 1 and fake.sleeps == []


@given(
    attempts=st.integers(1, 8),
    base=st.floats(0.0, 5.0),
    deadline=st.floats(0.0, 20.0),
    rand=st.floats(0.0, 1.0),
    hints=st.lists(st.one_of(st.none(), st.floats(0.0, 10.0)), min_size=8, max_size=8),
)
def test_attempts_and_total_sleep_stay_within_the_policy(
    attempts: int, base: float, deadline: float, rand: float, hints: list[float | None]
) -> None:
    fake = FakeTime()
    calls, fn = failing([Transient(h) for h in hints])
    policy = RetryPolicy(max_attempts=attempts, base_delay=base, max_delay=8.0, deadline=deadline)
    with pytest.raises(Transient):
        asyncio.run(retry(fn, policy, sleep=fake.sleep, rand=lambda: rand, clock=fake.clock))
    assert len(calls) <= attempts
    assert sum(fake.sleeps) <= deadline + 1e-9
    assert len(fake.sleeps) == len(calls) - 1
