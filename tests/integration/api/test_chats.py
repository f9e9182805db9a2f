"""Chats over HTTP: listing, messages with the decision behind each inbound one, config
round trip and validation (through ChatPolicy), sending through the outbox, persona and
leads, and that another user's chat is a 404 on every route."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.integration.api.conftest import Client, bearer, problem, register
from vibee.store import outbox, sessions


async def ok(response: Any, status: int = 200) -> Any:
    """Assert ``status``; the JSON body."""
    assert response.status == status, await response.text()
    return await response.json()


async def user(api: Client, name: str) -> tuple[int, dict[str, str]]:
    """Register ``name``: (user id, Authorization header)."""
    body = await register(api, name)
    return body["user"]["id"], bearer(body["tokens"]["access_token"])


async def chat_of(pool: asyncpg.Pool, user_id: int, tg_chat_id: int = 777) -> tuple[int, int]:
    """A session and one group chat of it for ``user_id``: (session id, VIBEE chat id)."""
    row = await sessions.create(pool, user_id, f"+1555{user_id:07d}")
    chat_id = await pool.fetchval(
        "INSERT INTO chats (user_id, session_id, tg_chat_id, kind, title) "
        "VALUES ($1, $2, $3, 'group', 'Friends') RETURNING id",
        user_id,
        row.id,
        tg_chat_id,
    )
    assert isinstance(chat_id, int)
    return row.id, chat_id


async def test_chats_messages_and_why_it_did_not_answer(api: Client, pool: asyncpg.Pool) -> None:
    alice_id, alice = await user(api, "alice")
    session_id, chat_id = await chat_of(pool, alice_id)
    listed = await ok(await api.get("/api/v1/chats", headers=alice))
    assert listed["chats"] == [
        {
            "id": chat_id,
            "session_id": session_id,
            "tg_chat_id": 777,
            "kind": "group",
            "title": "Friends",
            "mode": "observe",
        }
    ]
    other = await ok(await api.get(f"/api/v1/chats?session_id={session_id + 1}", headers=alice))
    assert other["chats"] == []
    await problem(await api.get("/api/v1/chats?session_id=abc", headers=alice), 422)

    for n in (1, 2):
        await pool.execute(
            "INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, direction, "
            "sender_id, text, state, tg_date) VALUES ($1, $2, 777, $3, 'in', 42, $4, "
            "'received', now())",
            alice_id,
            session_id,
            n,
            f"hello {n}",
        )
    first = (await outbox.received(pool, session_id, 777))[:1]
    await outbox.record(
        pool, first, "skipped", "decision", "observe", detail="observe mode", chat_id=chat_id
    )
    page = (await ok(await api.get(f"/api/v1/chats/{chat_id}/messages", headers=alice)))["messages"]
    assert [(m["text"], m["direction"], m["state"], m["decision"]) for m in page] == [
        ("hello 2", "in", "received", None),
        ("hello 1", "in", "skipped", "observe"),
    ]
    assert page[1]["decision_detail"] == "observe mode"
    older = await ok(
        await api.get(
            f"/api/v1/chats/{chat_id}/messages?limit=1&before={page[0]['id']}", headers=alice
        )
    )
    assert [m["text"] for m in older["messages"]] == ["hello 1"]
    bad = await problem(
        await api.get(f"/api/v1/chats/{chat_id}/messages?limit=0", headers=alice), 422
    )
    assert bad["errors"][0]["loc"] == "limit"


async def test_config_round_trip_and_validation(api: Client, pool: asyncpg.Pool) -> None:
    alice_id, alice = await user(api, "alice")
    _, chat_id = await chat_of(pool, alice_id)
    default = await ok(await api.get(f"/api/v1/chats/{chat_id}/config", headers=alice))
    assert default["mode"] == "observe" and default["quiet_hours"] is None
    config: dict[str, Any] = {
        "mode": "digital_twin",
        "trigger_words": ["price", "buy"],
        "response_probability": 0.5,
        "cooldown_s": 60,
        "reply_delay_min_s": 1.0,
        "reply_delay_max_s": 3.5,
        "quiet_hours": {"start": "23:00:00", "end": "07:00:00"},
        "tz": "Europe/Berlin",
        "sniper_reply": True,
        "lead_chat_id": 12345,
    }
    put = await ok(await api.put(f"/api/v1/chats/{chat_id}/config", json=config, headers=alice))
    got = await ok(await api.get(f"/api/v1/chats/{chat_id}/config", headers=alice))
    assert put == got == {"chat_id": chat_id, **config}
    listed = await ok(await api.get("/api/v1/chats", headers=alice))
    assert listed["chats"][0]["mode"] == "digital_twin"

    url = f"/api/v1/chats/{chat_id}/config"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"response_probability": 1.5}, "response_probability"),
        ({"surprise": 1}, "surprise"),
        ({"mode": "chaos"}, "mode"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),  # ChatPolicy
        ({"reply_delay_min_s": 9.0, "reply_delay_max_s": 1.0}, "reply_delay_min_s"),  # ChatPolicy
        ({"quiet_hours": {"start": "01:00", "end": "01:00"}}, "quiet_hours"),  # ChatPolicy
    ]
    for change, field in cases:
        body = await problem(await api.put(url, json={**config, **change}, headers=alice), 422)
        assert body["errors"][0]["loc"].split(".")[0] == field, body
        assert field in body["detail"]
    # nothing invalid was stored
    assert await ok(await api.get(url, headers=alice)) == got


async def test_chat_defaults_apply_to_chats_without_their_own(
    api: Client, pool: asyncpg.Pool
) -> None:
    alice_id, alice = await user(api, "alice")
    session_id, own = await chat_of(pool, alice_id)
    other = await pool.fetchval(
        "INSERT INTO chats (user_id, session_id, tg_chat_id) VALUES ($1, $2, 778) RETURNING id",
        alice_id,
        session_id,
    )
    built_in = await ok(await api.get("/api/v1/chat-defaults", headers=alice))
    assert built_in["mode"] == "observe" and built_in["reply_delay_max_s"] == 8.0
    mine = {"mode": "sniper", "trigger_words": ["price"]}
    await ok(await api.put(f"/api/v1/chats/{own}/config", json=mine, headers=alice))
    defaults = {"mode": "digital_twin", "cooldown_s": 30, "tz": "Europe/Berlin"}
    put = await ok(await api.put("/api/v1/chat-defaults", json=defaults, headers=alice))
    assert put == await ok(await api.get("/api/v1/chat-defaults", headers=alice))
    assert {k: put[k] for k in defaults} == defaults and "chat_id" not in put
    follows = await ok(await api.get(f"/api/v1/chats/{other}/config", headers=alice))
    assert (follows["chat_id"], follows["mode"], follows["cooldown_s"]) == (
        other,
        "digital_twin",
        30,
    )
    keeps = await ok(await api.get(f"/api/v1/chats/{own}/config", headers=alice))
    assert (keeps["mode"], keeps["trigger_words"]) == ("sniper", ["price"])
    for change, field in (
        ({"response_probability": 2}, "response_probability"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),  # ChatPolicy
    ):
        body = await problem(
            await api.put("/api/v1/chat-defaults", json=change, headers=alice), 422
        )
        assert body["errors"][0]["loc"] == field, body
    assert await ok(await api.get("/api/v1/chat-defaults", headers=alice)) == put
    _, bob = await user(api, "bob")  # defaults are per user
    assert (await ok(await api.get("/api/v1/chat-defaults", headers=bob)))["mode"] == "observe"


async def test_send_writes_a_pending_outbox_row(api: Client, pool: asyncpg.Pool) -> None:
    alice_id, alice = await user(api, "alice")
    session_id, chat_id = await chat_of(pool, alice_id)
    url = f"/api/v1/chats/{chat_id}/send"
    first = await ok(
        await api.post(url, json={"text": "hi there", "reply_to": 5}, headers=alice), 202
    )
    second = await ok(await api.post(url, json={"text": "x" * 4096}, headers=alice), 202)
    assert first["state"] == second["state"] == "pending"
    rows = await outbox.pending(pool, session_id, 777)
    assert [(r.id, r.text, r.reply_to_msg_id) for r in rows] == [
        (first["id"], "hi there", 5),
        (second["id"], "x" * 4096, None),
    ]
    assert rows[0].random_id != rows[1].random_id and rows[0].user_id == alice_id
    too_long = await problem(await api.post(url, json={"text": "x" * 4097}, headers=alice), 422)
    assert too_long["errors"][0]["loc"] == "text"
    empty = await problem(await api.post(url, json={"text": ""}, headers=alice), 422)
    assert empty["errors"][0]["loc"] == "text"
    assert len(await outbox.pending(pool, session_id, 777)) == 2


async def test_another_users_chat_is_404_everywhere(api: Client, pool: asyncpg.Pool) -> None:
    alice_id, alice = await user(api, "alice")
    _, bob = await user(api, "bob")
    session_id, chat_id = await chat_of(pool, alice_id)
    config = {"mode": "digital_twin"}
    for method, path, body in [
        ("GET", f"/api/v1/chats/{chat_id}/messages", None),
        ("GET", f"/api/v1/chats/{chat_id}/config", None),
        ("PUT", f"/api/v1/chats/{chat_id}/config", config),
        ("POST", f"/api/v1/chats/{chat_id}/send", {"text": "spam"}),
        ("GET", f"/api/v1/sessions/{session_id}", None),
        ("DELETE", f"/api/v1/sessions/{session_id}", None),
        ("GET", "/api/v1/chats/0/config", None),
        ("GET", f"/api/v1/chats/{2**63}/config", None),
    ]:
        await problem(await api.request(method, path, json=body, headers=bob), 404)
    assert (await ok(await api.get("/api/v1/chats", headers=bob)))["chats"] == []
    assert (await ok(await api.get(f"/api/v1/chats?session_id={session_id}", headers=bob)))[
        "chats"
    ] == []
    assert await outbox.pending(pool, session_id, 777) == []
    still = await ok(await api.get(f"/api/v1/chats/{chat_id}/config", headers=alice))
    assert still["mode"] == "observe"


async def test_persona_and_leads(api: Client, pool: asyncpg.Pool) -> None:
    alice_id, alice = await user(api, "alice")
    _, bob = await user(api, "bob")
    empty = await ok(await api.get("/api/v1/persona", headers=alice))
    nothing = {"name": "", "bio": "", "style_rules": "", "examples": [], "examples_derived": False}
    assert empty == nothing
    session_id, chat_id = await chat_of(pool, alice_id)
    await pool.execute(  # something Alice wrote herself (not a reply of VIBEE's)
        "INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, direction, text, "
        "state) VALUES ($1, $2, 777, 5, 'out', 'ok see you there', 'sent')",
        alice_id,
        session_id,
    )
    derived = await ok(await api.get("/api/v1/persona", headers=alice))
    assert derived == {**nothing, "examples": ["ok see you there"], "examples_derived": True}
    persona = {"name": "Alice", "bio": "Designer", "style_rules": "short", "examples": ["hi!"]}
    written = {**persona, "examples_derived": False}
    assert await ok(await api.put("/api/v1/persona", json=persona, headers=alice)) == written
    assert await ok(await api.get("/api/v1/persona", headers=alice)) == written
    assert await ok(await api.get("/api/v1/persona", headers=bob)) == empty
    bad = await problem(
        await api.put("/api/v1/persona", json={**persona, "examples": "hi"}, headers=alice), 422
    )
    assert bad["errors"][0]["loc"] == "examples"

    await pool.execute(
        "INSERT INTO leads (user_id, session_id, chat_id, sender_id, trigger, text) "
        "VALUES ($1, $2, $3, 42, 'price', 'what is the price?')",
        alice_id,
        session_id,
        chat_id,
    )
    leads = (await ok(await api.get("/api/v1/leads?limit=10", headers=alice)))["leads"]
    assert [(lead["chat_id"], lead["trigger"], lead["text"]) for lead in leads] == [
        (chat_id, "price", "what is the price?")
    ]
    assert (await ok(await api.get("/api/v1/leads", headers=bob)))["leads"] == []
    await problem(await api.get("/api/v1/leads?limit=1000", headers=alice), 422)
