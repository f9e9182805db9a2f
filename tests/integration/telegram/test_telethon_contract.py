"""The gateway contract suite against TelethonGateway, over a fake Telegram behind each
client's fake sender (:mod:`tests.integration.telegram.test_telethon_world`).

Two contract tests state what the sim does and Telegram does not; they are replaced here
by the same checks minus that difference (each override says which):

* Telegram never sends a client the updates of its own sends (Telethon applies them to its
  update state without dispatching them), so there is no outgoing event for a message this
  gateway sent; the outbox already holds it.
* A channel (or supergroup) numbers its updates with its own pts, so its messages carry
  the account's seq unchanged instead of the next one (see ``telethon_events``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.telegram.contract import GatewayContract, NewGateway, updates
from tests.integration.telegram.test_telethon_world import TelethonWorld
from tests.integration.telegram.world import World, next_events
from vibee.telegram.gateway import ChatType, RandomIdDuplicate


class TestTelethonGateway(GatewayContract):
    """Every contract test that applies to Telegram itself, through Telethon."""

    @pytest.fixture
    async def world(self) -> AsyncIterator[TelethonWorld]:
        """A fresh fake Telegram; no account ever had two connections at once."""
        world = TelethonWorld()
        yield world
        for account in world.accounts:
            assert await world.max_connections(account) <= 1, account

    async def test_send_with_random_id_and_reuse_is_rejected(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        """As the contract, minus the echo of our own send (Telegram sends none)."""
        account, gateway, events = await self.online(world, new_gateway)
        peer, _ = await world.user()
        chat = await world.chat("private", [account.user_id, peer])
        first = await world.inject(chat, peer, "hello")
        (incoming,) = updates(await next_events(events, 1))
        assert not incoming.outgoing and incoming.sender_id == peer
        message_id = await gateway.send_message(
            peer, "hi there", random_id=-(2**62) + 5, reply_to=first
        )
        with pytest.raises(RandomIdDuplicate) as dup:
            await gateway.send_message(peer, "hi there", random_id=-(2**62) + 5)
        assert dup.value.permanent
        transcript = await world.transcript(chat)
        assert [(m["text"], m["random_id"]) for m in transcript] == [
            ("hello", None),
            ("hi there", -(2**62) + 5),
        ]
        assert transcript[1]["reply_to"] == first and transcript[1]["message_id"] == message_id

    async def test_event_flags(self, world: World, new_gateway: NewGateway) -> None:
        """As the contract, except the channel message's seq (a channel's own pts)."""
        account, _, events = await self.online(world, new_gateway)
        me = account.user_id
        person, _ = await world.user()
        bot, _ = await world.user(bot=True)
        private = await world.chat("private", [me, person])
        group = await world.chat("group", [me, person, bot])
        channel = await world.chat("channel", [person, me], admins=[person])
        supergroup = await world.chat("supergroup", [person, me])
        first = await world.inject(private, person, "hi")
        await world.inject(private, me, "my other device", reply_to=first)
        await world.inject(group, bot, "beep")
        await world.inject(group, person, f"hey @{account.username} and @Other, mail a@b.c")
        await world.inject(channel, person, "news")
        await world.inject(supergroup, person, "chatter")
        p1, p2, g1, g2, c1, s1 = updates(await next_events(events, 6))
        assert (p1.chat_id, p1.chat_type, p1.outgoing, p1.sender_id) == (
            person,
            ChatType.PRIVATE,
            False,
            person,
        )
        assert p1.is_private and not p1.is_group and not p1.is_channel
        assert p2.outgoing and p2.reply_to_msg_id == first and p2.sender_id == me
        assert g1.from_bot and g1.is_group and g1.chat_id == group.chat_id
        assert not g2.from_bot and g2.mentions == (account.username.lower(), "other")
        assert c1.is_channel and c1.chat_id == channel.chat_id and not c1.outgoing
        assert s1.is_group and s1.chat_id == supergroup.chat_id and s1.sender_id == person
        seqs = [e.seq for e in (p1, p2, g1, g2)]
        assert seqs == list(range(seqs[0], seqs[0] + 4))
        assert c1.seq == s1.seq == g2.seq  # channels: the account's seq, unchanged
