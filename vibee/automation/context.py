"""What the model is told: the persona as the system prompt, the dialog as real turns.

The owner's own messages become assistant turns and everyone else's user turns, so the
model continues the conversation as the owner. Without a persona, one is derived from the
owner's own recent messages (their style, as examples). Consecutive turns of one role are
merged, and the request always ends with the other side's words.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from vibee.ai.base import ChatRequest, Message
from vibee.automation.rag import Rag
from vibee.store import Executor, automation, outbox
from vibee.store.turns import DIALOG_TURNS

RAG_EXAMPLES = 5  # RAG: how many similar past replies of the owner go into the prompt


def system_prompt(persona: automation.Persona | None, examples: Sequence[str], mode: str) -> str:
    """The system prompt for a chat in ``mode``."""
    name = persona.name if persona and persona.name else "the account's owner"
    lines = [
        f"You are {name}, answering your own Telegram messages. Write as {name} would: "
        "short, natural, in the language of the conversation. Never say you are an AI."
    ]
    if persona is not None:
        if persona.bio:
            lines.append(f"About you: {persona.bio}")
        if persona.style_rules:
            lines.append(f"How you write: {persona.style_rules}")
    shown = list(persona.examples if persona and persona.examples else examples)
    if shown:
        lines.append("Messages you wrote before, for your style:")
        lines.extend(f"- {example}" for example in shown[:8])
    if mode == "sniper":
        lines.append(
            "This person wrote about something you offer: thank them briefly and invite them "
            "to continue in private."
        )
    return "\n".join(lines)


def dialog_turns(dialog: Sequence[tuple[str, str]]) -> tuple[Message, ...]:
    """Stored (direction, text) pairs as alternating turns ending with a user turn."""
    turns: list[Message] = []
    for direction, text in dialog:
        role: Literal["user", "assistant"] = "assistant" if direction == "out" else "user"
        if turns and turns[-1].role == role:
            turns[-1] = Message(role, f"{turns[-1].content}\n{text}")
        else:
            turns.append(Message(role, text))
    while turns and turns[0].role == "assistant":
        turns.pop(0)
    while turns and turns[-1].role == "assistant":
        turns.pop()
    return tuple(turns)


# --- RAG (digital twin): the owner's past replies most similar to the new message ---------
def similar_replies_prompt(similar: Sequence[str]) -> str:
    """The system-prompt block listing past replies similar to the incoming message."""
    if not similar:
        return ""
    lines = ["How you answered similar messages before (match this, do not copy it):"]
    lines.extend(f"- {example}" for example in similar)
    return "\n".join(lines)


async def build_request(
    db: Executor,
    rows: Sequence[outbox.InboundRow],
    config: automation.ChatConfig,
    rag: Rag | None = None,
) -> ChatRequest:
    """The request answering ``rows`` (the last unanswered messages of one chat); with
    ``rag``, the owner's most similar past replies join the system prompt (twin mode).
    Reads everything from ``db`` (the pipeline keeps most of it in memory instead and
    calls :func:`compose_request`)."""
    last = rows[-1]
    persona, examples = await profile(db, last.user_id)
    dialog = await outbox.recent_dialog(db, last.session_id, last.tg_chat_id, DIALOG_TURNS)
    similar = await similar_replies(rows, config, rag)
    return compose_request(rows, config, persona, examples, dialog, similar)


async def profile(db: Executor, user_id: int) -> tuple[automation.Persona | None, list[str]]:
    """The owner's persona and, when it has no examples, their own recent messages."""
    persona = await automation.persona(db, user_id)
    examples = [] if persona and persona.examples else await automation.own_examples(db, user_id)
    return persona, examples


async def similar_replies(
    rows: Sequence[outbox.InboundRow], config: automation.ChatConfig, rag: Rag | None
) -> list[str]:
    """RAG (twin mode only): the owner's past replies most similar to ``rows``."""
    if rag is None or config.mode != "digital_twin":
        return []
    incoming = "\n".join(r.text for r in rows)
    return list(await rag.examples(rows[-1].user_id, incoming, RAG_EXAMPLES))


def compose_request(
    rows: Sequence[outbox.InboundRow],
    config: automation.ChatConfig,
    persona: automation.Persona | None,
    examples: Sequence[str],
    dialog: Sequence[tuple[str, str]],
    similar: Sequence[str] = (),
) -> ChatRequest:
    """The request answering ``rows``, from what was read: the persona and examples
    (:func:`profile`), the recent dialog as (direction, text) and the similar replies."""
    last = rows[-1]
    turns = dialog_turns(dialog) or (Message("user", "\n".join(r.text for r in rows)),)
    system = system_prompt(persona, examples, config.mode)
    block = similar_replies_prompt(similar)
    system = f"{system}\n{block}" if block else system
    return ChatRequest(
        messages=turns,
        system=system,
        scope=f"user:{last.user_id}:chat:{last.session_id}:{last.tg_chat_id}",
        language="ru" if any("\u0400" <= ch <= "\u04ff" for ch in last.text) else "en",
        mode=config.mode,
    )


class Profiles:
    """The owners' personas and examples, each kept ``ttl_s`` seconds (or until
    :meth:`forget`), at most ``max_users`` of them."""

    def __init__(self, db: Executor, ttl_s: float, max_users: int = 10_000) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._max = max_users
        self._cache: OrderedDict[int, tuple[float, automation.Persona | None, list[str]]] = (
            OrderedDict()
        )

    async def get(self, user_id: int) -> tuple[automation.Persona | None, list[str]]:
        """The user's persona and examples (read at most once per ``ttl_s``)."""
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        persona, examples = await profile(self._db, user_id)
        self._cache[user_id] = (now + self._ttl_s, persona, examples)
        self._cache.move_to_end(user_id)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return persona, examples

    def forget(self, user_id: int) -> None:
        """Read the user's persona and examples again next time."""
        self._cache.pop(user_id, None)
