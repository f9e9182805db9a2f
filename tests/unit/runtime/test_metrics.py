"""The runtime's metrics, as a Prometheus scrape shows them."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vibee.runtime import (
    Actor,
    ChildSpec,
    CircuitBreaker,
    CircuitState,
    RestartPolicy,
    Supervisor,
)

from .helpers import crash, eventually, no_new_tasks, worker


def scrape(name: str, **labels: str) -> float | None:
    """The value of sample ``name{labels}`` in a full text scrape (None if absent)."""
    text = generate_latest().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class Stuck(Actor[int, None]):
    def __init__(self, name: str, label: str) -> None:
        super().__init__(name, mailbox_size=4, queue_label=label)
        self.gate = asyncio.Event()

    async def handle(self, message: int) -> None:
        await self.gate.wait()


async def test_queue_depth_is_summed_per_label_at_scrape_time() -> None:
    async with no_new_tasks():
        actors = [Stuck(f"session:{i}", "test_sessions") for i in range(3)]
        for actor in actors:
            await actor.start()
        for n, actor in enumerate(actors):
            for m in range(n + 1):  # 1 + 2 + 3 messages, one of each being handled
                await actor.tell(m)
        await eventually(lambda: sum(a.qsize() for a in actors) == 3)
        assert scrape("vibee_queue_depth", queue="test_sessions") == 3
        assert scrape("vibee_queue_depth", queue="session:0") is None  # bounded labels

        assert all(actors[0].try_tell(m) for m in range(4))  # mailbox of 4, now full
        assert not actors[0].try_tell(4)
        assert not actors[0].try_tell(5)
        assert scrape("vibee_queue_depth", queue="test_sessions") == 7
        assert scrape("vibee_mailbox_full_total", queue="test_sessions") == 2

        for actor in actors:
            actor.gate.set()
            await actor.stop(1.0)
        assert scrape("vibee_queue_depth", queue="test_sessions") is None  # stopped: gone


async def test_restarts_are_counted_under_the_bounded_label() -> None:
    journal: list[str] = []
    label = {"actor": "test_restarts"}
    before = scrape("vibee_actor_restarts_total", **label) or 0.0
    async with no_new_tasks():
        sup = Supervisor(
            "root",
            [ChildSpec("test_restarts:42", worker("test_restarts:42", journal))],
            policy=RestartPolicy(backoff_base=0.0),
        )
        await sup.start()
        await crash(sup, "test_restarts:42")
        await crash(sup, "test_restarts:42")
        await sup.stop()
    assert scrape("vibee_actor_restarts_total", **label) == before + 2


def test_circuit_state_is_exported() -> None:
    now = [0.0]
    breaker = CircuitBreaker("test_metrics", threshold=1, reset_timeout=5, clock=lambda: now[0])
    assert scrape("vibee_circuit_state", breaker="test_metrics") == 0
    breaker.record_failure()
    assert scrape("vibee_circuit_state", breaker="test_metrics") == 2
    now[0] = 5.0
    assert breaker.state is CircuitState.HALF_OPEN
    assert scrape("vibee_circuit_state", breaker="test_metrics") == 1
