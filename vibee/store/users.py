"""Users: create, find, list, disable. Passwords are stored as argon2id hashes only.

Exceptions::

    UserError            a user operation was refused (the message says why)
    ├── UserExists       the username is taken (case-insensitive)
    └── UserNotFound     no such user
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 8


class UserError(Exception):
    """A user operation was refused; the message says why."""


class UserExists(UserError):
    """The username is already taken."""


class UserNotFound(UserError):
    """No user has this name or id."""


@dataclass(frozen=True, slots=True)
class User:
    """A VIBEE account (not a Telegram account)."""

    id: int
    username: str
    display_name: str
    subscription_tier: str
    disabled: bool
    created_at: datetime


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        subscription_tier=row["subscription_tier"],
        disabled=row["disabled_at"] is not None,
        created_at=row["created_at"],
    )


def validate_credentials(username: str, password: str) -> None:
    """Raise UserError naming what is wrong with a new username or password."""
    if not USERNAME.match(username):
        raise UserError("username: 1-64 characters of letters, digits, '_', '.' or '-'")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: must be at least {MIN_PASSWORD} characters")


async def create(
    conn: asyncpg.Connection, username: str, password: str, display_name: str = ""
) -> User:
    """Create a user. Raises UserError for a bad name or password, UserExists when taken."""
    validate_credentials(username, password)
    try:
        row = await conn.fetchrow(
            "INSERT INTO users (username, password_hash, display_name) VALUES ($1, $2, $3) "
            "RETURNING id, username, display_name, subscription_tier, disabled_at, created_at",
            username,
            _hasher.hash(password),
            display_name or username,
        )
    except asyncpg.UniqueViolationError:
        raise UserExists(f"user {username!r} already exists") from None
    assert row is not None
    return _user(row)


async def get_by_name(conn: asyncpg.Connection, username: str) -> User:
    """The user with this name (case-insensitive). Raises UserNotFound."""
    row = await conn.fetchrow(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at "
        "FROM users WHERE lower(username) = lower($1)",
        username,
    )
    if row is None:
        raise UserNotFound(f"no user named {username!r}")
    return _user(row)


async def list_all(conn: asyncpg.Connection) -> list[User]:
    """Every user, oldest first."""
    rows = await conn.fetch(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at "
        "FROM users ORDER BY id"
    )
    return [_user(r) for r in rows]


async def set_disabled(conn: asyncpg.Connection, username: str, disabled: bool = True) -> User:
    """Disable (or enable) a user. Raises UserNotFound."""
    row = await conn.fetchrow(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END, "
        "updated_at = now() WHERE lower(username) = lower($1) "
        "RETURNING id, username, display_name, subscription_tier, disabled_at, created_at",
        username,
        disabled,
    )
    if row is None:
        raise UserNotFound(f"no user named {username!r}")
    return _user(row)


async def verify_password(conn: asyncpg.Connection, username: str, password: str) -> User | None:
    """The user when the password matches and the user is enabled, else None."""
    row = await conn.fetchrow(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at, "
        "password_hash FROM users WHERE lower(username) = lower($1)",
        username,
    )
    if row is None:
        _hasher.hash(password)  # spend the same time whether or not the user exists
        return None
    try:
        _hasher.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    user = _user(row)
    return None if user.disabled else user
