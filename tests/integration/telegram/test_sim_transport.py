"""SimGateway's shared transport: multiplexing, drops, backpressure, a restarted sim."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from tests.integration.telegram.world import (
    AccountRef,
    SimWorld,
    next_events,
    sim_process,
)
from vibee.sim.telegram_client import transport_for
from vibee.sim.telegram_wire import MAX_WINDOW
from vibee.telegram.gateway import (
    AuthKeyDuplicated,
    AuthKeyUnregistered,
    Disconnected,
    Event,
    LoggedOut,
    NetworkError,
    NewMessage,
    Reconnected,
)
from vibee.telegram.sim_gateway import SimGateway


async def _online(world: SimWorld, n: int, **kwargs: int) -> list[tuple[AccountRef, SimGateway]]:
    pairs = []
    for _ in range(n):
        account = await world.account()
        pairs.append((account, SimGateway(world.url, account.credential, **kwargs)))
    await asyncio.gather(*(gateway.connect() for _, gateway in pairs))
    return pairs


async def _disconnect_all(pairs: list[tuple[AccountRef, SimGateway]]) -> None:
    await asyncio.gather(*(gateway.disconnect() for _, gateway in pairs))


async def test_gateways_share_one_transport_and_it_closes_after_the_last(
    sim_world: SimWorld,
) -> None:
    pairs = await _online(sim_world, 30)
    transport = transport_for(sim_world.url)
    try:
        assert transport.opened == 1 and transport.is_open
        infos = [await sim_world.info(account) for account, _ in pairs]
        assert all(info["connections"] == 1 for info in infos)
    finally:
        await _disconnect_all(pairs)
    assert not transport.is_open
    assert transport_for(sim_world.url) is not transport
    for account, _ in pairs:
        assert (await sim_world.info(account))["connections"] == 0


async def test_dropped_transport_every_gateway_resumes_without_loss(sim_world: SimWorld) -> None:
    pairs = await _online(sim_world, 20)
    peer, _ = await sim_world.user()
    chats = [await sim_world.chat("private", [a.user_id, peer]) for a, _ in pairs]
    streams = [aiter(gateway.events()) for _, gateway in pairs]
    try:
        await sim_world.request("POST", "/faults/drop_all", {})
        for chat in chats:
            await sim_world.inject(chat, peer, "while the transport was down")
        for stream in streams:
            seen: list[Event] = []
            while not any(isinstance(e, NewMessage) for e in seen):
                seen += await next_events(stream, 1)
            kinds = [type(e) for e in seen]
            assert kinds == [Disconnected, Reconnected, NewMessage], kinds
        assert transport_for(sim_world.url).opened == 2
    finally:
        await _disconnect_all(pairs)


async def test_a_consumer_that_stops_reading_holds_back_only_its_account(
    sim_world: SimWorld,
) -> None:
    (slow_account, slow), (fast_account, fast) = await _online(sim_world, 2, window=4)
    peer, _ = await sim_world.user()
    slow_chat = await sim_world.chat("private", [slow_account.user_id, peer])
    fast_chat = await sim_world.chat("private", [fast_account.user_id, peer])
    try:
        for i in range(50):
            await sim_world.inject(slow_chat, peer, f"slow {i}")
            await sim_world.inject(fast_chat, peer, f"fast {i}")
        fast_got = await next_events(aiter(fast.events()), 50)
        assert [e.text for e in fast_got if isinstance(e, NewMessage)] == [
            f"fast {i}" for i in range(50)
        ]
        await slow.me()  # a round trip: whatever the sim would send has been sent
        info = await sim_world.info(slow_account)
        assert info["seq"] == 50 and info["cursors"] == [4]
        slow_got = await next_events(aiter(slow.events()), 50)
        assert [e.text for e in slow_got if isinstance(e, NewMessage)] == [
            f"slow {i}" for i in range(50)
        ]
        assert (await sim_world.info(slow_account))["cursors"] == [50]
    finally:
        await slow.disconnect()
        await fast.disconnect()


async def test_an_unknown_credential_is_unregistered(sim_world: SimWorld) -> None:
    gateway = SimGateway(sim_world.url, os.urandom(32))
    with pytest.raises(AuthKeyUnregistered):
        await gateway.connect()
    assert not transport_for(sim_world.url).is_open


async def test_an_unreachable_sim_is_a_network_error() -> None:
    with sim_process() as (url, proc):
        proc.kill()
        proc.wait()
    gateway = SimGateway(url, None, connect_timeout=0.3)
    with pytest.raises(NetworkError):
        await gateway.connect()


async def test_a_restarted_sim_forgot_the_key_so_the_gateway_logs_out() -> None:
    with sim_process() as (url, proc):
        async with aiohttp.ClientSession() as http:
            account = await SimWorld(url, http).account()
        gateway = SimGateway(url, account.credential)
        await gateway.connect()
        events = aiter(gateway.events())
        try:
            proc.kill()
            proc.wait()
            (lost,) = await next_events(events, 1)
            assert isinstance(lost, Disconnected)
            port = int(url.rsplit(":", 1)[1])
            with sim_process(port) as (new_url, _):
                assert new_url == url
                (dead,) = await next_events(events, 1, timeout=30)
                assert isinstance(dead, LoggedOut)
                assert isinstance(dead.error, AuthKeyUnregistered)
        finally:
            await gateway.disconnect()


async def test_a_burst_past_the_sims_outbox_high_water_mark_arrives_whole(
    sim_world: SimWorld,
) -> None:
    (account, gateway), (other_account, other) = await _online(sim_world, 2, window=MAX_WINDOW)
    peer, _ = await sim_world.user()
    group = await sim_world.chat("group", [account.user_id, other_account.user_id, peer])
    n = 6000
    try:
        batch = [{"chat_id": group.chat_id, "from": peer, "text": str(i)} for i in range(n)]
        await sim_world.request("POST", "/messages/batch", {"messages": batch})
        for gw in (gateway, other):
            got = await next_events(aiter(gw.events()), n, timeout=60)
            assert [e.text for e in got if isinstance(e, NewMessage)] == [str(i) for i in range(n)]
    finally:
        await _disconnect_all([(account, gateway), (other_account, other)])


async def test_a_gateway_is_reusable_and_its_events_may_be_taken_before_connect(
    sim_world: SimWorld,
) -> None:
    account = await sim_world.account()
    peer, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, peer])
    gateway = SimGateway(sim_world.url, account.credential)
    events = aiter(gateway.events())
    try:
        await gateway.connect()
        await sim_world.inject(chat, peer, "first")
        (first,) = await next_events(events, 1)
        await gateway.disconnect()
        assert [e async for e in events] == []
        await sim_world.inject(chat, peer, "second")
        await gateway.connect(gateway.last_seq)
        (second,) = await next_events(aiter(gateway.events()), 1)
        assert isinstance(first, NewMessage) and isinstance(second, NewMessage)
        assert (second.text, second.seq) == ("second", first.seq + 1)
    finally:
        await gateway.disconnect()


async def test_duplicated_key_and_latency_faults(sim_world: SimWorld) -> None:
    (slow_account, slow), (dup_account, dup) = await _online(sim_world, 2)
    try:
        await sim_world.fault("latency", account=slow_account, seconds=0.2, count=1)
        assert (await slow.me()).id == slow_account.user_id
        await sim_world.fault("auth_key_duplicated", account=dup_account)
        (event,) = await next_events(aiter(dup.events()), 1)
        assert isinstance(event, LoggedOut) and isinstance(event.error, AuthKeyDuplicated)
        with pytest.raises(AuthKeyDuplicated):
            await dup.me()
    finally:
        await _disconnect_all([(slow_account, slow), (dup_account, dup)])
