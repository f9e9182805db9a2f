"""Circuit breaker: a hypothesis state machine against a simple model, plus the call API."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from prometheus_client import REGISTRY

from vibee.runtime import CircuitBreaker, CircuitOpenError, CircuitState


class Model:
    """The documented policy, written as plainly as possible."""

    def __init__(self, threshold: int, reset_timeout: float, probes: int) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self.max_probes = probes
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.probes = 0

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened_at >= self.reset_timeout:
            self.state, self.probes = "half-open", 0

    def allow(self, now: float) -> bool:
        self.tick(now)
        if self.state == "closed":
            return True
        if self.state == "half-open" and self.probes < self.max_probes:
            self.probes += 1
            return True
        return False

    def success(self) -> None:
        if self.state in ("closed", "half-open"):
            self.state, self.failures = "closed", 0

    def failure(self, now: float) -> None:
        if self.state == "closed":
            self.failures += 1
            if self.failures >= self.threshold:
                self.state, self.opened_at = "open", now
        elif self.state == "half-open":
            self.state, self.opened_at, self.probes = "open", now, 0

    def release(self) -> None:
        if self.state == "half-open" and self.probes > 0:
            self.probes -= 1


STATES = {
    "closed": CircuitState.CLOSED,
    "half-open": CircuitState.HALF_OPEN,
    "open": CircuitState.OPEN,
}


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of calls, outcomes and clock jumps: breaker and model agree."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    @initialize(
        threshold=st.integers(1, 5),
        reset_timeout=st.sampled_from([0.0, 1.0, 10.0]),
        probes=st.integers(1, 3),
    )
    def setup(self, threshold: int, reset_timeout: float, probes: int) -> None:
        self.name = "test_state_machine"  # one label: a new one per example would pile up
        self.breaker = CircuitBreaker(
            self.name,
            threshold=threshold,
            reset_timeout=reset_timeout,
            half_open_max_calls=probes,
            clock=lambda: self.now,
        )
        self.model = Model(threshold, reset_timeout, probes)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 30.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def allow(self) -> None:
        assert self.breaker.allow() == self.model.allow(self.now)

    @rule()
    def success(self) -> None:
        self.breaker.record_success()
        self.model.success()

    @rule()
    def failure(self) -> None:
        self.breaker.record_failure()
        self.model.failure(self.now)

    @rule()
    def release(self) -> None:
        self.breaker.release()
        self.model.release()

    @rule(fails=st.booleans(), counts=st.booleans())
    def guarded_call(self, fails: bool, counts: bool) -> None:
        """A whole call through guard(): fail fast when refused, else record the outcome."""
        allowed = self.model.allow(self.now)
        ran = False
        try:
            with self.breaker.guard(is_failure=lambda _: counts):
                ran = True
                if fails:
                    raise ValueError("boom")
        except CircuitOpenError:
            assert not allowed
        except ValueError:
            assert allowed and fails
        else:
            assert allowed and not fails
        assert ran == allowed
        if allowed and fails and counts:
            self.model.failure(self.now)
        elif allowed:
            self.model.success()  # no error, or an error the caller says does not count

    @invariant()
    def same_state(self) -> None:
        self.model.tick(self.now)
        assert self.breaker.state is STATES[self.model.state]
        value = REGISTRY.get_sample_value("vibee_circuit_state", {"breaker": self.name})
        assert value == STATES[self.model.state].value
        if self.model.state == "closed":
            assert self.breaker.failures == self.model.failures


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestBreaker = BreakerMachine.TestCase


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """The state, read through a call (mypy would otherwise narrow ``breaker.state``)."""
    return breaker.state


def test_default_opens_after_five_consecutive_failures_and_probes_once() -> None:
    now = [0.0]
    breaker = CircuitBreaker("unit_default", clock=lambda: now[0], reset_timeout=30)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()  # not consecutive any more
    for _ in range(4):
        breaker.record_failure()
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as refused:
        breaker.check()
    assert refused.value.retry_after == 30
    now[0] = 30.0
    assert breaker.allow() is True  # the probe
    assert breaker.allow() is False  # only one at a time
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED


async def test_call_fails_fast_when_open_and_lets_the_caller_classify_errors() -> None:
    now = [0.0]
    breaker = CircuitBreaker("unit_call", threshold=2, clock=lambda: now[0])
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        raise KeyError("not found")

    for _ in range(5):  # KeyError is the dependency answering: not a failure
        with pytest.raises(KeyError):
            await breaker.call(flaky, is_failure=lambda e: not isinstance(e, KeyError))
    assert state_of(breaker) is CircuitState.CLOSED
    for _ in range(2):
        with pytest.raises(KeyError):
            await breaker.call(flaky)
    assert state_of(breaker) is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(flaky)
    assert calls == 7  # the refused call never ran


async def test_a_cancelled_probe_frees_its_slot() -> None:
    now = [0.0]
    breaker = CircuitBreaker("unit_cancel", threshold=1, reset_timeout=1, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 1.0

    async def hang() -> None:
        await asyncio.Event().wait()

    probe = asyncio.create_task(breaker.call(hang))
    await asyncio.sleep(0)
    assert breaker.allow() is False  # the slot is taken by the hanging probe
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert breaker.allow() is True
