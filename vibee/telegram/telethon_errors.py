"""Telethon's exceptions mapped to the gateway's error tree, in one table.

:func:`map_error` walks :data:`TABLE` in order and returns the gateway error for the first
row whose Telethon class matches (subclasses included, so specific rows come before the
base classes they derive from: ``SessionPasswordNeededError`` is a 401 like
``AuthKeyUnregisteredError`` but means "ask for the 2FA password", and
``RandomIdDuplicateError`` is a 500 like the transient server errors but means "already
sent"). Exceptions that are not Telethon's or the network's map to None: they are bugs
and propagate unchanged.

Messages are the gateway's own (``default_message``) or name Telegram's error code only:
never the request, the phone code hash, the api hash or the auth key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from telethon import errors
from telethon.errors.rpcerrorlist import rpc_errors_dict

from vibee.telegram.gateway import (
    AuthKeyDuplicated,
    AuthKeyUnregistered,
    BadRequest,
    FloodWait,
    GatewayError,
    NetworkError,
    PasswordInvalid,
    PasswordNeeded,
    PeerInvalid,
    PhoneCodeExpired,
    PhoneCodeInvalid,
    PhoneNumberBanned,
    PhoneNumberInvalid,
    RandomIdDuplicate,
    SessionRevoked,
    SlowModeWait,
    Unauthorized,
    WriteForbidden,
)

Mapper = Callable[[BaseException], GatewayError]


def _seconds(exc: BaseException) -> int:
    value = getattr(exc, "seconds", 0)
    return int(value) if isinstance(value, int) and value >= 0 else 0


_NAMES: dict[type, str] = {cls: name for name, cls in rpc_errors_dict.items()}


def _telegram_code(exc: BaseException) -> str:
    """Telegram's error name (``MESSAGE_TOO_LONG``): Telethon's class for it, or the name an
    unknown error arrived with."""
    known = _NAMES.get(type(exc))
    if known is not None:
        return known
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message.upper()
    return type(exc).__name__.removesuffix("Error").upper()


def _bad_request(exc: BaseException) -> GatewayError:
    code = _telegram_code(exc)
    return BadRequest(f"Telegram rejected the request ({code}).", code)


def _network(exc: BaseException) -> GatewayError:
    return NetworkError(f"Could not reach Telegram ({type(exc).__name__}); it will be retried.")


def _server(exc: BaseException) -> GatewayError:
    return NetworkError(f"Telegram had an internal error ({_telegram_code(exc)}); retrying.")


def _const(cls: type[GatewayError], message: str | None = None) -> Mapper:
    return lambda _exc: cls(message)


TABLE: tuple[tuple[type[BaseException], Mapper], ...] = (
    # waits: the caller waits `seconds`, then sends the same request again
    (errors.FloodWaitError, lambda e: FloodWait(_seconds(e))),
    (errors.FloodPremiumWaitError, lambda e: FloodWait(_seconds(e))),
    (errors.FloodTestPhoneWaitError, lambda e: FloodWait(_seconds(e))),
    (errors.SlowModeWaitError, lambda e: SlowModeWait(_seconds(e))),
    # login (before the 401/400 bases below)
    (errors.SessionPasswordNeededError, _const(PasswordNeeded)),
    (errors.PhoneNumberInvalidError, _const(PhoneNumberInvalid)),
    (errors.PhoneNumberBannedError, _const(PhoneNumberBanned)),
    (errors.PhoneCodeInvalidError, _const(PhoneCodeInvalid)),
    (errors.PhoneCodeEmptyError, _const(PhoneCodeInvalid)),
    (errors.PhoneCodeExpiredError, _const(PhoneCodeExpired)),
    (errors.PhoneCodeHashEmptyError, _const(PhoneCodeExpired)),
    (errors.PasswordHashInvalidError, _const(PasswordInvalid)),
    (
        errors.PhoneNumberFloodError,
        lambda _e: BadRequest(
            "Too many login attempts for this phone number: try again later.",
            "PHONE_NUMBER_FLOOD",
        ),
    ),
    # the credential is dead: ends the session
    (errors.AuthKeyUnregisteredError, _const(AuthKeyUnregistered)),
    (errors.AuthKeyNotFound, _const(AuthKeyUnregistered)),  # transport-level 404
    (errors.SessionRevokedError, _const(SessionRevoked)),
    (errors.SessionExpiredError, _const(SessionRevoked)),
    (errors.AuthKeyDuplicatedError, _const(AuthKeyDuplicated)),
    (
        errors.UserDeactivatedBanError,
        _const(Unauthorized, "Telegram banned this account: it cannot be used any more."),
    ),
    (
        errors.UserDeactivatedError,
        _const(Unauthorized, "This Telegram account was deleted: it cannot be used any more."),
    ),
    (errors.UnauthorizedError, _const(Unauthorized)),  # AUTH_KEY_INVALID, _PERM_EMPTY, …
    # sending
    (errors.RandomIdDuplicateError, _const(RandomIdDuplicate)),
    (errors.ChatWriteForbiddenError, _const(WriteForbidden)),
    (errors.ChatSendPlainForbiddenError, _const(WriteForbidden)),
    (errors.ChatRestrictedError, _const(WriteForbidden)),
    (errors.ChatAdminRequiredError, _const(WriteForbidden)),
    (errors.UserBannedInChannelError, _const(WriteForbidden)),
    (errors.UserIsBlockedError, _const(WriteForbidden)),
    (errors.PeerIdInvalidError, _const(PeerInvalid)),
    (errors.ChannelInvalidError, _const(PeerInvalid)),
    (errors.ChannelPrivateError, _const(PeerInvalid)),
    (errors.ChatIdInvalidError, _const(PeerInvalid)),
    (errors.InputUserDeactivatedError, _const(PeerInvalid)),
    # Telegram's transient failures and the network
    (errors.ServerError, _server),  # 500 (RPC_CALL_FAIL, …)
    (errors.TimedOutError, _server),  # -503
    (errors.InvalidDCError, _server),  # 303 migrations Telethon did not follow
    (errors.RPCError, _bad_request),  # any other 400/403/406…
    (errors.InvalidBufferError, _network),
    (errors.SecurityError, _network),
    (ConnectionError, _network),
    (asyncio.IncompleteReadError, _network),
    (TimeoutError, _network),
    (OSError, _network),
)


def map_error(exc: BaseException) -> GatewayError | None:
    """The gateway error for a Telethon or network exception; None for anything else."""
    if isinstance(exc, GatewayError):
        return exc
    for cls, mapper in TABLE:
        if isinstance(exc, cls):
            return mapper(exc)
    return None
