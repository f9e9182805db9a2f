"""TelethonGateway over a fake ``client._sender``: Telethon's request path, flood logic,
update loop and MessageBox run for real; nothing reaches the network."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telethon import errors, functions
from telethon.tl import types

from tests.unit.telegram.test_telethon_fakes import (
    ME,
    NOW,
    FakeSender,
    TelethonTime,
    credential,
    gateway,
    install,
    me_user,
    patch_telethon_time,
    user,
)
from vibee.telegram.gateway import (
    AuthKeyDuplicated,
    AuthKeyUnregistered,
    BadRequest,
    Disconnected,
    Event,
    FloodWait,
    LoggedOut,
    MessageEdited,
    NewMessage,
    NotConnected,
    PeerInvalid,
    RandomIdDuplicate,
    Reconnected,
    SessionRevoked,
    Unauthorized,
    WriteForbidden,
)
from vibee.telegram.telethon_credential import TelethonCredential
from vibee.telegram.telethon_gateway import TelethonGateway

ALICE = user(456, "Alice", "alice")
SEND = functions.messages.SendMessageRequest


@pytest.fixture
def telethon_time(monkeypatch: pytest.MonkeyPatch) -> TelethonTime:
    """Telethon's request-path clock and sleeps, under the test's control."""
    return patch_telethon_time(monkeypatch)


async def take(gw: TelethonGateway, n: int) -> list[Event]:
    """The next ``n`` events (a generous guard against hanging, not a timing check)."""
    events = aiter(gw.events())
    return [await asyncio.wait_for(anext(events), 10) for _ in range(n)]


async def rest(gw: TelethonGateway) -> list[Event]:
    """Every event until the stream ends (which it must, soon)."""

    async def drain() -> list[Event]:
        return [e async for e in gw.events()]

    return await asyncio.wait_for(drain(), 10)


async def online(**kwargs: Any) -> tuple[TelethonGateway, FakeSender]:
    """An authorized gateway, connected, that knows Alice."""
    gw = gateway(credential(), **kwargs)
    sender = install(gw, me=me_user())
    assert (await gw.connect()) is not None
    gw.client.session.process_entities(
        types.contacts.ResolvedPeer(peer=types.PeerUser(456), users=[ALICE], chats=[])
    )
    return gw, sender


def sent_ok(message_id: int) -> Any:
    return lambda _req: types.UpdateShortSentMessage(id=message_id, pts=101, pts_count=1, date=NOW)


def incoming(message_id: int, pts: int, text: str = "hi") -> Any:
    msg = types.Message(
        id=message_id, peer_id=types.PeerUser(456), from_id=types.PeerUser(456), date=NOW,
        message=text,
    )  # fmt: skip
    return types.Updates(
        updates=[types.UpdateNewMessage(message=msg, pts=pts, pts_count=1)],
        users=[ALICE], chats=[], date=NOW, seq=0,
    )  # fmt: skip


async def assert_no_reconnect_loop(gw: TelethonGateway, sender: FakeSender) -> None:
    """Dead for good: nothing runs, nothing connects, connect() refuses at once."""
    for _ in range(20):
        await asyncio.sleep(0)
    assert sender.connects == 1 and not gw.client.is_connected()
    assert not [t for t in gw._conn._tasks if not t.done()]
    with pytest.raises((Unauthorized, AuthKeyDuplicated)):
        await gw.connect()
    assert sender.connects == 1


# --- sending ---------------------------------------------------------------------------------


async def test_send_message_carries_our_random_id_and_reply_to() -> None:
    gw, sender = await online()
    sender.handlers[SEND] = sent_ok(31)
    assert await gw.send_message(456, "hello", random_id=-(2**62) + 7, reply_to=5) == 31
    (request,) = sender.sent(SEND)
    assert request.random_id == -(2**62) + 7 and request.message == "hello"
    assert request.reply_to.reply_to_msg_id == 5
    assert request.peer == types.InputPeerUser(456, ALICE.access_hash)
    await gw.disconnect()


async def test_send_message_id_from_full_updates() -> None:
    gw, sender = await online()
    msg = types.Message(id=77, peer_id=types.PeerUser(456), date=NOW, message="x", out=True)
    sender.handlers[SEND] = lambda req: types.Updates(
        updates=[
            types.UpdateMessageID(id=77, random_id=req.random_id),
            types.UpdateNewMessage(message=msg, pts=101, pts_count=1),
        ],
        users=[], chats=[], date=NOW, seq=0,
    )  # fmt: skip
    assert await gw.send_message(456, "x", random_id=9) == 77
    await gw.disconnect()


async def test_flood_wait_is_reported_not_slept(telethon_time: TelethonTime) -> None:
    gw, sender = await online()
    sender.handlers[SEND] = lambda req: errors.FloodWaitError(req, 30)
    with pytest.raises(FloodWait) as flood:
        await gw.send_message(456, "hi", random_id=777)
    assert flood.value.seconds == 30 and flood.value.retry_after == 30
    assert telethon_time.sleeps == [] and len(sender.sent(SEND)) == 1
    await gw.disconnect()


async def test_a_resend_after_the_wait_goes_out_with_the_same_random_id(
    telethon_time: TelethonTime,
) -> None:
    gw, sender = await online()
    sender.handlers[SEND] = lambda req: errors.FloodWaitError(req, 30)
    with pytest.raises(FloodWait):
        await gw.send_message(456, "hi", random_id=777)
    sender.handlers[SEND] = sent_ok(40)
    with pytest.raises(FloodWait) as early:  # Telethon refuses locally while the wait lasts
        await gw.send_message(456, "hi", random_id=777)
    assert 0 < early.value.seconds <= 30 and len(sender.sent(SEND)) == 1
    telethon_time.advance(30)  # the caller waited
    assert await gw.send_message(456, "hi", random_id=777) == 40
    assert [r.random_id for r in sender.sent(SEND)] == [777, 777]
    await gw.disconnect()


async def test_a_high_threshold_would_let_telethon_sleep(telethon_time: TelethonTime) -> None:
    """The contrast: with Telethon's own default, the flood wait is slept in silence."""
    gw, sender = await online(flood_sleep_threshold=60)
    answers = iter([errors.FloodWaitError(None, 30), types.UpdateShortSentMessage(
        id=5, pts=101, pts_count=1, date=NOW)])  # fmt: skip
    sender.handlers[SEND] = lambda req: next(answers)
    assert await gw.send_message(456, "hi", random_id=1) == 5
    assert telethon_time.sleeps == [30]
    await gw.disconnect()


async def test_random_id_duplicate_means_already_sent(telethon_time: TelethonTime) -> None:
    gw, sender = await online()
    sender.handlers[SEND] = lambda req: errors.RandomIdDuplicateError(req)
    with pytest.raises(RandomIdDuplicate) as dup:
        await gw.send_message(456, "hi", random_id=777)
    assert dup.value.permanent
    # Telethon retries a 500 once; the retry carries the same random_id
    assert [r.random_id for r in sender.sent(SEND)] == [777, 777]
    await gw.disconnect()


async def test_permanent_send_errors() -> None:
    gw, sender = await online()
    sender.handlers[SEND] = lambda req: errors.ChatWriteForbiddenError(req)
    with pytest.raises(WriteForbidden):
        await gw.send_message(456, "hi", random_id=1)
    with pytest.raises(PeerInvalid):  # unknown to the session and to Telegram
        await gw.send_message(31337, "hi", random_id=2)
    assert len(sender.sent(SEND)) == 1
    await gw.disconnect()


async def test_typing() -> None:
    gw, sender = await online()
    sender.handlers[functions.messages.SetTypingRequest] = lambda req: True
    await gw.send_typing(456)
    (request,) = sender.sent(functions.messages.SetTypingRequest)
    assert isinstance(request.action, types.SendMessageTypingAction)
    await gw.disconnect()


async def test_calls_need_a_connection() -> None:
    gw = gateway(credential())
    install(gw, me=me_user())
    with pytest.raises(NotConnected):
        await gw.send_message(456, "hi", random_id=1)


# --- sessions that end --------------------------------------------------------------------------


async def test_auth_key_unregistered_on_connect_logs_out_for_good() -> None:
    gw = gateway(credential())
    sender = install(gw, me=me_user())
    sender.handlers[functions.users.GetUsersRequest] = errors.AuthKeyUnregisteredError
    with pytest.raises(AuthKeyUnregistered) as refused:
        await gw.connect()
    assert refused.value.ends_session
    (event,) = await rest(gw)
    assert isinstance(event, LoggedOut) and isinstance(event.error, AuthKeyUnregistered)
    await assert_no_reconnect_loop(gw, sender)


async def test_an_unauthorized_key_mid_login_is_just_not_signed_in() -> None:
    gw = gateway(credential(user_id=0))  # a login in progress
    sender = install(gw, me=None)
    assert await gw.connect() is None
    with pytest.raises(AuthKeyUnregistered):
        await gw.me()
    assert gw.client.is_connected() and sender.connects == 1  # still usable for the login
    await gw.disconnect()


async def test_session_revoked_on_send_logs_out_for_good() -> None:
    gw, sender = await online()
    sender.handlers[SEND] = lambda req: errors.SessionRevokedError(req)
    with pytest.raises(SessionRevoked):
        await gw.send_message(456, "hi", random_id=1)
    (event,) = await rest(gw)
    assert isinstance(event, LoggedOut) and isinstance(event.error, SessionRevoked)
    with pytest.raises(SessionRevoked):
        await gw.me()
    await assert_no_reconnect_loop(gw, sender)


async def test_auth_key_duplicated_in_telethons_update_loop_logs_out() -> None:
    gw, sender = await online()
    sender.handlers[functions.updates.GetDifferenceRequest] = errors.AuthKeyDuplicatedError
    sender.push(types.UpdatesTooLong())  # Telethon fetches the difference by itself
    (event,) = await rest(gw)
    assert isinstance(event, LoggedOut) and isinstance(event.error, AuthKeyDuplicated)
    await assert_no_reconnect_loop(gw, sender)


async def test_a_key_the_server_does_not_know_logs_out() -> None:
    gw, sender = await online()
    sender.drop(errors.AuthKeyNotFound())  # transport-level 404
    (event,) = await rest(gw)
    assert isinstance(event, LoggedOut) and isinstance(event.error, AuthKeyUnregistered)
    await assert_no_reconnect_loop(gw, sender)


async def test_a_network_drop_reconnects() -> None:
    """The contrast to the above: a transient loss reconnects (a second connect)."""
    gw, sender = await online()
    sender.drop(ConnectionError("connection reset"))
    dropped, back = await take(gw, 2)
    assert isinstance(dropped, Disconnected) and isinstance(back, Reconnected)
    assert sender.connects == 2 and gw.client.is_connected()
    assert (await gw.me()).id == ME
    await gw.disconnect()


# --- events ------------------------------------------------------------------------------------


async def test_updates_flow_through_telethons_update_loop() -> None:
    gw, sender = await online()
    sender.push(incoming(10, pts=101, text="one"))
    short = types.UpdateShortMessage(
        id=11, user_id=456, message="two", pts=102, pts_count=1, date=NOW
    )
    sender.push(short)
    edit = types.Message(
        id=10, peer_id=types.PeerUser(456), from_id=types.PeerUser(456), date=NOW, message="1"
    )
    sender.push(types.UpdateShort(types.UpdateEditMessage(edit, pts=103, pts_count=1), NOW))
    one, two, edited = await take(gw, 3)
    assert isinstance(one, NewMessage) and isinstance(two, NewMessage)
    assert (one.text, one.seq, one.sender_username) == ("one", 101, "alice")
    assert (two.text, two.seq, two.sender_id, two.outgoing) == ("two", 102, 456, False)
    assert isinstance(edited, MessageEdited) and (edited.text, edited.seq) == ("1", 103)
    assert gw.last_seq == 103
    await gw.disconnect()


async def test_a_slow_consumer_holds_the_account_and_loses_nothing() -> None:
    gw, sender = await online(event_buffer=2)
    for i in range(6):
        sender.push(incoming(20 + i, pts=101 + i, text=str(i)))
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(gw._conn.stream) == 2  # bounded: Telethon's dispatch waits for room
    got = await take(gw, 6)
    assert [e.text for e in got if isinstance(e, NewMessage)] == [str(i) for i in range(6)]
    assert [e.seq for e in got if isinstance(e, NewMessage)] == list(range(101, 107))
    await gw.disconnect()


async def test_connect_from_last_seq_fetches_what_came_after() -> None:
    gw = gateway(credential())
    gw.client.session.set_update_state(
        0, types.updates.State(pts=100, qts=0, date=NOW, seq=1, unread_count=0)
    )
    sender = install(gw, me=me_user())
    later = [
        types.Message(id=i, peer_id=types.PeerUser(456), from_id=types.PeerUser(456), date=NOW,
                      message=f"m{i}")
        for i in (1, 2)
    ]  # fmt: skip
    answers = iter([
        types.updates.Difference(
            new_messages=later, new_encrypted_messages=[], other_updates=[], chats=[],
            users=[ALICE], state=types.updates.State(pts=95, qts=0, date=NOW, seq=2,
                                                       unread_count=0)),
    ])  # fmt: skip
    sender.handlers[functions.updates.GetDifferenceRequest] = lambda req: next(
        answers, types.updates.DifferenceEmpty(date=NOW, seq=2)
    )
    await gw.connect(last_seq=90)
    got = await take(gw, 2)
    first = sender.sent(functions.updates.GetDifferenceRequest)[0]
    assert first.pts == 90  # rewound from the saved 100 to what the caller stored
    assert [(e.text, e.seq) for e in got if isinstance(e, NewMessage)] == [("m1", 91), ("m2", 92)]
    await gw.disconnect()


async def test_disconnect_ends_events_and_is_idempotent() -> None:
    gw, _ = await online()
    await gw.disconnect()
    await gw.disconnect()
    assert await rest(gw) == [] and not gw.client.is_connected()


# --- credential and reads ----------------------------------------------------------------------


async def test_credential_before_and_after_the_first_connect() -> None:
    gw = gateway()
    assert gw.credential is None
    sender = install(gw, me=None)
    assert await gw.connect() is None
    blob = gw.credential
    assert blob is not None
    decoded = TelethonCredential.decode(blob)
    assert decoded.auth_key == sender.auth_key.key and not decoded.authorized
    assert decoded.server_address == "149.154.167.51" and decoded.dc_id == 2
    await gw.disconnect()


async def test_history_pages_and_skips_service_messages() -> None:
    gw, sender = await online()
    page = [
        types.Message(id=9, peer_id=types.PeerUser(456), from_id=types.PeerUser(456), date=NOW,
                      message="nine", reply_to=types.MessageReplyHeader(reply_to_msg_id=8)),
        types.MessageService(id=8, peer_id=types.PeerUser(456), date=NOW,
                             action=types.MessageActionHistoryClear()),
        types.Message(id=7, peer_id=types.PeerUser(456), date=NOW, message="seven", out=True),
    ]  # fmt: skip
    sender.handlers[functions.messages.GetHistoryRequest] = lambda req: types.messages.Messages(
        messages=page, chats=[], users=[ALICE], topics=[]
    )
    got = await gw.history(456, limit=3, before_id=10)
    assert [(m.message_id, m.text, m.outgoing) for m in got] == [
        (9, "nine", False),
        (7, "seven", True),
    ]
    assert got[0].reply_to_msg_id == 8 and got[1].sender_id == ME
    (request,) = sender.sent(functions.messages.GetHistoryRequest)
    assert request.offset_id == 10 and request.peer == types.InputPeerUser(456, ALICE.access_hash)
    await gw.disconnect()


async def test_dialogs() -> None:
    gw, sender = await online()
    news = types.Channel(
        id=777, title="News", photo=types.ChatPhotoEmpty(), date=NOW, broadcast=True,
        access_hash=5,
    )  # fmt: skip
    top = [
        types.Message(id=3, peer_id=types.PeerUser(456), date=NOW, message="a"),
        types.Message(id=4, peer_id=types.PeerChannel(777), date=NOW, message="b"),
    ]

    def dialog(peer: Any, top_message: int) -> Any:
        return types.Dialog(
            peer=peer, top_message=top_message, read_inbox_max_id=0, read_outbox_max_id=0,
            unread_count=0, unread_mentions_count=0, unread_reactions_count=0,
            unread_poll_votes_count=0,
            notify_settings=types.PeerNotifySettings(),
        )  # fmt: skip

    sender.handlers[functions.messages.GetDialogsRequest] = lambda req: types.messages.Dialogs(
        dialogs=[dialog(types.PeerUser(456), 3), dialog(types.PeerChannel(777), 4)],
        messages=top, chats=[news], users=[ALICE],
    )  # fmt: skip
    got = await gw.dialogs(limit=10)
    assert [(d.chat_id, d.chat_type.value, d.title, d.top_message_id) for d in got] == [
        (456, "private", "Alice", 3),
        (-1000000000777, "channel", "News", 4),
    ]
    assert [d.chat_id for d in await gw.dialogs(limit=10, offset=1)] == [-1000000000777]
    await gw.disconnect()


async def test_an_unreadable_credential_is_refused_at_connect() -> None:
    gw = gateway(bytes.fromhex("ab" * 16))  # e.g. a sim token
    sender = install(gw, me=me_user())
    with pytest.raises(BadRequest) as refused:
        await gw.connect()
    assert refused.value.code == "BAD_CREDENTIAL" and refused.value.permanent
    assert not refused.value.ends_session and sender.connects == 0


async def test_connect_again_redelivers_what_was_not_consumed() -> None:
    gw, sender = await online()
    for i in range(3):
        sender.push(incoming(30 + i, pts=101 + i, text=f"m{i}"))
    (first,) = await take(gw, 1)  # m1 and m2 are buffered, never consumed
    assert isinstance(first, NewMessage) and first.seq == 101
    await gw.disconnect()
    later = [
        types.Message(id=31 + i, peer_id=types.PeerUser(456), from_id=types.PeerUser(456),
                      date=NOW, message=f"m{i + 1}")
        for i in range(2)
    ]  # fmt: skip
    diff = types.updates.Difference(
        new_messages=later, new_encrypted_messages=[], other_updates=[], chats=[],
        users=[ALICE], state=types.updates.State(pts=103, qts=0, date=NOW, seq=2, unread_count=0),
    )  # fmt: skip
    sender.handlers[functions.updates.GetDifferenceRequest] = lambda req: (
        diff if req.pts == 101 else types.updates.DifferenceEmpty(date=NOW, seq=2)
    )
    assert await gw.connect(last_seq=first.seq) is not None
    again = await take(gw, 2)
    assert [(e.text, e.seq) for e in again if isinstance(e, NewMessage)] == [
        ("m1", 102),
        ("m2", 103),
    ]
    await gw.disconnect()
