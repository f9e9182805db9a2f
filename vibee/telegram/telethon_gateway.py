"""``TelethonGateway``: the :class:`~vibee.telegram.gateway.Gateway` Protocol over Telethon 1.45.

One gateway, one ``TelegramClient``, one account. Built with:

* ``flood_sleep_threshold`` low (default 0): Telethon raises FloodWait / SlowModeWait
  instead of sleeping silently; they become :class:`FloodWait` / :class:`SlowModeWait`
  carrying the seconds, and the session actor waits and sends again;
* ``sequential_updates=True`` and ``catch_up=True``: handlers run one at a time in pts
  order, and a reconnect fetches what was missed (getDifference) from the update state
  the session saved; ``connect(last_seq)`` rewinds that state to ``last_seq`` when the
  saved one is newer (or missing), so everything after the last *stored* update comes
  again (:mod:`vibee.telegram.telethon_events` explains ``seq``);
* ``raise_last_call_error=True`` and one request retry (enough for Telethon to follow a
  data-centre migration); the connection is retried ``connection_retries`` times by
  Telethon, and after a drop this gateway reconnects by itself with exponential backoff
  and jitter (:class:`Disconnected`, then :class:`Reconnected` in :meth:`events`).

Sends are ``messages.sendMessage`` with the caller's ``random_id`` (never Telethon's
``send_message``, which picks its own), so a resend after a crash is rejected by Telegram
as RANDOM_ID_DUPLICATE. The code step is an explicit ``auth.signIn`` with the stored
``phone_code_hash``: a login started on one instance finishes on another. Telegram does
not send a client the updates of its own sends, so they never appear in :meth:`events`
(messages from the owner's other devices do, as ``outgoing``).

Pass a :class:`~vibee.telegram.telethon_session.TelethonSession` to keep Telethon's update
state and entities in Postgres (:func:`telethon_gateways` builds one per session id);
without one the gateway uses Telethon's ``MemorySession`` and catch-up after a restart
relies on ``last_seq`` alone.

An error that ends the session (revoked, unregistered or duplicated key, deactivated
account) — from a call, from Telethon's update loop or from the transport — closes
:meth:`events` with :class:`LoggedOut`, disconnects, and makes every later call (connect
included) raise it again: there is no reconnect loop on a dead credential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from telethon import TelegramClient, functions, utils
from telethon import password as srp
from telethon.sessions import MemorySession
from telethon.tl import types

from vibee.config import TelegramConfig
from vibee.secrets import Keyring
from vibee.store import Executor
from vibee.telegram import telethon_values as values
from vibee.telegram.gateway import (
    Authorized,
    BadRequest,
    Dialog,
    GatewayError,
    LoginError,
    LoginResult,
    LoginState,
    Message,
    NotConnected,
    PasswordNeeded,
    PasswordRequired,
    PeerInvalid,
    QrLogin,
    User,
)
from vibee.telegram.telethon_connection import TelethonConnection
from vibee.telegram.telethon_credential import (
    CredentialError,
    TelethonCredential,
    apply_credential,
    credential_of,
)
from vibee.telegram.telethon_events import StreamEvents
from vibee.telegram.telethon_session import TelethonSession


class TelethonGateway:
    """One Telegram account over Telethon (see the module docstring)."""

    def __init__(
        self,
        api_id: int,
        api_hash: str,
        credential: bytes | None = None,
        *,
        session: Any = None,
        device_model: str = "VIBEE",
        app_version: str = "0.1",
        flood_sleep_threshold: int = 0,
        connection_retries: int = 3,
        retry_delay: float = 1.0,
        max_reconnect_delay: float = 60.0,
        call_timeout: float = 60.0,
        event_buffer: int = 256,
    ) -> None:
        session = session if session is not None else MemorySession()
        user_id = 0
        self._unreadable: GatewayError | None = None
        if credential is not None:
            try:
                decoded = TelethonCredential.decode(credential)
            except CredentialError as exc:  # another backend's, or damaged: connect() says so
                self._unreadable = BadRequest(f"{exc}: log in again.", "BAD_CREDENTIAL")
            else:
                apply_credential(session, decoded)
                user_id = decoded.user_id
        if isinstance(session, TelethonSession):
            session.user_id = user_id
        client = TelegramClient(
            session,
            api_id,
            api_hash,
            device_model=device_model,
            app_version=app_version,
            flood_sleep_threshold=flood_sleep_threshold,
            connection_retries=connection_retries,
            retry_delay=retry_delay,
            request_retries=1,
            raise_last_call_error=True,
            auto_reconnect=True,
            sequential_updates=True,
            catch_up=True,
        )
        self._conn = TelethonConnection(
            client,
            session,
            user_id=user_id,
            fresh=credential is None,
            retry_delay=retry_delay,
            max_reconnect_delay=max_reconnect_delay,
            call_timeout=call_timeout,
            event_buffer=event_buffer,
        )
        self._qr: Any = None
        self._qr_task: asyncio.Task[Any] | None = None

    @classmethod
    def from_config(
        cls, config: TelegramConfig, api_hash: str, credential: bytes | None, session: Any = None
    ) -> TelethonGateway:
        """A gateway with ``[telegram]``'s api_id, device, flood and retry settings."""
        return cls(
            config.api_id,
            api_hash,
            credential,
            session=session,
            device_model=config.device_model,
            app_version=config.app_version,
            flood_sleep_threshold=config.flood_sleep_threshold_s,
            connection_retries=config.retry_attempts,
            retry_delay=config.retry_delay_s,
        )

    # --- Gateway properties -----------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The underlying ``TelegramClient`` (tests give it a fake ``_sender``)."""
        return self._conn.client

    @property
    def credential(self) -> bytes | None:
        """The :class:`TelethonCredential` to store (sealed); None before an auth key exists."""
        found = credential_of(self._conn.session, self._conn.user_id)
        return found.encode() if found is not None else None

    @property
    def last_seq(self) -> int | None:
        """The seq of the last update put into :meth:`events`."""
        return self._conn.last_seq

    # --- connection -------------------------------------------------------------------------

    async def connect(self, last_seq: int | None = None) -> User | None:
        """Connect; see :meth:`Gateway.connect`. A dead credential raises at once, and so
        does one that is not a Telethon credential (BadRequest ``BAD_CREDENTIAL``)."""
        if self._unreadable is not None:
            raise self._unreadable
        return await self._conn.connect(last_seq)

    async def disconnect(self) -> None:
        """Close the connection, write the session state, end :meth:`events`. Idempotent."""
        await self._conn.disconnect()

    def events(self) -> StreamEvents:
        """The account's events through a bounded buffer (one consumer at a time)."""
        conn = self._conn
        return StreamEvents(lambda: conn.stream)

    # --- calls ------------------------------------------------------------------------------

    async def _peer(self, chat_id: int) -> Any:
        try:
            return await self._conn.guarded(lambda: self._conn.client.get_input_entity(chat_id))
        except ValueError:
            raise PeerInvalid() from None

    async def me(self) -> User:
        """The account's own user."""
        users = await self._conn.call(functions.users.GetUsersRequest(id=[types.InputUserSelf()]))
        return values.user_from(users[0])

    async def dialogs(self, *, limit: int = 100, offset: int = 0) -> list[Dialog]:
        """A page of the chat list (Telethon pages by date; this skips ``offset`` chats)."""
        found = await self._conn.guarded(
            lambda: self._conn.client.get_dialogs(limit=offset + limit)
        )
        return [values.dialog_from(d) for d in list(found)[offset:]]

    async def history(
        self, chat_id: int, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        """A page of the chat's messages, newest first, older than ``before_id``."""
        peer = await self._peer(chat_id)
        found = await self._conn.guarded(
            lambda: self._conn.client.get_messages(peer, limit=limit, max_id=before_id or 0)
        )
        page = (values.message_from(m, self._conn.user_id) for m in found)
        return [m for m in page if m is not None]

    async def send_message(
        self, chat_id: int, text: str, *, random_id: int, reply_to: int | None = None
    ) -> int:
        """``messages.sendMessage`` with our ``random_id``; returns the new message's id."""
        peer = await self._peer(chat_id)
        request = functions.messages.SendMessageRequest(
            peer=peer,
            message=text,
            random_id=random_id,
            reply_to=types.InputReplyToMessage(reply_to_msg_id=reply_to) if reply_to else None,
        )
        return values.sent_message_id(await self._conn.call(request), random_id)

    async def send_typing(self, chat_id: int) -> None:
        """``messages.setTyping`` with the typing action."""
        peer = await self._peer(chat_id)
        await self._conn.call(
            functions.messages.SetTypingRequest(peer=peer, action=types.SendMessageTypingAction())
        )

    # --- login ------------------------------------------------------------------------------

    async def send_code(self, phone: str) -> LoginState:
        """Ask Telegram for a login code; the LoginState carries the ``phone_code_hash``."""
        sent = await self._conn.guarded(lambda: self._conn.client.send_code_request(phone))
        return LoginState(phone, sent.phone_code_hash, "code_sent", values.code_length(sent))

    async def sign_in(self, phone: str, code: str, phone_code_hash: str) -> LoginResult:
        """An explicit ``auth.signIn`` with the stored hash (works on any instance)."""
        request = functions.auth.SignInRequest(
            phone_number=utils.parse_phone(phone) or phone,
            phone_code_hash=phone_code_hash,
            phone_code=str(code).strip(),
        )
        try:
            result = await self._conn.call(request)
        except PasswordNeeded:
            return PasswordRequired(await self._password_hint())
        if isinstance(result, types.auth.AuthorizationSignUpRequired):
            raise BadRequest(
                "This phone number has no Telegram account: sign up in a Telegram app first.",
                "PHONE_NUMBER_UNOCCUPIED",
            )
        return await self._signed_in(result.user)

    async def check_password(self, password: str) -> Authorized:
        """The 2FA step: SRP check computed off the event loop (PBKDF2, 100,000 rounds)."""
        settings = await self._conn.call(functions.account.GetPasswordRequest())
        try:
            check = await asyncio.to_thread(srp.compute_check, settings, password)
        except ValueError:
            raise BadRequest(
                "Telegram asked for an unsupported password check.", "PASSWORD_ALGO"
            ) from None
        result = await self._conn.call(functions.auth.CheckPasswordRequest(password=check))
        return await self._signed_in(result.user)

    async def qr_start(self) -> QrLogin:
        """A QR login token (a new one once the current one expired)."""
        client = self._conn.client
        qr = self._qr
        waiting = qr is not None and self._qr_task is not None and not self._qr_task.done()
        if not waiting:
            if qr is None:
                qr = self._qr = await self._conn.guarded(lambda: client.qr_login())
            else:
                await self._conn.guarded(lambda: qr.recreate())
            self._qr_task = self._conn.own(
                asyncio.create_task(self._qr_waiter(qr), name="telethon-qr")
            )
        return QrLogin(url=qr.url, expires_at=qr.expires)

    async def _qr_waiter(self, qr: Any) -> Any:
        """Telethon's ``QRLogin.wait()`` (until the token expires), its outcome as a value."""
        try:
            return await qr.wait()
        except Exception as exc:
            return exc

    async def qr_wait(self, timeout: float) -> LoginResult | None:
        """Wait up to ``timeout`` s for the scan; None if not scanned (or expired: start a
        new one). The wait keeps running between calls, so a scan is never missed."""
        task = self._qr_task
        if task is None:
            raise LoginError("No QR login is in progress: start one first.")
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            return None
        self._qr_task = None
        outcome = task.result()
        if isinstance(outcome, TimeoutError):
            return None
        if isinstance(outcome, Exception):
            error = await self._conn.fail(outcome)
            if isinstance(error, PasswordNeeded):
                return PasswordRequired(await self._password_hint())
            raise error if error is not None else outcome
        return self._authorized_result(outcome)

    async def _password_hint(self) -> str:
        try:
            settings = await self._conn.call(functions.account.GetPasswordRequest())
        except GatewayError:
            return ""
        return str(getattr(settings, "hint", "") or "")

    async def _signed_in(self, tl_user: Any) -> Authorized:
        # what Telethon's own sign_in does next: remember who we are, load the update state
        await self._conn.guarded(lambda: self._conn.client._on_login(tl_user))
        return self._authorized_result(tl_user)

    def _authorized_result(self, tl_user: Any) -> Authorized:
        user = self._conn.became_authorized(tl_user)
        credential = self.credential
        if credential is None:  # cannot happen: signing in needs an auth key
            raise NotConnected()
        return Authorized(user, credential)


def telethon_gateways(
    config: TelegramConfig, api_hash: str, keyring: Keyring, db: Executor
) -> Callable[[int, bytes | None], TelethonGateway]:
    """A ``GatewayFactory``: the gateway of session ``id``, its session kept in Postgres."""

    def build(session_id: int, credential: bytes | None) -> TelethonGateway:
        session = TelethonSession(session_id, keyring, db)
        return TelethonGateway.from_config(config, api_hash, credential, session)

    return build
