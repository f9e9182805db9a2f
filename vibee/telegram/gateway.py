"""The one seam between VIBEE and Telegram: the :class:`Gateway` Protocol, its values and errors.

One gateway instance speaks for one Telegram account. Implementations: ``SimGateway``
(the simulated network, ``vibee.telegram.sim_gateway``) and, later, ``TelethonGateway``.
Both pass the same contract suite (``tests/integration/telegram/contract.py``).

Exceptions (``code`` is Telegram's error name, also used on the sim's wire)::

    GatewayError                  ``permanent``: the same request will never succeed;
    │                             ``retry_after``: seconds to wait first (or None);
    │                             ``ends_session``: the credential is dead, log in again
    ├── FloodWait(seconds)        FLOOD_WAIT            retryable after ``seconds``
    ├── SlowModeWait(seconds)     SLOWMODE_WAIT         retryable after ``seconds``
    ├── Unauthorized              AUTH_KEY_INVALID      permanent, ends the session
    │   ├── SessionRevoked        SESSION_REVOKED       (terminated from another device)
    │   └── AuthKeyUnregistered   AUTH_KEY_UNREGISTERED (Telegram forgot the key)
    ├── AuthKeyDuplicated         AUTH_KEY_DUPLICATED   permanent, ends the session
    ├── WriteForbidden            CHAT_WRITE_FORBIDDEN  permanent
    ├── PeerInvalid               PEER_ID_INVALID       permanent
    ├── RandomIdDuplicate         RANDOM_ID_DUPLICATE   permanent: treat as "already sent"
    ├── BadRequest                any other 400 (MESSAGE_EMPTY, MESSAGE_TOO_LONG, …)
    ├── NetworkError              NETWORK               retryable (the outcome is unknown:
    │   └── NotConnected          NOT_CONNECTED          resend with the same random_id)
    └── LoginError                                      permanent for that request
        ├── PhoneNumberInvalid    PHONE_NUMBER_INVALID
        ├── PhoneNumberBanned     PHONE_NUMBER_BANNED
        ├── PhoneCodeInvalid      PHONE_CODE_INVALID
        ├── PhoneCodeExpired      PHONE_CODE_EXPIRED
        ├── PasswordNeeded        SESSION_PASSWORD_NEEDED (a call made between code and password)
        └── PasswordInvalid       PASSWORD_HASH_INVALID

The credential a gateway needs to reconnect (the sim: an opaque key; Telethon: dc and auth
key) is an opaque ``bytes`` blob: :attr:`Gateway.credential`. The caller stores it encrypted
and passes it back to the constructor; the gateway never persists anything itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

# --- errors ---------------------------------------------------------------------------------


class GatewayError(Exception):
    """Telegram (or the way to it) refused or failed a request."""

    code: str = "GATEWAY_ERROR"
    permanent: ClassVar[bool] = True
    ends_session: ClassVar[bool] = False
    default_message: ClassVar[str] = "Telegram refused the request."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (after ``retry_after``, if set)."""
        return not self.permanent


class _Wait(GatewayError):
    """Telegram asks to wait ``seconds`` before the next request of this kind."""

    permanent = False
    template: ClassVar[str] = "wait {} s"

    def __init__(self, seconds: int, message: str | None = None) -> None:
        super().__init__(message or self.template.format(seconds))
        self.seconds = seconds
        self.retry_after = float(seconds)


class FloodWait(_Wait):
    """Flood control: wait ``seconds``, then the request will go through."""

    code = "FLOOD_WAIT"
    template = "Telegram asks to wait {} s before the next request (flood control)."


class SlowModeWait(_Wait):
    """The chat is in slow mode: wait ``seconds`` before sending there again."""

    code = "SLOWMODE_WAIT"
    template = "This chat is in slow mode: wait {} s before sending again."


class Unauthorized(GatewayError):
    """The credential is not (or no longer) authorized: the account must log in again."""

    code = "AUTH_KEY_INVALID"
    ends_session = True
    default_message = "The Telegram session is no longer authorized: log in again."


class SessionRevoked(Unauthorized):
    """The owner terminated this session from another device."""

    code = "SESSION_REVOKED"
    default_message = "The session was terminated from another device: log in again."


class AuthKeyUnregistered(Unauthorized):
    """Telegram does not know the credential (deleted, expired or never authorized)."""

    code = "AUTH_KEY_UNREGISTERED"
    default_message = "Telegram does not know this session any more: log in again."


class AuthKeyDuplicated(GatewayError):
    """The credential was used on two connections at once; Telegram destroyed it."""

    code = "AUTH_KEY_DUPLICATED"
    ends_session = True
    default_message = (
        "The session was used from two places at once and Telegram invalidated it: log in again."
    )


class WriteForbidden(GatewayError):
    """This account may not write in the chat (banned, muted, a channel it does not admin)."""

    code = "CHAT_WRITE_FORBIDDEN"
    default_message = "This account cannot write in this chat."


class PeerInvalid(GatewayError):
    """The chat or user does not exist or is not reachable from this account."""

    code = "PEER_ID_INVALID"
    default_message = "This chat or user does not exist or is not reachable from this account."


class RandomIdDuplicate(GatewayError):
    """A message with this ``random_id`` was already sent: the send already happened."""

    code = "RANDOM_ID_DUPLICATE"
    default_message = "This message was already sent (the same random_id was used before)."


class BadRequest(GatewayError):
    """Any other rejected request; ``code`` names Telegram's reason."""

    default_message = "Telegram rejected the request."

    def __init__(self, message: str | None = None, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.code = code


class NetworkError(GatewayError):
    """Telegram could not be reached or did not answer; the outcome of a send is unknown."""

    code = "NETWORK"
    permanent = False
    default_message = "Could not reach Telegram; the request will be retried."


class NotConnected(NetworkError):
    """The gateway is not connected (not yet, or it is reconnecting)."""

    code = "NOT_CONNECTED"
    default_message = "Not connected to Telegram right now; the request will be retried."


class LoginError(GatewayError):
    """A login step failed; the message tells the person what to do."""

    default_message = "The login failed."


class PhoneNumberInvalid(LoginError):
    """The phone number is malformed or not registered with Telegram."""

    code = "PHONE_NUMBER_INVALID"
    default_message = (
        "The phone number is invalid: use the international format, e.g. +44 7700 900123."
    )


class PhoneNumberBanned(LoginError):
    """Telegram banned the phone number."""

    code = "PHONE_NUMBER_BANNED"
    default_message = "This phone number is banned from Telegram."


class PhoneCodeInvalid(LoginError):
    """The login code is wrong (another try with the same code hash is allowed)."""

    code = "PHONE_CODE_INVALID"
    default_message = "The code is wrong: check it and try again."


class PhoneCodeExpired(LoginError):
    """The login code expired or its ``phone_code_hash`` is unknown: send a new code."""

    code = "PHONE_CODE_EXPIRED"
    default_message = "The code has expired: request a new one."


class PasswordNeeded(LoginError):
    """The code was accepted but the account has two-step verification."""

    code = "SESSION_PASSWORD_NEEDED"
    default_message = "This account has two-step verification: enter your password."


class PasswordInvalid(LoginError):
    """The two-step verification password is wrong."""

    code = "PASSWORD_HASH_INVALID"
    default_message = "The password is wrong: try again."


_BY_CODE: dict[str, type[GatewayError]] = {
    cls.code: cls
    for cls in (
        Unauthorized, SessionRevoked, AuthKeyUnregistered, AuthKeyDuplicated, WriteForbidden,
        PeerInvalid, RandomIdDuplicate, NetworkError, NotConnected, PhoneNumberInvalid,
        PhoneNumberBanned, PhoneCodeInvalid, PhoneCodeExpired, PasswordNeeded, PasswordInvalid,
    )
}  # fmt: skip


def error_from_code(code: str, message: str | None = None, seconds: int = 0) -> GatewayError:
    """The typed error for a Telegram-style ``code`` (unknown codes become BadRequest)."""
    if code == FloodWait.code:
        return FloodWait(seconds, message)
    if code == SlowModeWait.code:
        return SlowModeWait(seconds, message)
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else BadRequest(message, code)


# --- values ---------------------------------------------------------------------------------


class ChatType(StrEnum):
    """What kind of chat a message is in (supergroups count as groups)."""

    PRIVATE = "private"
    GROUP = "group"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class User:
    """A Telegram user (``me()`` is the account's own)."""

    id: int
    name: str
    username: str | None = None
    bot: bool = False
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Dialog:
    """One chat in the account's chat list."""

    chat_id: int
    chat_type: ChatType
    title: str
    top_message_id: int
    top_message_date: datetime | None


@dataclass(frozen=True, slots=True)
class Message:
    """A message read from a chat's history."""

    chat_id: int
    message_id: int
    sender_id: int
    text: str
    date: datetime
    outgoing: bool
    reply_to_msg_id: int | None = None


@dataclass(frozen=True, slots=True)
class LoginState:
    """A started login: store it (e.g. as JSON in Postgres) to finish it on any instance.

    ``step`` is ``"code_sent"`` after :meth:`Gateway.send_code`, ``"password_needed"`` after
    a sign-in that needs the 2FA password. Keep the gateway's :attr:`Gateway.credential`
    (encrypted) with it: the password step belongs to the credential that signed in.
    """

    phone: str
    phone_code_hash: str
    step: str = "code_sent"
    code_length: int = 5

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "phone": self.phone,
            "phone_code_hash": self.phone_code_hash,
            "step": self.step,
            "code_length": self.code_length,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoginState:
        """The inverse of :meth:`to_json`."""
        return cls(
            phone=str(data["phone"]),
            phone_code_hash=str(data["phone_code_hash"]),
            step=str(data.get("step", "code_sent")),
            code_length=int(data.get("code_length", 5)),
        )


@dataclass(frozen=True, slots=True)
class Authorized:
    """Login finished: the account's user and the credential to store (encrypted)."""

    user: User
    credential: bytes


@dataclass(frozen=True, slots=True)
class PasswordRequired:
    """Login needs the 2FA password next (:meth:`Gateway.check_password`)."""

    hint: str = ""


LoginResult = Authorized | PasswordRequired


@dataclass(frozen=True, slots=True)
class QrLogin:
    """A QR login token: show ``url`` (``tg://login?token=…``) until ``expires_at``."""

    url: str
    expires_at: datetime


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message appeared in a chat of the account (its own outgoing ones included)."""

    seq: int
    chat_id: int
    message_id: int
    sender_id: int
    sender_username: str | None
    text: str
    date: datetime
    chat_type: ChatType
    outgoing: bool = False
    from_bot: bool = False
    mentions: tuple[str, ...] = ()
    reply_to_msg_id: int | None = None

    @property
    def is_private(self) -> bool:
        """A one-to-one chat."""
        return self.chat_type is ChatType.PRIVATE

    @property
    def is_group(self) -> bool:
        """A basic group or a supergroup."""
        return self.chat_type is ChatType.GROUP

    @property
    def is_channel(self) -> bool:
        """A broadcast channel."""
        return self.chat_type is ChatType.CHANNEL


@dataclass(frozen=True, slots=True)
class MessageEdited:
    """A message's text changed."""

    seq: int
    chat_id: int
    message_id: int
    sender_id: int
    text: str
    date: datetime
    chat_type: ChatType
    outgoing: bool = False


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    """Messages were deleted from a chat."""

    seq: int
    chat_id: int
    message_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection dropped; the gateway reconnects by itself and resumes after its seq."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The connection is back; updates resume after ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """The credential is dead (``error.ends_session``): the last event; log in again."""

    error: GatewayError


Update = NewMessage | MessageEdited | MessageDeleted
Signal = Disconnected | Reconnected | LoggedOut
Event = Update | Signal


# --- the Protocol ---------------------------------------------------------------------------


class Gateway(Protocol):
    """One Telegram account's connection. Every method may raise a :class:`GatewayError`."""

    @property
    def credential(self) -> bytes | None:
        """What to store (encrypted) to reconnect later; None before :meth:`connect`."""
        ...

    @property
    def last_seq(self) -> int | None:
        """The seq of the last update put into :meth:`events` (None: nothing yet)."""
        ...

    async def connect(self, last_seq: int | None = None) -> User | None:
        """Connect; updates after ``last_seq`` are delivered first (None: only new ones).

        Returns the account's user, or None when the credential is not authorized yet (log
        in with :meth:`send_code`/:meth:`sign_in` or :meth:`qr_start`). Raises
        :class:`Unauthorized` for a revoked or unknown credential and :class:`NetworkError`
        when Telegram cannot be reached. After a drop the gateway reconnects by itself
        (:class:`Disconnected`, then :class:`Reconnected` in :meth:`events`).
        """
        ...

    async def disconnect(self) -> None:
        """Close the connection; :meth:`events` ends. Idempotent."""
        ...

    async def send_code(self, phone: str) -> LoginState:
        """Ask Telegram to send a login code to ``phone``."""
        ...

    async def sign_in(self, phone: str, code: str, phone_code_hash: str) -> LoginResult:
        """Finish the code step (on any instance: ``phone_code_hash`` comes from storage)."""
        ...

    async def check_password(self, password: str) -> Authorized:
        """Finish a login that needs the 2FA password."""
        ...

    async def qr_start(self) -> QrLogin:
        """Start (or restart, once expired) a QR login."""
        ...

    async def qr_wait(self, timeout: float) -> LoginResult | None:
        """Wait up to ``timeout`` s for the QR code to be scanned; None if it was not."""
        ...

    async def me(self) -> User:
        """The account's own user."""
        ...

    async def dialogs(self, *, limit: int = 100, offset: int = 0) -> list[Dialog]:
        """A page of the chat list, most recently active first."""
        ...

    async def history(
        self, chat_id: int, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        """A page of a chat's messages, newest first, older than ``before_id`` if given."""
        ...

    async def send_message(
        self, chat_id: int, text: str, *, random_id: int, reply_to: int | None = None
    ) -> int:
        """Send ``text``; returns the new message id. A reused ``random_id`` raises
        :class:`RandomIdDuplicate`: the message was already sent."""
        ...

    async def send_typing(self, chat_id: int) -> None:
        """Show "typing…" in the chat."""
        ...

    def events(self) -> AsyncIterator[Event]:
        """The account's updates and connection signals, in seq order, through a bounded
        buffer: a consumer that stops reading stops the flow for this account only."""
        ...
