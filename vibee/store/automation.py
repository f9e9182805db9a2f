"""What the pipeline reads and writes besides messages: chat configs, personas, leads,
dead letters. Every user-facing function filters by ``user_id``.

A chat config written through :func:`set_chat_config` is announced on the Postgres channel
:data:`CONFIG_CHANNEL` (``user:session:chat``) when it commits, so that the pipelines of
every instance forget their copy at once (:mod:`vibee.automation.notices`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from vibee.store import Executor

CONFIG_COLUMNS = (
    "mode",
    "trigger_words",
    "response_probability",
    "cooldown_s",
    "reply_delay_min_s",
    "reply_delay_max_s",
    "quiet_hours_start",
    "quiet_hours_end",
    "tz",
    "sniper_reply",
    "lead_chat_id",
)
"""The settings of ``chat_configs`` (and ``chat_defaults``), in this order."""
CONFIG_CHANNEL = "vibee_chat_config"
"""The Postgres channel a changed chat config (``user:session:chat``) or persona
(``user``) is announced on, and work put back in the outbox (:data:`SWEEP_NOTICE`)."""
SWEEP_NOTICE = "sweep"
"""On :data:`CONFIG_CHANNEL`: every pipeline sweeps its sessions for unfinished work now."""

_EFFECTIVE_CONFIG = (
    "SELECT c.id AS chat_id, "  # noqa: S608 - built once from the constant column names above
    + ", ".join(f"coalesce(cc.{col}, d.{col}) AS {col}" for col in CONFIG_COLUMNS)
    + " FROM chats c LEFT JOIN chat_configs cc ON cc.chat_id = c.id "
    "LEFT JOIN chat_defaults d ON d.user_id = c.user_id "
    "WHERE c.user_id = $1 AND c.session_id = $2 AND c.tg_chat_id = $3"
)


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """The effective settings of one chat (its own row, else the user's defaults)."""

    chat_id: int
    mode: str = "observe"
    trigger_words: tuple[str, ...] = ()
    response_probability: float = 1.0
    cooldown_s: int = 0
    reply_delay_min_s: float = 2.0
    reply_delay_max_s: float = 8.0
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None
    tz: str = "UTC"
    sniper_reply: bool = False
    lead_chat_id: int | None = None


async def chat_config(
    db: Executor, user_id: int, session_id: int, tg_chat_id: int
) -> ChatConfig | None:
    """The chat's effective config (None: the chat is unknown to this user)."""
    row = await db.fetchrow(
        _EFFECTIVE_CONFIG,
        user_id,
        session_id,
        tg_chat_id,
    )
    if row is None:
        return None
    return config_of(dict(row))


def config_of(row: Mapping[str, Any]) -> ChatConfig:
    """A :class:`ChatConfig` from ``chat_id`` and the :data:`CONFIG_COLUMNS` (None: the
    default)."""
    values: dict[str, Any] = {k: v for k, v in row.items() if v is not None}
    values["trigger_words"] = tuple(values.get("trigger_words", ()))
    return ChatConfig(**values)


async def set_chat_config(
    db: Executor, user_id: int, session_id: int, tg_chat_id: int, **settings: Any
) -> int:
    """Create or change a chat's config (the chat row too), and announce it on
    :data:`CONFIG_CHANNEL` (delivered when the caller's transaction, if any, commits).
    Returns VIBEE's chat id."""
    unknown = set(settings) - set(CONFIG_COLUMNS)
    if unknown:
        raise ValueError(f"unknown chat settings: {sorted(unknown)}")
    chat_id = await db.fetchval(
        "INSERT INTO chats (user_id, session_id, tg_chat_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (session_id, tg_chat_id) DO UPDATE SET tg_chat_id = excluded.tg_chat_id "
        "RETURNING id",
        user_id,
        session_id,
        tg_chat_id,
    )
    owner = await db.fetchval("SELECT user_id FROM chats WHERE id = $1", chat_id)
    if owner != user_id:
        raise LookupError("no such chat")
    columns = ["chat_id", "user_id", *settings]
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = (
        ", ".join(f"{col} = excluded.{col}" for col in settings) or "chat_id = excluded.chat_id"
    )
    await db.execute(
        f"INSERT INTO chat_configs ({', '.join(columns)}) VALUES ({placeholders}) "  # noqa: S608 - column names are checked against CONFIG_COLUMNS
        f"ON CONFLICT (chat_id) DO UPDATE SET {updates}, updated_at = now()",
        chat_id,
        user_id,
        *settings.values(),
    )
    await db.execute(
        "SELECT pg_notify($1, $2)", CONFIG_CHANNEL, f"{user_id}:{session_id}:{tg_chat_id}"
    )
    return int(chat_id)


async def announce_persona_change(db: Executor, user_id: int) -> None:
    """Tell every pipeline that the user's persona or chat defaults changed (on
    :data:`CONFIG_CHANNEL`, delivered when the caller's transaction, if any, commits)."""
    await db.execute("SELECT pg_notify($1, $2)", CONFIG_CHANNEL, str(user_id))


_DEFAULTS = f"SELECT {', '.join(CONFIG_COLUMNS)} FROM chat_defaults WHERE user_id = $1"  # noqa: S608 - constant column names
_SET_DEFAULTS = (
    f"INSERT INTO chat_defaults (user_id, {', '.join(CONFIG_COLUMNS)}) "  # noqa: S608 - constant column names
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(CONFIG_COLUMNS) + 2))}) "
    f"ON CONFLICT (user_id) DO UPDATE SET "
    f"{', '.join(f'{col} = excluded.{col}' for col in CONFIG_COLUMNS)}, updated_at = now()"
)


async def chat_defaults(db: Executor, user_id: int) -> ChatConfig:
    """The user's defaults: what a chat without settings of its own follows (``chat_id``
    0; VIBEE's built-in defaults until the user sets them)."""
    row = await db.fetchrow(_DEFAULTS, user_id)
    return config_of({"chat_id": 0, **(dict(row) if row is not None else {})})


async def set_chat_defaults(db: Executor, user_id: int, **settings: Any) -> None:
    """Replace the user's defaults (every setting given) and announce it, so that every
    pipeline reads the configs of the user's chats again."""
    if set(settings) != set(CONFIG_COLUMNS):
        raise ValueError(f"chat defaults need every setting: {sorted(CONFIG_COLUMNS)}")
    await db.execute(_SET_DEFAULTS, user_id, *(settings[col] for col in CONFIG_COLUMNS))
    await announce_persona_change(db, user_id)


def parse_config_notice(payload: str) -> tuple[int, int | None, int | None] | None:
    """(user, session, Telegram chat) of a :data:`CONFIG_CHANNEL` notice — session and chat
    None for the user's persona — or None when unreadable."""
    try:
        parts = [int(part) for part in payload.split(":")]
    except ValueError:
        return None
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 1:
        return parts[0], None, None
    return None


@dataclass(frozen=True, slots=True)
class Persona:
    """Who the digital twin speaks as."""

    name: str = ""
    bio: str = ""
    style_rules: str = ""
    examples: tuple[str, ...] = ()


async def persona(db: Executor, user_id: int) -> Persona | None:
    """The user's persona, if they wrote one."""
    row = await db.fetchrow(
        "SELECT name, bio, style_rules, examples FROM personas WHERE user_id = $1", user_id
    )
    if row is None:
        return None
    return Persona(row["name"], row["bio"], row["style_rules"], tuple(row["examples"]))


async def own_examples(db: Executor, user_id: int, limit: int = 5) -> list[str]:
    """The owner's own recent outgoing messages (written by them, not by VIBEE)."""
    rows = await db.fetch(
        "SELECT text FROM messages WHERE user_id = $1 AND direction = 'out' "
        "AND random_id IS NULL AND length(text) BETWEEN 2 AND 400 ORDER BY id DESC LIMIT $2",
        user_id,
        limit,
    )
    return [r["text"] for r in rows]


async def add_lead_if_new(
    db: Executor,
    user_id: int,
    session_id: int,
    chat_id: int,
    sender_id: int,
    message_row_id: int,
    trigger: str,
    text: str,
    now: datetime,
) -> int | None:
    """A lead, unless this sender already has one in this chat within the hour."""
    value = await db.fetchval(
        "INSERT INTO leads (user_id, session_id, chat_id, sender_id, message_id, trigger, text, "
        "created_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (SELECT 1 FROM leads "
        "WHERE chat_id = $3 AND sender_id = $4 "
        "AND created_at > $8::timestamptz - interval '1 hour') RETURNING id",
        user_id,
        session_id,
        chat_id,
        sender_id,
        message_row_id,
        trigger,
        text,
        now,
    )
    return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A reply VIBEE gave up on."""

    id: int
    user_id: int
    session_id: int | None
    message_id: int
    error: str
    attempts: int
    text: str
    created_at: datetime


async def dead_letters_all_users(db: Executor, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters of every user (operators)."""
    rows = await db.fetch(
        "SELECT d.id, d.user_id, d.session_id, d.message_id, d.error, d.attempts, m.text, "
        "d.created_at FROM dead_letters d JOIN messages m ON m.id = d.message_id "
        "ORDER BY d.id DESC LIMIT $1",
        limit,
    )
    return [DeadLetter(**dict(r)) for r in rows]


async def replay_dead_letter(db: Executor, letter_id: int) -> bool:
    """Put a dead reply back in the outbox (pending, attempts reset) and announce it
    (:data:`SWEEP_NOTICE`, when the caller's transaction commits), so that the instance
    running its session sends it at once. True when found."""
    value = await db.fetchval(
        "WITH gone AS (DELETE FROM dead_letters WHERE id = $1 RETURNING message_id), "
        "back AS (UPDATE messages SET state = 'pending', attempts = 0, updated_at = now() "
        "WHERE id = (SELECT message_id FROM gone) RETURNING id) "
        "SELECT id FROM back WHERE pg_notify($2, $3) IS NOT NULL",
        letter_id,
        CONFIG_CHANNEL,
        SWEEP_NOTICE,
    )
    return value is not None


async def drop_dead_letter(db: Executor, letter_id: int) -> bool:
    """Forget a dead letter (the reply stays ``dead``). True when found."""
    value = await db.fetchval("DELETE FROM dead_letters WHERE id = $1 RETURNING id", letter_id)
    return value is not None


async def count_dead_letters(db: Executor) -> int:
    """How many dead letters wait for an operator."""
    return int(await db.fetchval("SELECT count(*) FROM dead_letters") or 0)
