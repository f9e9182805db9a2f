"""Circuit breaker: fail fast while a dependency is down, probe it now and then.

Policy — consecutive failures, not a failure rate:

* **closed**: every call is allowed. A failure increments a counter, a success resets it;
  ``threshold`` (default 5) consecutive failures open the circuit.
* **open**: every call fails fast with :class:`CircuitOpenError` (no waiting for the
  dependency's own timeouts) until ``reset_timeout`` seconds have passed since it opened.
* **half-open**: the first call after the reset timeout finds the circuit half-open; at
  most ``half_open_max_calls`` probes are let through at a time, the others fail fast. A
  probe success closes the circuit, a probe failure opens it again for ``reset_timeout``.

Which outcomes count as failures is the caller's decision: ``call(fn, is_failure=...)``
(an exception for which ``is_failure`` is false — a 400, say — means the dependency
answered, which is a success), or ``guard()`` / ``allow()`` with :meth:`record_success`,
:meth:`record_failure` and :meth:`release` (outcome unknown, e.g. cancelled: frees a probe
slot and changes nothing). Outcomes of calls admitted in an earlier state count against the
current state. The transition to half-open happens lazily, on the first ``allow()`` (or
``state`` read) after the timeout. The state is exported as ``vibee_circuit_state{breaker}``
(0 closed, 1 half-open, 2 open). A breaker belongs to one event loop: it is not thread-safe.

Exceptions::

    BreakerError
     └── CircuitOpenError   the circuit is open (or half-open with every probe slot taken)
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from vibee.runtime import metrics

__all__ = ["BreakerError", "CircuitBreaker", "CircuitOpenError", "CircuitState"]

log = logging.getLogger("vibee.runtime")

T = TypeVar("T")


class BreakerError(Exception):
    """Base class of the circuit breaker errors."""


class CircuitOpenError(BreakerError):
    """The call was refused without being tried. ``retry_after``: seconds until a probe may
    be let through (0 when half-open and every probe slot is taken)."""

    def __init__(self, breaker: str, retry_after: float) -> None:
        """Refused by breaker ``breaker``; a probe may pass in ``retry_after`` s."""
        super().__init__(f"circuit {breaker!r} is open")
        self.breaker = breaker
        self.retry_after: float | None = retry_after


class CircuitState(enum.IntEnum):
    """The breaker's state; the value is the ``vibee_circuit_state`` sample."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def _always(_: BaseException) -> bool:
    return True


class CircuitBreaker:
    """A consecutive-failures circuit breaker named ``name`` (the metric label)."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        export: bool = True,
    ) -> None:
        """Open after ``threshold`` consecutive failures; probe after ``reset_timeout`` s."""
        if threshold < 1 or half_open_max_calls < 1 or reset_timeout < 0:
            raise ValueError("threshold and half_open_max_calls must be >= 1, reset_timeout >= 0")
        self.name = name
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        # one series per breaker: pass export=False for breakers there are unboundedly many
        # of (one per Telegram session), whose names would be ids in a label
        self._gauge = metrics.CIRCUIT_STATE.labels(name) if export else None
        if self._gauge is not None:
            self._gauge.set(CircuitState.CLOSED)

    @property
    def state(self) -> CircuitState:
        """The current state (entering half-open if the reset timeout has passed)."""
        if self._state is CircuitState.OPEN and self._reset_due():
            self._enter(CircuitState.HALF_OPEN)
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def allow(self) -> bool:
        """May a call go through now? In half-open, True reserves a probe slot: report its
        outcome with :meth:`record_success`, :meth:`record_failure` or :meth:`release`."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and self._probes < self.half_open_max_calls:
            self._probes += 1
            return True
        return False

    def check(self) -> None:
        """:meth:`allow` or raise :class:`CircuitOpenError`."""
        if not self.allow():
            raise CircuitOpenError(self.name, self.retry_after())

    def retry_after(self) -> float:
        """Seconds until the circuit lets a probe through (0 when it would now)."""
        if self._state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout - self._clock())
        return 0.0

    def record_success(self) -> None:
        """A call succeeded: reset the failure count; a success while half-open closes."""
        if self._state is CircuitState.HALF_OPEN:
            self._enter(CircuitState.CLOSED)
        elif self._state is CircuitState.CLOSED:
            self._failures = 0

    def record_failure(self) -> None:
        """A call failed: count it; the threshold (closed) or any failure (half-open) opens."""
        if self._state is CircuitState.CLOSED:
            self._failures += 1
            if self._failures >= self.threshold:
                self._enter(CircuitState.OPEN)
        elif self._state is CircuitState.HALF_OPEN:
            self._enter(CircuitState.OPEN)

    def release(self) -> None:
        """A call ended without an outcome (cancelled): free its probe slot, if it had one."""
        if self._state is CircuitState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_failure: Callable[[BaseException], bool] = _always,
    ) -> T:
        """Await ``fn()`` through the breaker; raises :class:`CircuitOpenError` when open."""
        with self.guard(is_failure=is_failure):
            return await fn()

    def guard(self, *, is_failure: Callable[[BaseException], bool] = _always) -> Guard:
        """A context manager: checks on entry, records the outcome of its block on exit."""
        return Guard(self, is_failure)

    def _reset_due(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout

    def _enter(self, state: CircuitState) -> None:
        previous = self._state
        self._state = state
        self._probes = 0
        if state is CircuitState.OPEN:
            self._opened_at = self._clock()
        elif state is CircuitState.CLOSED:
            self._failures = 0
        if self._gauge is not None:
            self._gauge.set(state)
        if state is not previous:
            level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
            log.log(
                level,
                "circuit %s",
                state.name.lower().replace("_", "-"),
                extra={"breaker": self.name, "from_state": previous.name.lower()},
            )


class Guard:
    """``with breaker.guard(): ...`` — see :meth:`CircuitBreaker.guard`."""

    __slots__ = ("_breaker", "_is_failure")

    def __init__(
        self, breaker: CircuitBreaker, is_failure: Callable[[BaseException], bool]
    ) -> None:
        """Guard one call through ``breaker``."""
        self._breaker = breaker
        self._is_failure = is_failure

    def __enter__(self) -> CircuitBreaker:
        """Raise :class:`CircuitOpenError` unless the call is allowed."""
        self._breaker.check()
        return self._breaker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the block's outcome; never suppresses its exception."""
        if exc is None:
            self._breaker.record_success()
        elif not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt: no outcome
            self._breaker.release()
        elif self._is_failure(exc):
            self._breaker.record_failure()
        else:
            self._breaker.record_success()
