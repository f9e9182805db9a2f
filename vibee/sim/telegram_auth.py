"""Authorization in the sim: keys (the gateway's credential), login codes, 2FA, QR tokens.

A key is what a real client's auth key is: issued fresh (``new_key``), then authorized for
one account by a login (code, then password if the account has one; or a QR token the
control API "scans"). Revoking an account kills its keys: calls with them raise
SessionRevoked (or AuthKeyDuplicated); a key the sim never issued is AuthKeyUnregistered.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass, field

from vibee.sim.telegram_state import Account, Listener, World
from vibee.telegram.gateway import (
    AuthKeyDuplicated,
    AuthKeyUnregistered,
    BadRequest,
    GatewayError,
    PasswordInvalid,
    PasswordNeeded,
    PhoneCodeExpired,
    PhoneCodeInvalid,
    PhoneNumberBanned,
    PhoneNumberInvalid,
    SessionRevoked,
    Unauthorized,
)

CODE_LENGTH = 5
_PHONE_JUNK = re.compile(r"[\s\-().]")


def normalize_phone(phone: str) -> str | None:
    """The digits of an international phone number, or None if it is not one."""
    digits = _PHONE_JUNK.sub("", phone).removeprefix("+")
    return digits if digits.isdigit() and 5 <= len(digits) <= 15 else None


@dataclass(slots=True, eq=False)
class QrToken:
    """A QR login token bound to the key that asked for it."""

    token: str
    key: Key
    expires_at: float
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    password_needed: bool = False


@dataclass(slots=True, eq=False)
class Key:
    """One credential: ``fresh`` → (``password`` →) ``authorized`` → ``revoked``/``duplicated``."""

    key: str
    status: str = "fresh"
    account: Account | None = None
    listeners: set[Listener] = field(default_factory=set)
    qr: QrToken | None = None


@dataclass(slots=True)
class LoginCode:
    """The last code sent to a phone."""

    code: str
    phone_code_hash: str
    expires_at: float


class Auth:
    """Keys, codes and QR tokens over a :class:`World`."""

    def __init__(self, world: World, *, code_ttl: float = 300.0, qr_ttl: float = 30.0) -> None:
        self.world = world
        self.code_ttl = code_ttl
        self.qr_ttl = qr_ttl
        self.keys: dict[str, Key] = {}
        self.codes: dict[str, LoginCode] = {}
        self.qr_tokens: dict[str, QrToken] = {}

    def new_key(self) -> Key:
        """A fresh, unauthorized key."""
        key = Key(secrets.token_hex(32))
        self.keys[key.key] = key
        return key

    def key(self, key_hex: str) -> Key:
        """The key; AuthKeyUnregistered if the sim never issued it."""
        key = self.keys.get(key_hex)
        if key is None:
            raise AuthKeyUnregistered()
        return key

    def attach(self, listener: Listener, key: Key, last_seq: int | None) -> Account | None:
        """Attach ``listener``: bound to the account if ``key`` is authorized, else waiting."""
        if key.status == "revoked":
            raise SessionRevoked()
        if key.status == "duplicated":
            raise AuthKeyDuplicated()
        if key.status == "authorized" and key.account is not None:
            self.world.bind(listener, key.account, last_seq)
            return key.account
        key.listeners.add(listener)
        return None

    def detach(self, listener: Listener, key: Key) -> None:
        """``listener`` is gone."""
        key.listeners.discard(listener)
        self.world.unbind(listener)

    def account(self, key: Key) -> Account:
        """The account ``key`` is authorized for, or the error a call with it gets."""
        if key.status == "authorized" and key.account is not None:
            return key.account
        if key.status == "password":
            raise PasswordNeeded()
        if key.status == "revoked":
            raise SessionRevoked()
        if key.status == "duplicated":
            raise AuthKeyDuplicated()
        raise Unauthorized("This session is not logged in yet.")

    def authorize(self, key: Key, account: Account) -> None:
        """``key`` now speaks for ``account``; waiting listeners start receiving updates."""
        key.status = "authorized"
        key.account = account
        for listener in key.listeners:
            self.world.bind(listener, account, None)
        key.listeners.clear()

    def kill(self, account: Account, error: GatewayError) -> int:
        """Revoke (or duplicate-kill) every live key of ``account``; ends its connections."""
        status = "duplicated" if isinstance(error, AuthKeyDuplicated) else "revoked"
        killed = 0
        for key in self.keys.values():
            if key.account is account and key.status in ("authorized", "password"):
                key.status = status
                killed += 1
        for listener in list(account.listeners):
            listener.end(error.code, error.message)
        return killed

    # --- code login -------------------------------------------------------------------------

    def send_code(self, phone: str) -> LoginCode:
        """Send (that is, store) a login code for the phone's account."""
        digits = normalize_phone(phone)
        account = self.world.phones.get(digits) if digits else None
        if digits is None or account is None:
            raise PhoneNumberInvalid()
        if account.banned:
            raise PhoneNumberBanned()
        code = "".join(str(secrets.randbelow(10)) for _ in range(CODE_LENGTH))
        sent = LoginCode(code, secrets.token_hex(8), time.time() + self.code_ttl)
        self.codes[digits] = sent
        return sent

    def expire_code(self, phone: str) -> bool:
        """Make the phone's pending code expired; False if there is none."""
        sent = self.codes.get(normalize_phone(phone) or "")
        if sent is None:
            return False
        sent.expires_at = 0.0
        return True

    def sign_in(self, key: Key, phone: str, code: str, phone_code_hash: str) -> bool:
        """Check the code; True when authorized, False when the 2FA password comes next."""
        digits = normalize_phone(phone)
        account = self.world.phones.get(digits) if digits else None
        if digits is None or account is None:
            raise PhoneNumberInvalid()
        if account.banned:
            raise PhoneNumberBanned()
        sent = self.codes.get(digits)
        if sent is None or sent.phone_code_hash != phone_code_hash or sent.expires_at < time.time():
            raise PhoneCodeExpired()
        if code.strip() != sent.code:
            raise PhoneCodeInvalid()
        del self.codes[digits]
        return self._authenticated(key, account)

    def check_password(self, key: Key, password: str) -> Account:
        """The 2FA step after a code or QR login."""
        account = key.account
        if key.status != "password" or account is None:
            raise BadRequest("No password was asked for on this session.", "PASSWORD_NOT_ASKED")
        if password != account.password:
            raise PasswordInvalid()
        self.authorize(key, account)
        return account

    def _authenticated(self, key: Key, account: Account) -> bool:
        if account.password:
            key.status = "password"
            key.account = account
            return False
        self.authorize(key, account)
        return True

    # --- QR login ---------------------------------------------------------------------------

    def qr_start(self, key: Key) -> QrToken:
        """A new QR token for ``key`` (replacing its previous one)."""
        if key.status != "fresh":
            raise BadRequest("This session is already logged in.", "ALREADY_AUTHORIZED")
        if key.qr is not None:
            self.qr_tokens.pop(key.qr.token, None)
        qr = QrToken(secrets.token_urlsafe(16), key, time.time() + self.qr_ttl)
        key.qr = qr
        self.qr_tokens[qr.token] = qr
        return qr

    def qr_accept(self, token: str, account: Account) -> QrToken | None:
        """``account`` scans ``token`` (the control API); None if unknown or expired."""
        qr = self.qr_tokens.pop(token, None)
        if qr is None or qr.expires_at < time.time() or qr.key.status != "fresh":
            return None
        qr.password_needed = not self._authenticated(qr.key, account)
        qr.accepted.set()
        return qr
