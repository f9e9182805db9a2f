"""Chats, their messages and automation settings, sending, the persona and the leads.

``GET  /api/v1/chats?session_id=``                  → the user's chats
``GET  /api/v1/chats/{id}/messages?limit=&before=`` → a page of messages, newest first,
                                                      inbound ones with their decision
``GET  /api/v1/chats/{id}/config``                  → the effective settings
``PUT  /api/v1/chats/{id}/config``                  → replace them (checked by ChatPolicy)
``POST /api/v1/chats/{id}/send``                    {text, reply_to?} → 202 {id, pending}
``GET  /api/v1/chat-defaults``  ``PUT …``           the settings of chats without their own
``GET  /api/v1/persona``  ``PUT /api/v1/persona``   who the digital twin speaks as
``GET  /api/v1/leads?limit=``                       the newest leads

A chat ``{id}`` is VIBEE's id for (session, Telegram chat); another user's is a 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vibee.api.errors import InvalidBody, NotFound
from vibee.api.ratelimit import Limit
from vibee.api.routes.params import Params, id_param, int_query, path_id, query_int
from vibee.api.routing import Call, Route, json_response
from vibee.api.schemas_chats import (
    ChatConfigIn,
    ChatConfigOut,
    ChatDefaultsOut,
    ChatList,
    ChatOut,
    LeadList,
    LeadOut,
    MessageList,
    MessageOut,
    PersonaIn,
    PersonaOut,
    QuietHours,
    SendAccepted,
    SendRequest,
)
from vibee.automation.context import profile
from vibee.automation.policy import ChatPolicy, PolicyError
from vibee.store import automation, chats

MAX_PAGE = 200
DEFAULT_PAGE = 50


def _chat_out(row: chats.ChatRow) -> ChatOut:
    return ChatOut(
        id=row.id,
        session_id=row.session_id,
        tg_chat_id=row.tg_chat_id,
        kind=row.kind,
        title=row.title,
        mode=row.mode,
    )


async def _chat(call: Call) -> chats.ChatRow:
    chat_id = path_id(call, "chat")
    try:
        return await chats.get_chat(call.ctx.pool(), call.user.id, chat_id)
    except chats.ChatNotFound:
        raise NotFound(f"no chat {chat_id}") from None


async def list_chats(call: Call) -> web.Response:
    """The caller's chats, of one session if asked."""
    session_id = query_int(call, "session_id", default=None)
    rows = await chats.list_chats(call.ctx.pool(), call.user.id, session_id)
    return json_response(ChatList(chats=[_chat_out(r) for r in rows]))


async def list_messages(call: Call) -> web.Response:
    """A page of the chat's messages with the decision taken on each inbound one."""
    chat_id = path_id(call, "chat")
    limit = query_int(call, "limit", default=DEFAULT_PAGE, high=MAX_PAGE)
    before = query_int(call, "before", default=None)
    assert limit is not None
    try:
        rows = await chats.messages(call.ctx.pool(), call.user.id, chat_id, limit, before)
    except chats.ChatNotFound:
        raise NotFound(f"no chat {chat_id}") from None
    out = [
        MessageOut(
            id=r.id,
            direction="in" if r.direction == "in" else "out",
            text=r.text,
            state=r.state,
            message_id=r.message_id,
            reply_to_msg_id=r.reply_to_msg_id,
            created_at=r.created_at,
            decision=r.decision,
            decision_detail=r.decision_detail,
        )
        for r in rows
    ]
    return json_response(MessageList(messages=out))


def _settings_out(config: automation.ChatConfig) -> ChatDefaultsOut:
    quiet = None
    if config.quiet_hours_start is not None and config.quiet_hours_end is not None:
        quiet = QuietHours(start=config.quiet_hours_start, end=config.quiet_hours_end)
    return ChatDefaultsOut(
        mode=config.mode,
        trigger_words=list(config.trigger_words),
        response_probability=round(config.response_probability, 6),
        cooldown_s=config.cooldown_s,
        reply_delay_min_s=round(config.reply_delay_min_s, 6),
        reply_delay_max_s=round(config.reply_delay_max_s, 6),
        quiet_hours=quiet,
        tz=config.tz,
        sniper_reply=config.sniper_reply,
        lead_chat_id=config.lead_chat_id,
    )


def _config_out(config: automation.ChatConfig) -> ChatConfigOut:
    return ChatConfigOut(chat_id=config.chat_id, **_settings_out(config).model_dump())


def _settings_of(body: ChatConfigIn) -> dict[str, Any]:
    """The store's columns for ``body`` (checked by :func:`check_policy` first)."""
    check_policy(body)
    quiet = body.quiet_hours
    return {
        "mode": body.mode,
        "trigger_words": list(body.trigger_words),
        "response_probability": body.response_probability,
        "cooldown_s": body.cooldown_s,
        "reply_delay_min_s": body.reply_delay_min_s,
        "reply_delay_max_s": body.reply_delay_max_s,
        "quiet_hours_start": None if quiet is None else quiet.start,
        "quiet_hours_end": None if quiet is None else quiet.end,
        "tz": body.tz,
        "sniper_reply": body.sniper_reply,
        "lead_chat_id": body.lead_chat_id,
    }


async def _effective(call: Call, chat: chats.ChatRow) -> web.Response:
    config = await automation.chat_config(
        call.ctx.pool(), call.user.id, chat.session_id, chat.tg_chat_id
    )
    if config is None:  # deleted meanwhile
        raise NotFound(f"no chat {chat.id}")
    return json_response(_config_out(config))


async def get_config(call: Call) -> web.Response:
    """The chat's effective automation settings."""
    return await _effective(call, await _chat(call))


def check_policy(body: ChatConfigIn) -> None:
    """Check the settings as the pipeline will read them; a PolicyError is a 422 naming
    the field."""
    quiet = None if body.quiet_hours is None else (body.quiet_hours.start, body.quiet_hours.end)
    try:
        ChatPolicy(
            mode=body.mode,
            trigger_words=tuple(body.trigger_words),
            response_probability=body.response_probability,
            cooldown_s=body.cooldown_s,
            reply_delay_min_s=body.reply_delay_min_s,
            reply_delay_max_s=body.reply_delay_max_s,
            quiet_hours=quiet,
            tz=body.tz,
            sniper_reply=body.sniper_reply,
        )
    except PolicyError as exc:
        msg = str(exc).removeprefix(f"{exc.field}: ")
        raise InvalidBody(
            422,
            str(exc),
            title="Invalid request body",
            errors=[{"loc": exc.field, "msg": msg, "type": "policy"}],
        ) from None


async def put_config(call: Call) -> web.Response:
    """Replace the chat's automation settings."""
    chat = await _chat(call)
    settings = _settings_of(call.body_as(ChatConfigIn))
    try:
        await automation.set_chat_config(
            call.ctx.pool(), call.user.id, chat.session_id, chat.tg_chat_id, **settings
        )
    except LookupError:
        raise NotFound(f"no chat {chat.id}") from None
    return await _effective(call, chat)


async def get_defaults(call: Call) -> web.Response:
    """The settings of every chat that has none of its own."""
    defaults = await automation.chat_defaults(call.ctx.pool(), call.user.id)
    return json_response(_settings_out(defaults))


async def put_defaults(call: Call) -> web.Response:
    """Replace the user's chat defaults (chats with settings of their own keep them)."""
    settings = _settings_of(call.body_as(ChatConfigIn))
    await automation.set_chat_defaults(call.ctx.pool(), call.user.id, **settings)
    return await get_defaults(call)


async def send(call: Call) -> web.Response:
    """Queue a message in the chat's outbox; the pipeline sends it."""
    chat_id = path_id(call, "chat")
    body = call.body_as(SendRequest)
    try:
        outbox_id = await chats.enqueue_send(
            call.ctx.pool(), call.user.id, chat_id, body.text, body.reply_to
        )
    except chats.ChatNotFound:
        raise NotFound(f"no chat {chat_id}") from None
    chat = await _chat(call)
    await call.ctx.notices.chat_has_work(chat.session_id, chat.tg_chat_id)
    return json_response(SendAccepted(id=outbox_id), 202)


async def get_persona(call: Call) -> web.Response:
    """The caller's persona (empty when none was written) and the examples the twin uses:
    the written ones, else the owner's own recent messages."""
    persona, own = await profile(call.ctx.pool(), call.user.id)  # as the twin reads them
    found = persona or automation.Persona()
    return json_response(
        PersonaOut(
            name=found.name,
            bio=found.bio,
            style_rules=found.style_rules,
            examples=list(found.examples) or own,
            examples_derived=bool(own),
        )
    )


async def put_persona(call: Call) -> web.Response:
    """Replace the caller's persona."""
    body = call.body_as(PersonaIn)
    await chats.set_persona(
        call.ctx.pool(), call.user.id, body.name, body.bio, body.style_rules, body.examples
    )
    return await get_persona(call)


async def list_leads(call: Call) -> web.Response:
    """The caller's newest leads."""
    limit = query_int(call, "limit", default=DEFAULT_PAGE, high=MAX_PAGE)
    assert limit is not None
    rows = await chats.leads(call.ctx.pool(), call.user.id, limit)
    out = [
        LeadOut(
            id=r.id,
            session_id=r.session_id,
            chat_id=r.chat_id,
            sender_id=r.sender_id,
            trigger=r.trigger,
            text=r.text,
            created_at=r.created_at,
        )
        for r in rows
    ]
    return json_response(LeadList(leads=out))


_CHAT_ID = id_param("VIBEE's chat id (see GET /api/v1/chats).")
_LIMIT = int_query("limit", "At most this many items.", high=MAX_PAGE, default=DEFAULT_PAGE)
PARAMS: Params = {
    ("GET", "/api/v1/chats"): [int_query("session_id", "Only the chats of this session.")],
    ("GET", "/api/v1/chats/{id}/messages"): [
        _CHAT_ID,
        _LIMIT,
        int_query("before", "Only messages with an id below this (the next page)."),
    ],
    ("GET", "/api/v1/chats/{id}/config"): [_CHAT_ID],
    ("PUT", "/api/v1/chats/{id}/config"): [_CHAT_ID],
    ("POST", "/api/v1/chats/{id}/send"): [_CHAT_ID],
    ("GET", "/api/v1/leads"): [_LIMIT],
}


def routes() -> list[Route]:
    """The chat, persona and lead routes."""
    api = (Limit.API,)
    return [
        Route(
            "GET",
            "/api/v1/chats",
            list_chats,
            "list_chats",
            "The user's chats (of one session with ?session_id=).",
            "chats",
            response=ChatList,
            limits=api,
            errors=(422,),
        ),
        Route(
            "GET",
            "/api/v1/chats/{id}/messages",
            list_messages,
            "list_chat_messages",
            "A page of the chat's messages, newest first; each inbound one with the "
            "automation's decision and why.",
            "chats",
            response=MessageList,
            limits=api,
            errors=(404, 422),
        ),
        Route(
            "GET",
            "/api/v1/chats/{id}/config",
            get_config,
            "get_chat_config",
            "The chat's effective automation settings.",
            "chats",
            response=ChatConfigOut,
            limits=api,
            errors=(404,),
        ),
        Route(
            "PUT",
            "/api/v1/chats/{id}/config",
            put_config,
            "put_chat_config",
            "Replace the chat's automation settings.",
            "chats",
            response=ChatConfigOut,
            body=ChatConfigIn,
            limits=api,
            errors=(404,),
        ),
        Route(
            "GET",
            "/api/v1/chat-defaults",
            get_defaults,
            "get_chat_defaults",
            "The automation settings of every chat that has none of its own.",
            "chats",
            response=ChatDefaultsOut,
            limits=api,
        ),
        Route(
            "PUT",
            "/api/v1/chat-defaults",
            put_defaults,
            "put_chat_defaults",
            "Replace the user's chat defaults (a chat whose config was set keeps it).",
            "chats",
            response=ChatDefaultsOut,
            body=ChatConfigIn,
            limits=api,
        ),
        Route(
            "POST",
            "/api/v1/chats/{id}/send",
            send,
            "send_message",
            "Send a message in the chat as the account (queued; the pipeline sends it).",
            "chats",
            ok=202,
            response=SendAccepted,
            body=SendRequest,
            limits=api,
            errors=(404,),
        ),
        Route(
            "GET",
            "/api/v1/persona",
            get_persona,
            "get_persona",
            "Who the digital twin speaks as.",
            "persona",
            response=PersonaOut,
            limits=api,
        ),
        Route(
            "PUT",
            "/api/v1/persona",
            put_persona,
            "put_persona",
            "Replace the persona.",
            "persona",
            response=PersonaOut,
            body=PersonaIn,
            limits=api,
        ),
        Route(
            "GET",
            "/api/v1/leads",
            list_leads,
            "list_leads",
            "The newest leads the sniper recorded.",
            "leads",
            response=LeadList,
            limits=api,
            errors=(422,),
        ),
    ]
