"""Session leases, membership, placement and the bus against a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter

import pytest
from redis.asyncio import Redis

from tests.integration.cluster.harness import RedisProcess
from tests.integration.coord.test_coordinators import client, connect, redis_server
from vibee.config import RedisConfig
from vibee.coord.base import CoordinationUnavailable, Lease
from vibee.coord.bus import Message, RedisBus
from vibee.coord.coordinator import Coordinator
from vibee.coord.leases import LocalLeases, RedisLeases
from vibee.coord.membership import RedisMembership, place

__all__ = ["client", "redis_server"]  # fixtures used below

LEASE_S = 0.4


async def past_grace(client: Redis) -> None:
    """A fresh Redis refuses leases for one lease time: let that pass."""
    leases = RedisLeases(client, "probe", LEASE_S, "t")
    assert await leases.acquire(1, 0) is None  # the grace period of a Redis born just now
    await asyncio.sleep(LEASE_S + 0.05)


async def test_one_holder_at_a_time_and_epochs_only_grow(client: Redis) -> None:
    await past_grace(client)
    a, b = RedisLeases(client, "a", LEASE_S, "t"), RedisLeases(client, "b", LEASE_S, "t")
    first = await a.acquire(7, 0)
    assert first is not None and first.epoch == 1
    assert await b.acquire(7, 0) is None
    assert await b.renew([first]) == [True]  # renewing is by token, not by instance
    await asyncio.sleep(LEASE_S + 0.1)  # not renewed: expired
    second = await b.acquire(7, 0)
    assert second is not None and second.epoch == 2
    assert await a.renew([first]) == [False]  # the old holder learns it lost it
    third_floor = await a.acquire(8, 41)  # Postgres saw epoch 41: the counter jumps past it
    assert third_floor is not None and third_floor.epoch == 42


async def test_renewal_keeps_it_and_release_hands_it_over(client: Redis) -> None:
    await past_grace(client)
    a, b = RedisLeases(client, "a", LEASE_S, "t"), RedisLeases(client, "b", LEASE_S, "t")
    lease = await a.acquire(1, 0)
    assert lease is not None
    for _ in range(4):
        await asyncio.sleep(LEASE_S / 3)
        assert await a.renew([lease]) == [True]
    assert await b.acquire(1, 0) is None
    assert await a.holder(1) == "a"
    await b.release([Lease(1, lease.epoch, "b/1")])  # not b's token: nothing happens
    assert await b.acquire(1, 0) is None
    await a.release([lease])
    assert await b.acquire(1, 0) is not None


async def test_redis_restarted_empty_refuses_new_holders_for_one_lease(
    client: Redis, redis_server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    await past_grace(client)
    a, b = RedisLeases(client, "a", LEASE_S, "t"), RedisLeases(client, "b", LEASE_S, "t")
    held = await a.acquire(3, 0)
    assert held is not None
    await client.flushall()  # what a restart without persistence leaves
    assert await b.acquire(3, held.epoch) is None  # a may still be connected: wait
    assert await a.renew([held]) == [True]  # the holder writes its key again
    for _ in range(3):  # past the grace period, a renewing as it does
        await asyncio.sleep(LEASE_S / 3)
        assert await a.renew([held]) == [True]
    assert await b.acquire(3, held.epoch) is None  # grace over, but a holds it


async def test_unreachable_redis_is_coordination_unavailable(
    client: Redis, redis_server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    leases = RedisLeases(client, "a", LEASE_S, "t")
    members = RedisMembership(client, "a", LEASE_S, "t")
    redis_server[1].kill()
    redis_server[1].wait()
    with pytest.raises(CoordinationUnavailable):
        await leases.acquire(1, 0)
    with pytest.raises(CoordinationUnavailable):
        await members.heartbeat()


async def test_members_come_and_go(client: Redis) -> None:
    a, b = RedisMembership(client, "a", LEASE_S, "t"), RedisMembership(client, "b", LEASE_S, "t")
    assert await a.heartbeat() == ["a"]
    assert await b.heartbeat() == ["a", "b"]
    await b.leave()
    assert await a.heartbeat() == ["a"]
    await b.heartbeat()
    await asyncio.sleep(LEASE_S + 0.05)  # b was killed: its heartbeat expires
    assert await a.heartbeat() == ["a"]


async def test_local_leases_are_always_granted_above_the_floor() -> None:
    leases = LocalLeases("only")
    lease = await leases.acquire(5, 9)
    assert lease.epoch == 10
    assert await leases.renew([lease]) == [True]


def test_placement_is_balanced_capped_and_moves_only_what_it_must() -> None:
    sessions = range(1, 3001)
    three = place(sessions, ["a", "b", "c"], capacity=5000)
    load = Counter(three.values())
    assert set(load) == {"a", "b", "c"} and min(load.values()) > 850
    two = place(sessions, ["a", "c"], capacity=5000)
    moved = [s for s in sessions if three[s] != two[s]]
    assert all(three[s] == "b" for s in moved)  # only b's sessions moved
    assert place(sessions, ["c", "a"], capacity=5000) == two  # order of members is irrelevant
    capped = place(sessions, ["a", "b"], capacity=1000)
    assert len(capped) == 2000 and max(Counter(capped.values()).values()) == 1000


async def test_the_bus_reaches_one_instance_or_all(
    client: Redis, redis_server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    got: dict[str, list[Message]] = {"a": [], "b": [], "c": []}
    clients = [connect(redis_server[0]) for _ in range(3)]
    buses = {name: RedisBus(c, name, "t") for name, c in zip(("a", "b", "c"), clients, strict=True)}
    for name, bus in buses.items():
        bus.on_message(got[name].append)
    tasks = [asyncio.create_task(bus.run()) for bus in buses.values()]
    try:
        for bus in buses.values():
            await asyncio.wait_for(bus.subscribed.wait(), 5)
        for messages in got.values():
            messages.clear()  # the resync notices of the first subscription
        assert await buses["a"].send("b", {"t": "chat", "s": 1, "c": 2})
        assert await buses["a"].send(None, {"t": "sessions"})
        for _ in range(100):
            if len(got["b"]) == 2 and got["c"]:
                break
            await asyncio.sleep(0.02)
        assert got["b"] == [{"t": "chat", "s": 1, "c": 2}, {"t": "sessions"}]
        assert got["c"] == [{"t": "sessions"}]
        assert got["a"] == [{"t": "sessions"}]  # handled at once by the sender, not twice
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.aclose()


async def test_the_coordinator_logs_in_with_the_redis_password() -> None:
    redis = RedisProcess("--requirepass", "s3cret-pw")
    try:
        url = f"redis://127.0.0.1:{redis.port}/0"
        right = Coordinator.from_config(RedisConfig(url=url), password="s3cret-pw")
        wrong = Coordinator.from_config(RedisConfig(url=url))
        await right.heartbeat()
        await wrong.heartbeat()
        assert right.up and right.members == [right.instance_id]
        assert not wrong.up  # refused: no password
        await right.close()
        await wrong.close()
    finally:
        redis.kill()
