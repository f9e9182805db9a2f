"""The gateway's error tree, values and events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vibee.runtime.retry import HasRetryAfter, retry_after_of
from vibee.telegram import gateway as g
from vibee.telegram.gateway import ChatType, Gateway
from vibee.telegram.sim_gateway import SimGateway

LEAVES = [
    g.SessionRevoked, g.AuthKeyUnregistered, g.AuthKeyDuplicated, g.WriteForbidden,
    g.PeerInvalid, g.RandomIdDuplicate, g.NotConnected, g.PhoneNumberInvalid,
    g.PhoneNumberBanned, g.PhoneCodeInvalid, g.PhoneCodeExpired, g.PasswordNeeded,
    g.PasswordInvalid,
]  # fmt: skip


def test_the_tree() -> None:
    assert issubclass(g.SessionRevoked, g.Unauthorized)
    assert issubclass(g.AuthKeyUnregistered, g.Unauthorized)
    assert not issubclass(g.AuthKeyDuplicated, g.Unauthorized)
    assert issubclass(g.NotConnected, g.NetworkError)
    login: list[type[g.GatewayError]] = [
        g.PhoneNumberInvalid, g.PhoneCodeExpired, g.PasswordNeeded, g.PasswordInvalid,
    ]  # fmt: skip
    for cls in login:
        assert issubclass(cls, g.LoginError)
    for cls in [*LEAVES, g.FloodWait, g.SlowModeWait, g.BadRequest, g.Unauthorized]:
        assert issubclass(cls, g.GatewayError)


def test_only_waits_and_network_errors_are_retryable() -> None:
    retryable = {g.FloodWait, g.SlowModeWait, g.NetworkError, g.NotConnected}
    for cls in [*LEAVES, g.Unauthorized, g.BadRequest, g.NetworkError]:
        error = cls()
        assert error.retryable == (cls in retryable), cls
        assert error.permanent == (not error.retryable)
        assert str(error) and str(error)[0].isupper() and str(error).endswith("."), cls
    flood = g.FloodWait(42)
    assert flood.retryable and flood.seconds == 42 and "42 s" in str(flood)
    assert isinstance(flood, HasRetryAfter) and retry_after_of(flood) == 42.0
    assert retry_after_of(g.PeerInvalid()) is None


def test_which_errors_end_the_session() -> None:
    ending = {g.Unauthorized, g.SessionRevoked, g.AuthKeyUnregistered, g.AuthKeyDuplicated}
    for cls in [*LEAVES, g.Unauthorized, g.BadRequest, g.NetworkError]:
        assert cls().ends_session == (cls in ending), cls


@pytest.mark.parametrize("cls", LEAVES)
def test_every_code_maps_back_to_its_class(cls: type[g.GatewayError]) -> None:
    error = g.error_from_code(cls.code, "said the server")
    assert type(error) is cls and error.message == "said the server"


def test_waits_and_unknown_codes_from_the_wire() -> None:
    flood = g.error_from_code("FLOOD_WAIT", None, 7)
    assert isinstance(flood, g.FloodWait) and flood.seconds == 7
    slow = g.error_from_code("SLOWMODE_WAIT", None, 3)
    assert isinstance(slow, g.SlowModeWait) and slow.retry_after == 3.0
    other = g.error_from_code("MESSAGE_TOO_LONG", "too long")
    assert isinstance(other, g.BadRequest) and other.code == "MESSAGE_TOO_LONG"
    assert other.permanent and g.BadRequest.code == "GATEWAY_ERROR"


def test_login_state_survives_json() -> None:
    state = g.LoginState("+447700900123", "abc123", "password_needed", 6)
    assert g.LoginState.from_json(state.to_json()) == state
    assert g.LoginState.from_json({"phone": "1", "phone_code_hash": "h"}).step == "code_sent"


def test_new_message_flags() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    msg = g.NewMessage(1, -100, 5, 7, None, "hi", when, ChatType.CHANNEL)
    assert msg.is_channel and not msg.is_group and not msg.is_private
    assert msg.mentions == () and msg.reply_to_msg_id is None and not msg.outgoing
    with pytest.raises(AttributeError):
        msg.text = "changed"  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")


def test_sim_gateway_implements_the_protocol() -> None:
    gateway: Gateway = SimGateway("http://127.0.0.1:1")
    assert gateway.credential is None and gateway.last_seq is None
    with pytest.raises(ValueError, match="window"):
        SimGateway("http://127.0.0.1:1", window=0)
