"""The Prometheus metrics the runtime exports (DESIGN 6.4), on the default registry.

* ``vibee_queue_depth{queue}`` — messages waiting in the mailboxes of the live actors with
  that ``queue`` label. It is computed at scrape time by :class:`QueueDepthCollector`, which
  sums ``qsize()`` over the mailboxes registered with :func:`track_mailbox`: nothing runs on
  the hot path, and 10,000 ``session:<id>`` actors sharing the label ``session`` are one
  series.
* ``vibee_mailbox_full_total{queue}`` — ``try_tell`` calls refused because the mailbox was
  full.
* ``vibee_actor_restarts_total{actor}`` — restarts performed by supervisors, labelled with
  the child's bounded label (``session`` for ``session:<id>``).
* ``vibee_circuit_state{breaker}`` — 0 closed, 1 half-open, 2 open.

Label values must come from a bounded set: never a user, chat or session id.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

__all__ = [
    "ACTOR_RESTARTS",
    "CIRCUIT_STATE",
    "MAILBOX_FULL",
    "QUEUE_DEPTH",
    "HasMailbox",
    "QueueDepthCollector",
    "track_mailbox",
    "untrack_mailbox",
]


class HasMailbox(Protocol):
    """Anything with a bounded label and a current mailbox depth (an actor)."""

    @property
    def queue_label(self) -> str:
        """The bounded ``queue`` label value."""
        ...

    def qsize(self) -> int:
        """Messages waiting in the mailbox now."""
        ...


class QueueDepthCollector:
    """``vibee_queue_depth{queue}``: per label, the sum of the tracked mailboxes' depths.

    Mailboxes are held weakly, so an actor that is dropped without being untracked
    disappears from the gauge on its own. Scrapes may come from another thread (the
    Prometheus HTTP server's): the set is guarded by a lock, taken only when an actor starts
    or stops and once per scrape, never per message.
    """

    name = "vibee_queue_depth"
    documentation = "Messages waiting in actor mailboxes, summed per queue label."

    def __init__(self) -> None:
        """An empty collector."""
        self._live: weakref.WeakSet[HasMailbox] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, mailbox: HasMailbox) -> None:
        """Start reporting ``mailbox``."""
        with self._lock:
            self._live.add(mailbox)

    def discard(self, mailbox: HasMailbox) -> None:
        """Stop reporting ``mailbox`` (no error when it was not tracked)."""
        with self._lock:
            self._live.discard(mailbox)

    def depths(self) -> dict[str, int]:
        """The current depth per label."""
        with self._lock:
            live = list(self._live)
        totals: dict[str, int] = {}
        for mailbox in live:
            label = mailbox.queue_label
            totals[label] = totals.get(label, 0) + mailbox.qsize()
        return totals

    def describe(self) -> Iterator[Metric]:
        """The metric family without samples (lets the registry skip a collect)."""
        yield GaugeMetricFamily(self.name, self.documentation, labels=["queue"])

    def collect(self) -> Iterator[Metric]:
        """The metric family with one sample per label."""
        family = GaugeMetricFamily(self.name, self.documentation, labels=["queue"])
        for label, depth in sorted(self.depths().items()):
            family.add_metric([label], depth)
        yield family


def _register(registry: CollectorRegistry) -> QueueDepthCollector:
    collector = QueueDepthCollector()
    registry.register(collector)
    return collector


QUEUE_DEPTH = _register(REGISTRY)
MAILBOX_FULL = Counter(
    "vibee_mailbox_full_total", "try_tell calls refused because the mailbox was full.", ["queue"]
)
ACTOR_RESTARTS = Counter(
    "vibee_actor_restarts_total", "Children restarted by their supervisor.", ["actor"]
)
CIRCUIT_STATE = Gauge(
    "vibee_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["breaker"]
)


def track_mailbox(mailbox: HasMailbox) -> None:
    """Include ``mailbox`` in ``vibee_queue_depth`` until :func:`untrack_mailbox`."""
    QUEUE_DEPTH.add(mailbox)


def untrack_mailbox(mailbox: HasMailbox) -> None:
    """Leave ``mailbox`` out of ``vibee_queue_depth`` from now on."""
    QUEUE_DEPTH.discard(mailbox)
