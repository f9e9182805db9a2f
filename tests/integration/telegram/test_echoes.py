"""A session actor leaves out the account's own copies of what it sent (the sim pushes a
copy of every send; Telethon may bring one when it catches up on a difference) and hands on
what the owner sent from elsewhere, through either gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.telegram.test_telethon_world import TelethonWorld
from tests.integration.telegram.world import SimWorld, World, eventually
from vibee.telegram.session_actor import Inbound, SessionActor


class Sink:
    """Records what the actor hands on."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def deliver(self, inbound: Inbound) -> None:
        self.texts.append(inbound.message.text)


@pytest.fixture(params=["sim", "telethon"])
async def world(request: pytest.FixtureRequest, sim_world: SimWorld) -> AsyncIterator[World]:
    """The sim, or the fake Telegram behind Telethon."""
    yield sim_world if request.param == "sim" else TelethonWorld()


async def test_the_copy_of_a_send_is_left_out_and_the_owners_messages_are_not(
    world: World, pool: asyncpg.Pool
) -> None:
    account = await world.account()
    peer, _ = await world.user()
    chat = await world.chat("private", [account.user_id, peer])
    sink = Sink()
    actor = SessionActor(1, 1, 0, world.gateway(account.credential), pool, sink)
    runner = asyncio.create_task(actor.run())
    try:
        await asyncio.wait_for(actor.connected.wait(), 20)
        await world.inject(chat, peer, "hello")
        await eventually(lambda: sink.texts == ["hello"])
        to_peer = chat.seen_by(account.user_id)
        assert await actor.send(to_peer, "hi there", random_id=7) is not None
        await world.inject(chat, account.user_id, "on my phone")  # the owner, elsewhere
        await world.inject(chat, peer, "and you?")
        # updates come in order: a copy of the send would have come before the last one
        await eventually(lambda: sink.texts[-1:] == ["and you?"])
        assert sink.texts == ["hello", "on my phone", "and you?"]  # not the copy
        transcript = await world.transcript(chat)
        assert [m["text"] for m in transcript] == ["hello", "hi there", "on my phone", "and you?"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
