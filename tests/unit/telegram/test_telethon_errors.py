"""Telethon's errors (instantiated for real) mapped to the gateway's error tree."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telethon import errors, functions
from telethon.tl import types

from vibee.telegram import gateway as g
from vibee.telegram.telethon_errors import TABLE, map_error

CASES: list[tuple[BaseException, type[g.GatewayError], str]] = [
    (errors.FloodWaitError(None, 30), g.FloodWait, "FLOOD_WAIT"),
    (errors.FloodPremiumWaitError(None, 7), g.FloodWait, "FLOOD_WAIT"),
    (errors.SlowModeWaitError(None, 5), g.SlowModeWait, "SLOWMODE_WAIT"),
    (errors.AuthKeyUnregisteredError(None), g.AuthKeyUnregistered, "AUTH_KEY_UNREGISTERED"),
    (errors.AuthKeyNotFound(), g.AuthKeyUnregistered, "AUTH_KEY_UNREGISTERED"),
    (errors.SessionRevokedError(None), g.SessionRevoked, "SESSION_REVOKED"),
    (errors.SessionExpiredError(None), g.SessionRevoked, "SESSION_REVOKED"),
    (errors.AuthKeyDuplicatedError(None), g.AuthKeyDuplicated, "AUTH_KEY_DUPLICATED"),
    (errors.UserDeactivatedError(None), g.Unauthorized, "AUTH_KEY_INVALID"),
    (errors.UserDeactivatedBanError(None), g.Unauthorized, "AUTH_KEY_INVALID"),
    (errors.AuthKeyInvalidError(None), g.Unauthorized, "AUTH_KEY_INVALID"),
    (errors.ChatWriteForbiddenError(None), g.WriteForbidden, "CHAT_WRITE_FORBIDDEN"),
    (errors.UserBannedInChannelError(None), g.WriteForbidden, "CHAT_WRITE_FORBIDDEN"),
    (errors.PeerIdInvalidError(None), g.PeerInvalid, "PEER_ID_INVALID"),
    (errors.ChannelPrivateError(None), g.PeerInvalid, "PEER_ID_INVALID"),
    (errors.RandomIdDuplicateError(None), g.RandomIdDuplicate, "RANDOM_ID_DUPLICATE"),
    (errors.PhoneNumberInvalidError(None), g.PhoneNumberInvalid, "PHONE_NUMBER_INVALID"),
    (errors.PhoneNumberBannedError(None), g.PhoneNumberBanned, "PHONE_NUMBER_BANNED"),
    (errors.PhoneCodeInvalidError(None), g.PhoneCodeInvalid, "PHONE_CODE_INVALID"),
    (errors.PhoneCodeExpiredError(None), g.PhoneCodeExpired, "PHONE_CODE_EXPIRED"),
    (errors.SessionPasswordNeededError(None), g.PasswordNeeded, "SESSION_PASSWORD_NEEDED"),
    (errors.PasswordHashInvalidError(None), g.PasswordInvalid, "PASSWORD_HASH_INVALID"),
    (errors.PhoneNumberFloodError(None), g.BadRequest, "PHONE_NUMBER_FLOOD"),
    (errors.MessageTooLongError(None), g.BadRequest, "MESSAGE_TOO_LONG"),
    (errors.RpcCallFailError(None), g.NetworkError, "NETWORK"),
    (errors.TimedOutError(None, "Timeout", -503), g.NetworkError, "NETWORK"),
    (ConnectionError("Cannot send requests while disconnected"), g.NetworkError, "NETWORK"),
    (asyncio.IncompleteReadError(b"", 8), g.NetworkError, "NETWORK"),
    (TimeoutError(), g.NetworkError, "NETWORK"),
]


@pytest.mark.parametrize(
    ("exc", "expected", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
def test_mapping(exc: BaseException, expected: type[g.GatewayError], code: str) -> None:
    mapped = map_error(exc)
    assert type(mapped) is expected
    assert mapped.code == code


def test_waits_carry_their_seconds() -> None:
    flood = map_error(errors.FloodWaitError(None, 30))
    assert isinstance(flood, g.FloodWait)
    assert (flood.seconds, flood.retry_after, flood.retryable) == (30, 30.0, True)
    slow = map_error(errors.SlowModeWaitError(None, 5))
    assert isinstance(slow, g.SlowModeWait) and slow.seconds == 5


def test_raw_rpc_errors_as_telegram_sends_them() -> None:
    request = functions.messages.SendMessageRequest(
        peer=types.InputPeerEmpty(), message="x", random_id=1
    )
    flood = map_error(errors.rpc_message_to_error(types.RpcError(420, "FLOOD_WAIT_42"), request))
    assert isinstance(flood, g.FloodWait) and flood.seconds == 42
    dup = map_error(
        errors.rpc_message_to_error(types.RpcError(500, "RANDOM_ID_DUPLICATE"), request)
    )
    assert isinstance(dup, g.RandomIdDuplicate) and dup.permanent
    unknown = map_error(errors.rpc_message_to_error(types.RpcError(400, "SOMETHING_NEW"), request))
    assert isinstance(unknown, g.BadRequest) and unknown.code == "SOMETHING_NEW"


def test_ends_session_exactly_for_dead_credentials() -> None:
    ending = {type(map_error(e)) for e, _, _ in CASES if map_error(e).ends_session}  # type: ignore[union-attr]
    assert ending == {g.AuthKeyUnregistered, g.SessionRevoked, g.AuthKeyDuplicated, g.Unauthorized}


def test_specific_rows_come_before_their_base_classes() -> None:
    """A row never follows a row for one of its base classes (it would never match)."""
    seen: list[type[BaseException]] = []
    for cls, _ in TABLE:
        shadowing = [base for base in seen if issubclass(cls, base)]
        assert not shadowing, f"{cls.__name__} is shadowed by {shadowing[0].__name__}"
        seen.append(cls)


def test_bugs_are_not_mapped() -> None:
    assert map_error(ValueError("boom")) is None
    assert map_error(KeyError("x")) is None
    already = g.PeerInvalid()
    assert map_error(already) is already


def test_messages_name_no_secrets() -> None:
    secret_hash = "c0ffee-phone-code-hash"
    request: Any = functions.auth.SignInRequest(
        phone_number="+447700900123", phone_code_hash=secret_hash, phone_code="12345"
    )
    for exc in (
        errors.PhoneCodeInvalidError(request),
        errors.rpc_message_to_error(types.RpcError(400, "WEIRD_ERROR"), request),
        errors.rpc_message_to_error(types.RpcError(500, "INTERNAL"), request),
    ):
        mapped = map_error(exc)
        assert mapped is not None
        for text in (str(mapped), mapped.message, repr(mapped)):
            assert secret_hash not in text and "12345" not in text and "+4477" not in text
