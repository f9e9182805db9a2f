"""Users: create, find, list, disable. Passwords are stored as argon2id hashes only.

Exceptions::

    UserError            a user operation was refused (the message says why)
    ├── UserExists       the username is taken (case-insensitive)
    ├── UserNotFound     no such user
    └── WrongPassword    the current password given for a change does not match

The public API uses :func:`register`, :func:`authenticate` and :func:`change_password`,
which hash on a worker thread (argon2id takes tens of milliseconds of CPU; the event loop
must not wait for it), and :func:`get_auth_state` on its hot path. ``auth_generation``
counts password changes: access tokens carry the generation they were issued in, and one
from an older generation is refused.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vibee.store import Conn, Executor

_hasher = PasswordHasher()
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 8


class UserError(Exception):
    """A user operation was refused; the message says why."""


class UserExists(UserError):
    """The username is already taken."""


class UserNotFound(UserError):
    """No user has this name or id."""


class WrongPassword(UserError):
    """The current password given to :func:`change_password` does not match."""


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


async def create(conn: Executor, username: str, password: str, display_name: str = "") -> User:
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


async def get_by_name(conn: Executor, username: str) -> User:
    """The user with this name (case-insensitive). Raises UserNotFound."""
    row = await conn.fetchrow(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at "
        "FROM users WHERE lower(username) = lower($1)",
        username,
    )
    if row is None:
        raise UserNotFound(f"no user named {username!r}")
    return _user(row)


async def list_all(conn: Executor) -> list[User]:
    """Every user, oldest first."""
    rows = await conn.fetch(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at "
        "FROM users ORDER BY id"
    )
    return [_user(r) for r in rows]


async def set_disabled(conn: Executor, username: str, disabled: bool = True) -> User:
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


async def verify_password(conn: Executor, username: str, password: str) -> User | None:
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


# --- for the public API --------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist (made once, on first use)."""
    return _hasher.hash("not a password: spends the time of a real verification")


@dataclass(frozen=True, slots=True)
class AuthState:
    """A user and the generation its access tokens must carry."""

    user: User
    generation: int


def _auth_state(row: asyncpg.Record) -> AuthState:
    return AuthState(_user(row), row["auth_generation"])


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_absent(password: str) -> bool:
    """Spend a verification's time for a user that does not exist; always False."""
    _verify(_dummy_hash(), password)
    return False


async def register(db: Executor, username: str, password: str, display_name: str = "") -> AuthState:
    """Like :func:`create`, hashing on a worker thread. Raises UserError, UserExists."""
    validate_credentials(username, password)
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    try:
        row = await db.fetchrow(
            "INSERT INTO users (username, password_hash, display_name) VALUES ($1, $2, $3) "
            "RETURNING id, username, display_name, subscription_tier, disabled_at, created_at, "
            "auth_generation",
            username,
            password_hash,
            display_name or username,
        )
    except asyncpg.UniqueViolationError:
        raise UserExists(f"user {username!r} already exists") from None
    assert row is not None
    return _auth_state(row)


async def authenticate(db: Executor, username: str, password: str) -> AuthState | None:
    """The user when the password matches, disabled or not (the caller refuses disabled
    users with its own answer), else None. Verifies on a worker thread, and spends the same
    time whether or not the user exists."""
    row = await db.fetchrow(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at, "
        "auth_generation, password_hash FROM users WHERE lower(username) = lower($1)",
        username,
    )
    if row is None:
        await asyncio.to_thread(_verify_absent, password)
        return None
    if not await asyncio.to_thread(_verify, row["password_hash"], password):
        return None
    return _auth_state(row)


async def get_auth_state(db: Executor, user_id: int) -> AuthState | None:
    """The user with this id and its token generation, or None (one primary-key lookup)."""
    row = await db.fetchrow(
        "SELECT id, username, display_name, subscription_tier, disabled_at, created_at, "
        "auth_generation FROM users WHERE id = $1",
        user_id,
    )
    return None if row is None else _auth_state(row)


async def set_display_name(db: Executor, user_id: int, display_name: str) -> User:
    """Change the user's display name. Raises UserNotFound."""
    row = await db.fetchrow(
        "UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1 "
        "RETURNING id, username, display_name, subscription_tier, disabled_at, created_at",
        user_id,
        display_name,
    )
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return _user(row)


async def change_password(conn: Conn, user_id: int, current: str, new: str) -> AuthState:
    """Replace the password when ``current`` matches, and start a new token generation.

    Raises WrongPassword, UserError (a bad new password) or UserNotFound. Run it in a
    transaction together with revoking the user's refresh tokens.
    """
    if len(new) < MIN_PASSWORD:
        raise UserError(f"new_password: must be at least {MIN_PASSWORD} characters")
    row = await conn.fetchrow("SELECT password_hash FROM users WHERE id = $1 FOR UPDATE", user_id)
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    if not await asyncio.to_thread(_verify, row["password_hash"], current):
        raise WrongPassword("current_password: does not match")
    new_hash = await asyncio.to_thread(_hasher.hash, new)
    updated = await conn.fetchrow(
        "UPDATE users SET password_hash = $2, auth_generation = auth_generation + 1, "
        "updated_at = now() WHERE id = $1 "
        "RETURNING id, username, display_name, subscription_tier, disabled_at, created_at, "
        "auth_generation",
        user_id,
        new_hash,
    )
    assert updated is not None
    return _auth_state(updated)


async def set_tier(conn: Executor, username: str, tier: str) -> User:
    """Set the user's subscription tier (the caller checks that the tier exists).
    Raises UserNotFound."""
    row = await conn.fetchrow(
        "UPDATE users SET subscription_tier = $2, updated_at = now() "
        "WHERE lower(username) = lower($1) "
        "RETURNING id, username, display_name, subscription_tier, disabled_at, created_at",
        username,
        tier,
    )
    if row is None:
        raise UserNotFound(f"no user named {username!r}")
    return _user(row)
