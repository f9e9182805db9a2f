"""Request and response bodies of the Telegram-session, chat, persona and lead routes.

Same rules as :mod:`vibee.api.schemas`: requests are strict and forbid unknown fields;
strings that reach Postgres cannot hold a NUL. A chat config is checked twice: field by
field here, then as a whole by :class:`vibee.automation.policy.ChatPolicy` (the route turns
its PolicyError into a 422 naming the field).
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

INT64_MAX = 2**63 - 1
NoNul = r"^[^\x00]*$"

Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ()-]{3,30}$"),
    Field(description="The account's phone number, international format.", examples=["+15550100"]),
]
Code = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=r"^[0-9 -]+$"),
]
TgPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=NoNul)]
MessageText = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NoNul)]
Trigger = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NoNul)]
Example = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=NoNul)]
Int64 = Annotated[int, Field(ge=-INT64_MAX, le=INT64_MAX)]
Seconds = Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- Telegram sessions -----------------------------------------------------------------------


class ConnectRequest(_Request):
    """Start connecting a Telegram account: Telegram sends a login code to the phone."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"phone": "+15550100"}]})

    phone: Phone


class CodeRequest(_Request):
    """The login code from the Telegram app."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "12345"}]})

    code: Code


class PasswordRequest(_Request):
    """The account's two-step verification password."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"password": "hunter2"}]})

    password: TgPassword


class LoginStarted(_Response):
    """The code was sent; submit it to ``/api/v1/sessions/{session_id}/code``."""

    session_id: int
    state: Literal["code_sent"] = "code_sent"


class QrStarted(_Response):
    """A QR login waits for the code to be scanned in Telegram (Settings > Devices > Link
    Desktop Device); poll ``GET /api/v1/sessions/{session_id}`` for the state and
    ``/qr`` for a fresh code when this one expires."""

    session_id: int
    qr_url: str
    expires_at: datetime
    svg: str


class LoginStep(_Response):
    """Where the login stands: connected, or the 2FA password is needed next."""

    session_id: int
    state: Literal["authorized", "password_needed"]
    telegram_user_id: int | None = None


class SessionOut(_Response):
    """A connected (or connecting) Telegram account. The credential is never shown."""

    id: int
    phone: str | None
    state: str
    state_reason: str | None
    telegram_user_id: int | None
    created_at: datetime


class SessionList(_Response):
    """The user's Telegram accounts, oldest first."""

    sessions: list[SessionOut]


# --- chats -----------------------------------------------------------------------------------


class ChatOut(_Response):
    """A chat: VIBEE's id for (session, Telegram chat), and its automation mode."""

    id: int
    session_id: int
    tg_chat_id: int
    kind: str
    title: str
    mode: str


class ChatList(_Response):
    """The user's chats, oldest first."""

    chats: list[ChatOut]


class MessageOut(_Response):
    """A stored message; for an inbound one, the automation's decision and why."""

    id: int
    direction: Literal["in", "out"]
    text: str
    state: str
    message_id: int | None = Field(description="Telegram's message id (None until sent).")
    reply_to_msg_id: int | None
    created_at: datetime
    decision: str | None = Field(
        description="Inbound only: the reason code of the last decision (e.g. 'observe', "
        "'cooldown', 'replied'); None while undecided."
    )
    decision_detail: str | None = Field(description="The decision explained in a sentence.")


class MessageList(_Response):
    """A page of a chat's messages, newest first; pass the last ``id`` as ``before``."""

    messages: list[MessageOut]


class QuietHours(BaseModel):
    """Quiet hours ``[start, end)`` in the chat's time zone; wraps midnight if start > end."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    start: time
    end: time


class ChatConfigIn(_Request):
    """A chat's automation settings (the whole config; omitted fields take the defaults)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "mode": "digital_twin",
                    "trigger_words": ["price"],
                    "response_probability": 0.8,
                    "cooldown_s": 60,
                    "quiet_hours": {"start": "23:00", "end": "07:00"},
                    "tz": "Europe/Berlin",
                }
            ]
        }
    )

    mode: Literal["digital_twin", "sniper", "observe", "disabled"] = "observe"
    trigger_words: list[Trigger] = Field(default_factory=list, max_length=100)
    response_probability: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    cooldown_s: int = Field(0, ge=0, le=2_000_000_000)
    reply_delay_min_s: Seconds = 2.0
    reply_delay_max_s: Seconds = 8.0
    quiet_hours: QuietHours | None = None
    tz: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NoNul)] = "UTC"
    sniper_reply: bool = False
    lead_chat_id: Int64 | None = Field(
        None, description="Telegram chat where lead cards go (None: the account's own chat)."
    )


class ChatDefaultsOut(_Response):
    """The automation settings of every chat that has none of its own."""

    mode: str
    trigger_words: list[str]
    response_probability: float
    cooldown_s: int
    reply_delay_min_s: float
    reply_delay_max_s: float
    quiet_hours: QuietHours | None
    tz: str
    sniper_reply: bool
    lead_chat_id: int | None


class ChatConfigOut(ChatDefaultsOut):
    """A chat's effective automation settings (its own, else the user's defaults)."""

    chat_id: int


class SendRequest(_Request):
    """A message to send in the chat as the account."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "Hello!"}]})

    text: MessageText
    reply_to: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = Field(
        None, description="Telegram message id to reply to."
    )


class SendAccepted(_Response):
    """The message is in the outbox; the pipeline sends it."""

    id: int
    state: Literal["pending"] = "pending"


# --- persona and leads -------------------------------------------------------------------------


class PersonaIn(_Request):
    """Who the digital twin speaks as."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Alice",
                    "bio": "Designer in Berlin.",
                    "style_rules": "Short, friendly, no emoji.",
                    "examples": ["sure, let's talk tomorrow"],
                }
            ]
        }
    )

    name: Annotated[str, StringConstraints(max_length=100, pattern=NoNul)] = ""
    bio: Annotated[str, StringConstraints(max_length=4000, pattern=NoNul)] = ""
    style_rules: Annotated[str, StringConstraints(max_length=4000, pattern=NoNul)] = ""
    examples: list[Example] = Field(default_factory=list, max_length=50)


class PersonaOut(_Response):
    """The user's persona (empty fields when none was written), with the examples the twin
    uses."""

    name: str
    bio: str
    style_rules: str
    examples: list[str]
    examples_derived: bool = Field(
        description="No examples were written: these are the owner's own recent messages, "
        "which the twin takes as examples until some are."
    )


class LeadOut(_Response):
    """A lead the sniper recorded."""

    id: int
    session_id: int
    chat_id: int
    sender_id: int
    trigger: str
    text: str
    created_at: datetime


class LeadList(_Response):
    """The user's newest leads first."""

    leads: list[LeadOut]
