"""Request and response bodies of the public API (the OpenAPI schemas come from these).

Request models are strict and forbid unknown fields; every string that reaches Postgres
is constrained so that it cannot hold a NUL or control character (Postgres refuses NUL
in text; that must be a 422, not a 500).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from vibee.api.tiers import TierLimits
from vibee.store.users import MIN_PASSWORD

Username = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"),
    Field(
        description="1-64 letters, digits, '_', '.' or '-' (case-insensitive).", examples=["alice"]
    ),
]
NewPassword = Annotated[str, StringConstraints(min_length=MIN_PASSWORD, max_length=1024)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
DisplayName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
RefreshToken = Annotated[
    str, StringConstraints(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- requests ------------------------------------------------------------------------------


class RegisterRequest(_Request):
    """A new account."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "alice", "password": "correct horse"}]}
    )

    username: Username
    password: NewPassword
    display_name: DisplayName | None = None


class LoginRequest(_Request):
    """Credentials."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "alice", "password": "correct horse"}]}
    )

    username: Username
    password: Password


class RefreshRequest(_Request):
    """A refresh token to rotate or revoke."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_token": "x" * 43}]})

    refresh_token: RefreshToken


class PasswordChange(_Request):
    """The current password and the new one."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"current_password": "correct horse", "new_password": "battery staple"}]
        }
    )

    current_password: Password
    new_password: NewPassword


class ProfileUpdate(_Request):
    """Changes to the profile."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"display_name": "Alice"}]})

    display_name: DisplayName


class TierChange(_Request):
    """A user's new subscription tier (admin endpoint)."""

    tier: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]


# --- responses -----------------------------------------------------------------------------


class TokenPair(_Response):
    """An access token (JWT, short-lived) and a refresh token (opaque, single use)."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class UserOut(_Response):
    """The authenticated user."""

    id: int
    username: str
    display_name: str
    subscription_tier: str
    limits: TierLimits
    created_at: datetime


class Registered(_Response):
    """The new user and its first tokens."""

    user: UserOut
    tokens: TokenPair


class UsageDay(_Response):
    """AI usage on one UTC day."""

    day: date
    requests: int
    tokens: int
    cost: str = Field(description="Provider-reported cost in dollars, as a decimal string.")


class Quota(_Response):
    """The daily AI quota of the user's tier."""

    requests_per_day: int
    tokens_per_day: int


class Remaining(_Response):
    """What is left of today's quota."""

    requests: int
    tokens: int


class UsageOut(_Response):
    """Today's AI usage against the quota, and the last 30 days (days with usage only)."""

    day: date
    tier: str
    today: UsageDay
    quota: Quota
    remaining: Remaining
    days: list[UsageDay] = Field(description="Newest first.")


class Health(_Response):
    """The API answers."""

    status: Literal["ok"] = "ok"


class FieldError(_Response):
    """One invalid field of a request body."""

    loc: str = Field(description="The field's path, e.g. 'password' or 'items.0.name'.")
    msg: str
    type: str


class Problem(_Response):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None
