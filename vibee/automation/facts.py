"""What the pipeline knows about one stored message: the policy's facts, the reply's
``random_id``, the lead card."""

from __future__ import annotations

import hashlib

from vibee.automation.policy import ChatType, Facts
from vibee.store.inbox import FLAG_BOT, FLAG_CHANNEL, FLAG_GROUP, FLAG_OUTGOING
from vibee.store.outbox import InboundRow
from vibee.telegram.session_actor import SessionActor


def random_id_for(session_id: int, inbound_row_id: int) -> int:
    """The reply's ``random_id``: the same for the same message, on every instance."""
    digest = hashlib.sha256(f"vibee-reply:{session_id}:{inbound_row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True) or 1


def facts_of(
    row: InboundRow,
    actor: SessionActor | None,
    ours: set[int] | frozenset[int] = frozenset(),
) -> Facts:
    """What the policy needs to know about one stored message (``ours``: ids of the
    account's own messages in the chat that messages reply to)."""
    kind: ChatType = "private"
    if row.flags & FLAG_CHANNEL:
        kind = "channel"
    elif row.flags & FLAG_GROUP:
        kind = "group"
    return Facts(
        text=row.text,
        date=row.tg_date,
        outgoing=bool(row.flags & FLAG_OUTGOING),
        from_bot=bool(row.flags & FLAG_BOT),
        chat_type=kind,
        mentions=_mentions(row.text),
        reply_to_us=row.reply_to_msg_id is not None and row.reply_to_msg_id in ours,
        reply_to_other=row.reply_to_msg_id is not None and row.reply_to_msg_id not in ours,
        our_username=actor.username if actor is not None else None,
        connected_at=actor.connected_at if actor is not None else None,
        stored_before=actor is not None
        and actor.connected_at is not None
        and row.created_at < actor.connected_at,
    )


def lead_card(row: InboundRow, trigger: str) -> str:
    """The note the owner gets about a lead: who, where, what, which trigger."""
    quoted = row.text if len(row.text) <= 500 else row.text[:500] + "…"
    who = f"user {row.sender_id}"
    if row.sender_username:
        who = f"@{row.sender_username} ({who})"
    return f"New lead (trigger: {trigger})\nFrom {who} in chat {row.tg_chat_id}:\n«{quoted}»"


def _mentions(text: str) -> tuple[str, ...]:
    return tuple(w[1:].rstrip(".,:;!?") for w in text.split() if w.startswith("@") and len(w) > 1)
