"""What an account may ask the sim over the wire: argument checks and the call table.

Each call gets the key of the logical connection it came on and the ``a`` object of the
request; it returns the JSON result or raises a :class:`GatewayError` (sent as ``e``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vibee.sim.telegram_auth import CODE_LENGTH, Auth, Key
from vibee.sim.telegram_faults import Faults
from vibee.sim.telegram_state import Account, World
from vibee.telegram.gateway import BadRequest, RandomIdDuplicate

MAX_TEXT = 4096
INT64 = 1 << 63


@dataclass(slots=True)
class Core:
    """The sim's state: what the calls and the control API work on."""

    world: World
    auth: Auth
    faults: Faults


def _bad(name: str, why: str) -> BadRequest:
    return BadRequest(f"{name}: {why}", "INPUT_INVALID")


def arg_int(args: dict[str, Any], name: str, *, low: int = -INT64, high: int = INT64 - 1) -> int:
    """A required integer argument within [low, high]."""
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(name, "an integer is required")
    if not low <= value <= high:
        raise _bad(name, f"must be between {low} and {high}")
    return value


def arg_opt_int(args: dict[str, Any], name: str, *, low: int = -INT64) -> int | None:
    """An optional integer argument (null or absent: None)."""
    return None if args.get(name) is None else arg_int(args, name, low=low)


def arg_str(args: dict[str, Any], name: str) -> str:
    """A required string argument."""
    value = args.get(name)
    if not isinstance(value, str):
        raise _bad(name, "a string is required")
    return value


def _authorized(core: Core, key: Key) -> dict[str, Any]:
    account = core.auth.account(key)
    return {"status": "authorized", "user": account.user.wire(), "seq": account.seq}


def send_code(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{phone}`` → ``{phone_code_hash, code_length}``."""
    sent = core.auth.send_code(arg_str(args, "phone"))
    return {"phone_code_hash": sent.phone_code_hash, "code_length": CODE_LENGTH}


def sign_in(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{phone, code, phone_code_hash}`` → authorized or password_needed."""
    done = core.auth.sign_in(
        key, arg_str(args, "phone"), arg_str(args, "code"), arg_str(args, "phone_code_hash")
    )
    return _authorized(core, key) if done else {"status": "password_needed", "hint": ""}


def check_password(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{password}`` → authorized."""
    core.auth.check_password(key, arg_str(args, "password"))
    return _authorized(core, key)


def qr_start(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """→ ``{url, expires_at}``."""
    qr = core.auth.qr_start(key)
    return {"url": f"tg://login?token={qr.token}", "expires_at": qr.expires_at}


async def qr_wait(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{timeout}`` → authorized, password_needed, or ``{status: waiting}``."""
    timeout = args.get("timeout")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
        raise _bad("timeout", "a number of seconds >= 0 is required")
    qr = key.qr
    if qr is None:
        raise BadRequest("No QR login was started on this session.", "QR_NOT_STARTED")
    if not qr.accepted.is_set():
        try:
            await asyncio.wait_for(qr.accepted.wait(), min(float(timeout), 600.0))
        except TimeoutError:
            return {"status": "waiting"}
    if key.status == "password":
        return {"status": "password_needed", "hint": ""}
    return _authorized(core, key)


def me(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """→ the account's user."""
    return core.auth.account(key).user.wire()


def dialogs(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{limit, offset}`` → a page of dialogs."""
    account = core.auth.account(key)
    limit = arg_int(args, "limit", low=1, high=1000)
    return core.world.dialogs(account, limit, arg_int(args, "offset", low=0))


def history(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{chat_id, limit, before_id?}`` → a page of messages, newest first."""
    account = core.auth.account(key)
    chat = core.world.chat_for(account, arg_int(args, "chat_id"))
    limit = arg_int(args, "limit", low=1, high=1000)
    return core.world.history(account, chat, limit, arg_opt_int(args, "before_id"))


def send_message(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{chat_id, text, random_id, reply_to?}`` → ``{message_id}``."""
    account = core.auth.account(key)
    text = arg_str(args, "text")
    random_id = arg_int(args, "random_id")
    reply_to = arg_opt_int(args, "reply_to", low=1)
    world = core.world
    chat = world.chat_for(account, arg_int(args, "chat_id"), create=True)
    world.check_write(account, chat)
    core.faults.check_send(account.account_id, chat.chat_id)
    if random_id in account.random_ids:
        world.duplicates_rejected += 1
        raise RandomIdDuplicate()
    if not text.strip():
        raise BadRequest("The message is empty.", "MESSAGE_EMPTY")
    if len(text) > MAX_TEXT:
        raise BadRequest(f"The message is longer than {MAX_TEXT} characters.", "MESSAGE_TOO_LONG")
    account.random_ids.add(random_id)
    message_id = world.post(chat, account.user, text, reply_to, random_id)
    world.messages_out += 1
    core.faults.record_send(account.account_id, chat.chat_id)
    return {"message_id": message_id}


def send_typing(core: Core, key: Key, args: dict[str, Any]) -> Any:
    """``{chat_id}`` → ``{}``."""
    account: Account = core.auth.account(key)
    core.world.chat_for(account, arg_int(args, "chat_id"), create=True)
    core.world.typing += 1
    return {}


Call = Callable[[Core, Key, dict[str, Any]], Any]
AsyncCall = Callable[[Core, Key, dict[str, Any]], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "send_code": send_code,
    "sign_in": sign_in,
    "check_password": check_password,
    "qr_start": qr_start,
    "me": me,
    "dialogs": dialogs,
    "history": history,
    "send_message": send_message,
    "send_typing": send_typing,
}
ASYNC_CALLS: dict[str, AsyncCall] = {"qr_wait": qr_wait}
