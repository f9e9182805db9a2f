"""The gateway contract suite: what every Gateway implementation must do.

Subclass :class:`GatewayContract` as ``Test…`` and provide a ``world`` fixture returning a
:class:`~tests.integration.telegram.world.World` (see ``test_sim_contract.py``). Every test
creates its own accounts and chats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.integration.telegram.world import AccountRef, World, eventually, next_events
from vibee.telegram.gateway import (
    Authorized,
    ChatType,
    Disconnected,
    Event,
    FloodWait,
    Gateway,
    LoggedOut,
    LoginState,
    MessageDeleted,
    MessageEdited,
    NewMessage,
    NotConnected,
    PasswordInvalid,
    PasswordRequired,
    PeerInvalid,
    PhoneCodeExpired,
    PhoneCodeInvalid,
    PhoneNumberInvalid,
    RandomIdDuplicate,
    Reconnected,
    SessionRevoked,
    SlowModeWait,
    Unauthorized,
    WriteForbidden,
)

NewGateway = Callable[..., Gateway]


def updates(events: list[Event]) -> list[NewMessage]:
    """Only the new-message updates."""
    return [e for e in events if isinstance(e, NewMessage)]


def wrong(code: str) -> str:
    """A code that is certainly not ``code``."""
    return "".join(str((int(ch) + 1) % 10) for ch in code)


class GatewayContract:
    """The contract; a subclass supplies the ``world`` fixture."""

    @pytest.fixture
    async def new_gateway(self, world: World) -> AsyncIterator[NewGateway]:
        """Makes gateways and disconnects them all after the test."""
        made: list[Gateway] = []

        def make(credential: bytes | None = None) -> Gateway:
            gateway = world.gateway(credential)
            made.append(gateway)
            return gateway

        yield make
        for gateway in made:
            await gateway.disconnect()

    async def online(
        self, world: World, new_gateway: NewGateway, last_seq: int | None = None
    ) -> tuple[AccountRef, Gateway, AsyncIterator[Event]]:
        """A new account, connected."""
        account = await world.account()
        gateway = new_gateway(account.credential)
        me = await gateway.connect(last_seq)
        assert me is not None and me.id == account.user_id
        return account, gateway, aiter(gateway.events())

    # --- connect and login ------------------------------------------------------------------

    async def test_connect_returns_the_account_user(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        account, gateway, _ = await self.online(world, new_gateway)
        me = await gateway.me()
        assert (me.id, me.username, me.bot) == (account.user_id, account.username, False)
        assert gateway.credential == account.credential

    async def test_login_with_code_finished_on_another_gateway(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        account = await world.account()
        first = new_gateway()
        assert await first.connect() is None
        with pytest.raises(Unauthorized):
            await first.me()
        state = await first.send_code(account.phone)
        stored = state.to_json()
        credential = first.credential
        assert credential is not None
        await first.disconnect()

        second = new_gateway(credential)  # "another instance", from what was stored
        assert await second.connect() is None
        state = LoginState.from_json(stored)
        code = await world.login_code(account.phone)
        with pytest.raises(PhoneCodeInvalid) as wrong_code:
            await second.sign_in(state.phone, wrong(code), state.phone_code_hash)
        assert wrong_code.value.permanent and "code" in str(wrong_code.value).lower()
        result = await second.sign_in(state.phone, code, state.phone_code_hash)
        assert isinstance(result, Authorized)
        assert result.user.id == account.user_id
        assert (await second.me()).id == account.user_id
        await second.disconnect()

        third = new_gateway(result.credential)
        me = await third.connect()
        assert me is not None and me.id == account.user_id

    async def test_login_with_2fa_password(self, world: World, new_gateway: NewGateway) -> None:
        account = await world.account(password="hunter2")
        gateway = new_gateway()
        await gateway.connect()
        state = await gateway.send_code(account.phone)
        code = await world.login_code(account.phone)
        result = await gateway.sign_in(account.phone, code, state.phone_code_hash)
        assert isinstance(result, PasswordRequired)
        with pytest.raises(PasswordInvalid):
            await gateway.check_password("hunter3")
        authorized = await gateway.check_password("hunter2")
        assert authorized.user.id == account.user_id

    async def test_login_errors(self, world: World, new_gateway: NewGateway) -> None:
        account = await world.account()
        gateway = new_gateway()
        await gateway.connect()
        with pytest.raises(PhoneNumberInvalid):
            await gateway.send_code("12")
        state = await gateway.send_code(account.phone)
        with pytest.raises(PhoneCodeExpired):
            await gateway.sign_in(account.phone, "00000", "not-the-hash")
        await world.expire_code(account.phone)
        code = await world.login_code(account.phone)
        with pytest.raises(PhoneCodeExpired):
            await gateway.sign_in(account.phone, code, state.phone_code_hash)

    async def test_qr_login(self, world: World, new_gateway: NewGateway) -> None:
        account = await world.account()
        gateway = new_gateway()
        await gateway.connect()
        qr = await gateway.qr_start()
        assert qr.url.startswith("tg://login?token=")
        assert await gateway.qr_wait(0.05) is None
        await world.qr_accept(qr.url, account)
        result = await gateway.qr_wait(20)
        assert isinstance(result, Authorized) and result.user.id == account.user_id

    # --- sending ----------------------------------------------------------------------------

    async def test_send_with_random_id_and_reuse_is_rejected(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        account, gateway, events = await self.online(world, new_gateway)
        peer, _ = await world.user()
        chat = await world.chat("private", [account.user_id, peer])
        first = await world.inject(chat, peer, "hello")
        message_id = await gateway.send_message(
            peer, "hi there", random_id=-(2**62) + 5, reply_to=first
        )
        incoming, outgoing = updates(await next_events(events, 2))
        assert not incoming.outgoing and incoming.sender_id == peer
        assert outgoing.outgoing and outgoing.message_id == message_id
        assert outgoing.reply_to_msg_id == first and outgoing.chat_id == peer
        with pytest.raises(RandomIdDuplicate) as dup:
            await gateway.send_message(peer, "hi there", random_id=-(2**62) + 5)
        assert dup.value.permanent
        transcript = await world.transcript(chat)
        assert [(m["text"], m["random_id"]) for m in transcript] == [
            ("hello", None),
            ("hi there", -(2**62) + 5),
        ]
        assert transcript[1]["reply_to"] == first

    async def test_flood_wait(self, world: World, new_gateway: NewGateway) -> None:
        account, gateway, _ = await self.online(world, new_gateway)
        peer, _ = await world.user()
        chat = await world.chat("private", [account.user_id, peer])
        await world.fault("flood_wait", account=account, seconds=17)
        with pytest.raises(FloodWait) as flood:
            await gateway.send_message(peer, "x", random_id=1)
        assert flood.value.seconds == 17 and flood.value.retry_after == 17
        assert flood.value.retryable
        assert await world.transcript(chat) == []

    async def test_slow_mode(self, world: World, new_gateway: NewGateway) -> None:
        account, gateway, _ = await self.online(world, new_gateway)
        peer, _ = await world.user()
        group = await world.chat("group", [account.user_id, peer])
        await world.fault("slow_mode", chat=group, seconds=60)
        await gateway.send_message(group.chat_id, "one", random_id=1)
        with pytest.raises(SlowModeWait) as slow:
            await gateway.send_message(group.chat_id, "two", random_id=2)
        assert 0 < slow.value.seconds <= 60 and slow.value.retryable
        assert [m["text"] for m in await world.transcript(group)] == ["one"]

    async def test_write_forbidden_and_peer_invalid(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        account, gateway, _ = await self.online(world, new_gateway)
        owner, _ = await world.user()
        channel = await world.chat("channel", [owner, account.user_id], admins=[owner])
        with pytest.raises(WriteForbidden):
            await gateway.send_message(channel.chat_id, "no", random_id=1)
        stranger = await world.chat("group", [owner])
        with pytest.raises(PeerInvalid):
            await gateway.send_message(stranger.chat_id, "no", random_id=2)
        with pytest.raises(PeerInvalid):
            await gateway.send_message(1, "no", random_id=3)

    # --- events -----------------------------------------------------------------------------

    async def test_event_flags(self, world: World, new_gateway: NewGateway) -> None:
        account, _, events = await self.online(world, new_gateway)
        me = account.user_id
        person, _ = await world.user()
        bot, _ = await world.user(bot=True)
        private = await world.chat("private", [me, person])
        group = await world.chat("group", [me, person, bot])
        channel = await world.chat("channel", [person, me], admins=[person])
        first = await world.inject(private, person, "hi")
        await world.inject(private, me, "my other device", reply_to=first)
        await world.inject(group, bot, "beep")
        await world.inject(group, person, f"hey @{account.username} and @Other, mail a@b.c")
        await world.inject(channel, person, "news")
        p1, p2, g1, g2, c1 = updates(await next_events(events, 5))
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
        seqs = [e.seq for e in (p1, p2, g1, g2, c1)]
        assert seqs == list(range(seqs[0], seqs[0] + 5))

    async def test_edits_and_deletes(self, world: World, new_gateway: NewGateway) -> None:
        account, _, events = await self.online(world, new_gateway)
        peer, _ = await world.user()
        group = await world.chat("group", [account.user_id, peer])
        message_id = await world.inject(group, peer, "typo")
        await world.edit(group, message_id, "fixed")
        await world.delete(group, message_id)
        new, edited, deleted = await next_events(events, 3)
        assert isinstance(new, NewMessage)
        assert isinstance(edited, MessageEdited) and edited.text == "fixed"
        assert isinstance(deleted, MessageDeleted) and deleted.message_ids == (message_id,)
        assert (new.seq + 1, new.seq + 2) == (edited.seq, deleted.seq)

    async def test_redelivery_after_a_reconnect_from_a_seq(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        account, gateway, events = await self.online(world, new_gateway)
        peer, _ = await world.user()
        chat = await world.chat("private", [account.user_id, peer])
        for text in ("one", "two"):
            await world.inject(chat, peer, text)
        one, two = updates(await next_events(events, 2))
        await gateway.disconnect()
        for text in ("three", "four"):
            await world.inject(chat, peer, text)

        again = new_gateway(account.credential)
        await again.connect(one.seq)
        got = updates(await next_events(aiter(again.events()), 3))
        assert [m.text for m in got] == ["two", "three", "four"]
        assert [m.seq for m in got] == [two.seq, two.seq + 1, two.seq + 2]
        assert again.last_seq == two.seq + 2

    async def test_history_dialogs_and_typing(self, world: World, new_gateway: NewGateway) -> None:
        account, gateway, _ = await self.online(world, new_gateway)
        peer, _ = await world.user()
        group = await world.chat("group", [account.user_id, peer])
        private = await world.chat("private", [account.user_id, peer])
        ids = [await world.inject(group, peer, f"m{i}") for i in range(5)]
        await world.inject(private, peer, "latest")
        page = await gateway.history(group.chat_id, limit=2)
        assert [m.message_id for m in page] == [ids[4], ids[3]]
        older = await gateway.history(group.chat_id, limit=10, before_id=ids[3])
        assert [m.text for m in older] == ["m2", "m1", "m0"]
        dialogs = await gateway.dialogs(limit=1)
        assert [(d.chat_id, d.chat_type) for d in dialogs] == [(peer, ChatType.PRIVATE)]
        rest = await gateway.dialogs(limit=10, offset=1)
        assert [d.chat_id for d in rest] == [group.chat_id]
        await gateway.send_typing(group.chat_id)

    # --- faults -----------------------------------------------------------------------------

    async def test_revoke_logs_out_for_good(self, world: World, new_gateway: NewGateway) -> None:
        account, gateway, events = await self.online(world, new_gateway)
        await world.fault("revoke", account=account)
        (event,) = await next_events(events, 1)
        assert isinstance(event, LoggedOut) and isinstance(event.error, SessionRevoked)
        assert event.error.ends_session and event.error.permanent
        assert [e async for e in events] == []
        with pytest.raises(Unauthorized):
            await gateway.send_message(1, "x", random_id=1)
        with pytest.raises(SessionRevoked):
            await new_gateway(account.credential).connect()

    async def test_disconnect_fault_reconnects_without_missing_updates(
        self, world: World, new_gateway: NewGateway
    ) -> None:
        account, gateway, events = await self.online(world, new_gateway)
        peer, _ = await world.user()
        chat = await world.chat("private", [account.user_id, peer])
        await world.inject(chat, peer, "before")
        (before,) = updates(await next_events(events, 1))
        await world.fault("disconnect", account=account)
        for i in range(10):
            await world.inject(chat, peer, f"during {i}")
        seen: list[Any] = []
        while len(updates(seen)) < 10:
            seen += await next_events(events, 1)
        got = updates(seen)
        assert [m.text for m in got] == [f"during {i}" for i in range(10)]
        assert [m.seq for m in got] == list(range(before.seq + 1, before.seq + 11))
        kinds = [type(e) for e in seen]
        assert kinds.count(Disconnected) == 1 and kinds.count(Reconnected) == 1
        assert kinds.index(Disconnected) < kinds.index(Reconnected) < kinds.index(NewMessage)
        await eventually(lambda: _answers(gateway))
        await gateway.send_message(peer, "after", random_id=99)
        assert await world.max_connections(account) == 1


async def _answers(gateway: Gateway) -> bool:
    try:
        await gateway.me()
    except NotConnected:
        return False
    return True
