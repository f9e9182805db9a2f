"""The runtime: actors, supervisors, circuit breaker, retry, systemd notify, signals.

A small library of its own: it knows nothing of Telegram, AI, configuration or databases.
"""

from vibee.runtime.actor import Actor, ActorError, ActorStopped, Service
from vibee.runtime.breaker import BreakerError, CircuitBreaker, CircuitOpenError, CircuitState
from vibee.runtime.retry import RetryPolicy, retry
from vibee.runtime.signals import ShutdownSignals
from vibee.runtime.supervisor import (
    Child,
    ChildSpec,
    ChildStartError,
    DuplicateChildError,
    NoSuchChild,
    Restart,
    RestartPolicy,
    Strategy,
    Supervisor,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorNotRunning,
)
from vibee.runtime.systemd import Notifier, run_watchdog, watchdog_interval

__all__ = [
    "Actor",
    "ActorError",
    "ActorStopped",
    "BreakerError",
    "Child",
    "ChildSpec",
    "ChildStartError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "DuplicateChildError",
    "NoSuchChild",
    "Notifier",
    "Restart",
    "RestartPolicy",
    "RetryPolicy",
    "Service",
    "ShutdownSignals",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
    "retry",
    "run_watchdog",
    "watchdog_interval",
]
