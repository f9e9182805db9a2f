"""The sim's state without any network: delivery, login, faults, mentions."""

from __future__ import annotations

import orjson
import pytest

from vibee.sim.telegram_auth import Auth, normalize_phone
from vibee.sim.telegram_faults import Faults
from vibee.sim.telegram_state import Account, World, mentions
from vibee.telegram.gateway import (
    FloodWait,
    PasswordInvalid,
    PasswordNeeded,
    PeerInvalid,
    PhoneCodeExpired,
    PhoneCodeInvalid,
    PhoneNumberBanned,
    PhoneNumberInvalid,
    SessionRevoked,
    SlowModeWait,
    Unauthorized,
)


class Probe:
    """A listener that records what the sim does to it."""

    def __init__(self) -> None:
        self.account: Account | None = None
        self.cursor = 0
        self.pumps = 0
        self.ended: list[str] = []

    def pump(self) -> None:
        self.pumps += 1

    def end(self, code: str, message: str) -> None:
        self.ended.append(code)


def test_mentions() -> None:
    text = "@Alice hi @bob_99, mail x@y.com, @@no @al @Alice again"
    assert mentions(text) == ["alice", "bob_99"]


def test_normalize_phone() -> None:
    assert normalize_phone("+44 (7700) 900-123") == "447700900123"
    assert normalize_phone("12") is None and normalize_phone("+1 abc 4567") is None


def test_a_post_reaches_every_member_account_once_with_its_own_view() -> None:
    world = World()
    alice = world.add_account("1001", None, "Alice", "alice", False)
    bob = world.add_account("1002", None, "Bob", "bob", False)
    carol = world.add_user("Carol")
    private = world.add_chat("private", [alice.user.user_id, bob.user.user_id], None, set())
    group = world.add_chat("group", [alice.user.user_id, carol.user_id], None, set())
    probe = Probe()
    world.bind(probe, alice, None)
    world.post(private, bob.user, "hi @alice", None)
    world.post(group, carol, "hey", None)
    seen = [orjson.loads(u) for u in alice.log]
    assert [(u["seq"], u["chat_id"], u["outgoing"]) for u in seen] == [
        (1, bob.user.user_id, False),
        (2, group.chat_id, False),
    ]
    assert seen[0]["mentions"] == ["alice"]
    (mine,) = [orjson.loads(u) for u in bob.log]
    assert mine["outgoing"] and mine["chat_id"] == alice.user.user_id
    assert probe.pumps == 2
    assert world.chat_for(alice, bob.user.user_id) is private
    with pytest.raises(PeerInvalid):
        world.chat_for(bob, group.chat_id)


def test_connections_are_counted_per_account() -> None:
    world = World()
    alice = world.add_account("1001", None, "Alice", None, False)
    first, second = Probe(), Probe()
    world.bind(first, alice, 0)
    world.unbind(first)
    world.bind(first, alice, 0)
    assert alice.max_connections == 1
    world.bind(second, alice, 0)
    assert alice.max_connections == 2 and world.max_connections_per_account == 2
    world.unbind(first)
    world.unbind(first)
    assert world.connections == 1


def test_code_login_with_password() -> None:
    world = World()
    auth = Auth(world)
    account = world.add_account("447700900123", "pw", "A", None, False)
    key = auth.new_key()
    with pytest.raises(PhoneNumberInvalid):
        auth.send_code("447700900999")
    sent = auth.send_code("+44 7700 900123")
    with pytest.raises(PhoneCodeExpired):
        auth.sign_in(key, "447700900123", sent.code, "other-hash")
    with pytest.raises(PhoneCodeInvalid):
        auth.sign_in(key, "447700900123", "x" + sent.code, sent.phone_code_hash)
    with pytest.raises(Unauthorized):
        auth.account(key)
    assert auth.sign_in(key, "447700900123", sent.code, sent.phone_code_hash) is False
    with pytest.raises(PasswordNeeded):
        auth.account(key)
    with pytest.raises(PasswordInvalid):
        auth.check_password(key, "PW")
    assert auth.check_password(key, "pw") is account
    assert auth.account(key) is account
    assert auth.kill(account, SessionRevoked()) == 1
    with pytest.raises(SessionRevoked):
        auth.account(key)


def test_a_banned_phone_gets_no_code() -> None:
    world = World()
    world.add_account("10001", None, "A", None, True)
    with pytest.raises(PhoneNumberBanned):
        Auth(world).send_code("10001")


def test_a_flood_fault_fires_count_times_and_holds_for_its_seconds() -> None:
    faults = Faults()
    faults.add_flood(1, 30, 1, None)
    faults.check_send(2, 10)
    with pytest.raises(FloodWait) as first:
        faults.check_send(1, 10)
    assert first.value.seconds == 30
    with pytest.raises(FloodWait) as held:
        faults.check_send(1, 11)
    assert 0 < held.value.seconds <= 30
    faults.clear()
    faults.check_send(1, 10)


def test_slow_mode_allows_one_send_per_period() -> None:
    faults = Faults()
    faults.set_slow_mode(10, 60, None)
    faults.check_send(1, 10)
    faults.record_send(1, 10)
    with pytest.raises(SlowModeWait):
        faults.check_send(1, 10)
    faults.check_send(2, 10)
    faults.set_slow_mode(10, 0, None)
    faults.check_send(1, 10)


def test_latency_faults_count_down() -> None:
    faults = Faults()
    faults.add_latency(0.5, 7, 2)
    assert [faults.delay_for(8), faults.delay_for(7), faults.delay_for(7), faults.delay_for(7)] == [
        0.0,
        0.5,
        0.5,
        0.0,
    ]
