"""Connecting a Telegram account: phone → code → (2FA password) → authorized, or QR.

Every step's state lives in Postgres (the session row: its step, the ``phone_code_hash``
and the sealed credential of the connection that asked for the code), never only in a
client object, so a login started on one instance can be finished on another: each step
opens a gateway from the stored credential, does its one call and disconnects.

Exceptions: the gateway's :class:`~vibee.telegram.gateway.LoginError` tree (each with a
message a person understands), plus :class:`LoginStepError` for a step asked out of order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from vibee.secrets import Keyring
from vibee.store import Executor, sessions
from vibee.telegram.gateway import (
    Authorized,
    Gateway,
    LoginError,
    PasswordRequired,
    QrLogin,
)
from vibee.telegram.session_store import seal, unseal

log = logging.getLogger("vibee.telegram.login")

GatewayFactory = Callable[[int, bytes | None], Gateway]
"""Builds the gateway of session ``id`` from its (decrypted) credential, or None when new."""


class LoginStepError(LoginError):
    """The step does not follow from where the login stands (e.g. a code before a phone)."""

    code = "LOGIN_STEP"
    default_message = "This login step does not apply now: start again with the phone number."


@dataclass(frozen=True, slots=True)
class Step:
    """Where a login stands after a step."""

    session_id: int
    state: Literal["code_sent", "password_needed", "authorized"]
    telegram_user_id: int | None = None


class LoginFlow:
    """The login steps for one VIBEE user's accounts."""

    def __init__(
        self,
        db: Executor,
        keyring: Keyring,
        gateways: GatewayFactory,
        on_authorized: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._gateways = gateways
        self._on_authorized = on_authorized

    async def _open(self, row: sessions.SessionRow) -> Gateway:
        credential = None
        if row.credential is not None:
            credential = unseal(self._keyring, row.id, row.credential)
        gateway = self._gateways(row.id, credential)
        await gateway.connect()
        return gateway

    async def start(self, user_id: int, phone: str) -> Step:
        """Ask Telegram to send a login code to ``phone``."""
        row = await sessions.create(self._db, user_id, phone)
        gateway = self._gateways(row.id, None)
        try:
            await gateway.connect()
            state = await gateway.send_code(phone)
            await self.save_step(user_id, row.id, "code_sent", state.phone_code_hash, gateway)
        finally:
            await gateway.disconnect()
        return Step(row.id, "code_sent")

    async def submit_code(self, user_id: int, session_id: int, code: str) -> Step:
        """The code from the Telegram app: authorized, or the 2FA password is needed next."""
        row = await sessions.get(self._db, user_id, session_id)
        if row.state != "code_sent" or not row.phone or not row.phone_code_hash:
            raise LoginStepError()
        gateway = await self._open(row)
        try:
            result = await gateway.sign_in(row.phone, code.strip(), row.phone_code_hash)
            if isinstance(result, PasswordRequired):
                await self.save_step(
                    user_id, session_id, "password_needed", row.phone_code_hash, gateway
                )
                return Step(session_id, "password_needed")
            return await self.authorized(user_id, session_id, result)
        finally:
            await gateway.disconnect()

    async def submit_password(self, user_id: int, session_id: int, password: str) -> Step:
        """The two-step verification password."""
        row = await sessions.get(self._db, user_id, session_id)
        if row.state != "password_needed":
            raise LoginStepError()
        gateway = await self._open(row)
        try:
            return await self.authorized(
                user_id, session_id, await gateway.check_password(password)
            )
        finally:
            await gateway.disconnect()

    async def qr(
        self,
        user_id: int,
        show: Callable[[QrLogin], None],
        password: Callable[[], Awaitable[str]],
        timeout_s: float = 300.0,
    ) -> Step:
        """A QR login in one process: ``show`` each (refreshed) code until it is scanned,
        then ask ``password`` if the account has two-step verification."""
        row = await sessions.create(self._db, user_id, None)
        gateway = self._gateways(row.id, None)
        try:
            await gateway.connect()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                token = await gateway.qr_start()
                show(token)
                left = min(deadline - loop.time(), token.expires_at.timestamp() - time.time())
                result = await gateway.qr_wait(max(1.0, left))
                if result is not None:
                    break
                if loop.time() >= deadline:
                    raise LoginStepError("The QR code was not scanned in time.")
            if isinstance(result, PasswordRequired):
                while True:
                    try:
                        result = await gateway.check_password(await password())
                        break
                    except LoginError as exc:
                        if exc.code != "PASSWORD_HASH_INVALID":
                            raise
                        log.info("wrong 2FA password, asking again")
            return await self.authorized(user_id, row.id, result)
        finally:
            await gateway.disconnect()

    async def save_step(
        self, user_id: int, session_id: int, state: str, code_hash: str | None, gateway: Gateway
    ) -> None:
        """Record a login step with the gateway's credential (sealed), for any instance."""
        sealed, key_id = None, None
        if gateway.credential is not None:
            sealed, key_id = seal(self._keyring, session_id, gateway.credential)
        await sessions.save_login_step(
            self._db, user_id, session_id, state, code_hash, sealed, key_id
        )

    async def authorized(self, user_id: int, session_id: int, result: Authorized) -> Step:
        """The login finished: keep the sealed credential and start the session."""
        sealed, key_id = seal(self._keyring, session_id, result.credential)
        await sessions.save_authorized(
            self._db, user_id, session_id, result.user.id, sealed, key_id
        )
        log.info("telegram account connected", extra={"session_id": session_id})
        if self._on_authorized is not None:
            await self._on_authorized(session_id)
        return Step(session_id, "authorized", result.user.id)
