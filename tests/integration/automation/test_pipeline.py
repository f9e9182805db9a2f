"""The pipeline end to end in one process: the sim, real Postgres, the fake LLM over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import REGISTRY

from tests.integration.telegram.test_daemon_sessions import KEYRING, authorized_session, vibee_user
from tests.integration.telegram.world import AccountRef, ChatRef, SimWorld, eventually
from vibee.ai.providers.openai_compat import OpenAICompatProvider
from vibee.ai.router import ProviderSlot, Router
from vibee.automation.ingest import Ingest
from vibee.automation.notices import ConfigNotices
from vibee.automation.pipeline import Pipeline
from vibee.runtime import CircuitBreaker, Supervisor
from vibee.store import automation, chats, outbox, sessions, turns
from vibee.store.inbox import InboxRow, store_batch
from vibee.telegram.gateway import Gateway
from vibee.telegram.manager import SessionManager
from vibee.telegram.sim_gateway import SimGateway


class Vibee:
    """ai + ingest + pipeline + sessions + manager, as vibee/app.py composes them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        world: SimWorld,
        llm_url: str,
        model: str = "gpt",
        sweep_s: float = 0.5,
    ):
        provider = OpenAICompatProvider("openai", f"{llm_url}/openai/v1", model, "k", 10)
        self.router = Router(
            [ProviderSlot(provider, CircuitBreaker(f"pipeline-test:{id(self)}"))],
            base_delay_s=0.01,
        )
        self.sessions = Supervisor("sessions", concurrent_stop=True)
        self.pipeline = Pipeline(
            pool,
            lambda: self.router,
            lambda: self.sessions,
            worker_count=4,
            sweep_s=sweep_s,
            seed=7,
        )
        self.ingest = Ingest(pool, 50, 500, self.pipeline.notify)

        def gateway(_id: int, credential: bytes | None) -> Gateway:
            return SimGateway(world.url, credential)

        self.manager = SessionManager(
            lambda: self.sessions, pool, KEYRING, gateway, self.ingest, sweep_s=0.5
        )

    async def __aenter__(self) -> Vibee:
        for child in (self.ingest, self.pipeline, self.sessions, self.manager):
            await child.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in (self.manager, self.sessions, self.pipeline, self.ingest):
            await child.stop(10)
        await self.router.close()


async def setup_account(
    pool: asyncpg.Pool, world: SimWorld, name: str = "owner"
) -> tuple[int, int, AccountRef]:
    user = await vibee_user(pool, name)
    account = await world.account()
    return user, await authorized_session(pool, user, account), account


async def answer_at_once(pool: asyncpg.Pool, user: int, session_id: int, chat: int) -> int:
    """The chat as a digital twin with no reply delay (returns the chat's row id)."""
    return await automation.set_chat_config(
        pool, user, session_id, chat, mode="digital_twin", reply_delay_min_s=0.0,
        reply_delay_max_s=0.0,
    )  # fmt: skip


async def replies(world: SimWorld, chat: ChatRef, account: AccountRef) -> list[dict[str, Any]]:
    return [m for m in await world.transcript(chat) if m["from"] == account.user_id]


async def test_twin_replies_once_observe_and_guards_do_not(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world)
    friend, _ = await sim_world.user()
    bot, _ = await sim_world.user(bot=True)
    twin = await sim_world.chat("private", [account.user_id, friend])
    quiet = await sim_world.chat("private", [account.user_id, bot])
    watched = await sim_world.chat("group", [account.user_id, friend])
    fast = {"reply_delay_min_s": 0.0, "reply_delay_max_s": 0.0}
    await automation.set_chat_config(
        pool, user, session_id, twin.seen_by(account.user_id), mode="digital_twin", **fast
    )
    await automation.set_chat_config(
        pool, user, session_id, quiet.seen_by(account.user_id), mode="digital_twin", **fast
    )
    async with Vibee(pool, sim_world, sim_llm):
        await eventually(lambda: _connected(pool, user, session_id))
        await sim_world.inject(twin, friend, "Hi, are you free tomorrow?")
        await sim_world.inject(quiet, bot, "I am a bot, answer me")
        await sim_world.inject(watched, friend, "observed only")

        async def replied() -> list[dict[str, Any]]:
            return await replies(sim_world, twin, account)

        first = await eventually(replied)
        await asyncio.sleep(1.5)  # a few sweeps: nothing more may arrive
        assert len(await replies(sim_world, twin, account)) == 1
        assert "are you free tomorrow" in first[0]["text"]
        assert await replies(sim_world, quiet, account) == []
        assert await replies(sim_world, watched, account) == []
    reasons = await pool.fetch(
        "SELECT reason, data->>'detail' AS detail FROM analytics_events ORDER BY id"
    )
    assert {r["reason"] for r in reasons} >= {"replied", "bot", "observe"}
    why = {r["reason"]: r["detail"] for r in reasons}
    assert why["replied"] == "answered by openai"  # a sentence for the API, not ""
    states = await pool.fetch(
        "SELECT direction, state, count(*) AS n FROM messages WHERE session_id = $1 GROUP BY 1, 2",
        session_id,
    )
    counts = {(r["direction"], r["state"]): r["n"] for r in states}
    assert counts[("out", "sent")] == 1 and counts[("in", "done")] == 1
    assert counts[("in", "skipped")] == 2


async def _connected(pool: asyncpg.Pool, user: int, session_id: int) -> bool:
    return (await sessions.get(pool, user, session_id)).state == "connected"


async def test_a_chat_without_its_own_config_follows_the_users_defaults(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world)
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])  # no config of its own
    twin: dict[str, Any] = dict.fromkeys(automation.CONFIG_COLUMNS)  # every setting
    twin.update(mode="digital_twin", trigger_words=[], response_probability=1.0, cooldown_s=0)
    twin.update(reply_delay_min_s=0.0, reply_delay_max_s=0.0, tz="UTC", sniper_reply=False)
    await automation.set_chat_defaults(pool, user, **twin)
    async with Vibee(pool, sim_world, sim_llm, sweep_s=3600):
        await eventually(lambda: _connected(pool, user, session_id))
        await sim_world.inject(chat, friend, "anyone there?")
        await eventually(lambda: replies(sim_world, chat, account))
        # the defaults change while the chat's config is in memory: the notice applies it
        await automation.set_chat_defaults(pool, user, **{**twin, "mode": "observe"})
        await asyncio.sleep(0.5)
        await sim_world.inject(chat, friend, "hello again")

        async def decided() -> list[str]:
            rows = await pool.fetch(
                "SELECT reason FROM analytics_events WHERE session_id = $1 ORDER BY id",
                session_id,
            )
            return [r["reason"] for r in rows] if len(rows) == 2 else []

        assert await eventually(decided) == ["replied", "observe"]
        assert len(await replies(sim_world, chat, account)) == 1


async def test_in_a_group_the_dialog_says_who_wrote_each_message(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world)
    anna, anna_name = await sim_world.user()
    olga, olga_name = await sim_world.user()
    group = await sim_world.chat("group", [account.user_id, anna, olga])
    await answer_at_once(pool, user, session_id, group.seen_by(account.user_id))
    me = f"@{account.username}"
    for run, (first, second) in enumerate((("morning all", "are you in?"), ("so?", "well?"))):
        # the first run hands the messages over from ingest, the second reads them back
        async with Vibee(pool, sim_world, sim_llm):
            await eventually(lambda: _connected(pool, user, session_id))
            await sim_world.inject(group, anna, first)  # not addressed to us: context only
            await sim_world.inject(group, olga, f"{me} {second}")

            async def answered(n: int = run + 1) -> list[dict[str, Any]]:
                found = await replies(sim_world, group, account)
                return found if len(found) >= n else []

            reply = (await eventually(answered))[-1]["text"]
        assert f"@{anna_name}: {first}\n@{olga_name}: {me} {second}" in reply, reply
    key = (session_id, group.seen_by(account.user_id))
    request = turns.LoadRequest(key, config=False, work=False)
    async with pool.acquire() as conn:
        loaded = (await turns.load_chats(conn, [request], turns.DIALOG_TURNS))[key]
    assert loaded.dialog is not None
    texts = [text for _, direction, text, _ in loaded.dialog if direction == "in"]
    assert texts[:2] == [f"@{anna_name}: morning all", f"@{olga_name}: {me} are you in?"]


async def test_typing_is_shown_only_while_a_slow_model_writes(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "typist")
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    await answer_at_once(pool, user, session_id, chat.seen_by(account.user_id))
    for n, model in enumerate(("gpt", "sim:latency_ms=1500"), start=1):
        before = (await sim_world.request("GET", "/stats"))["typing"]
        stages_before = _stage_samples()
        async with Vibee(pool, sim_world, sim_llm, model=model):
            await eventually(lambda: _connected(pool, user, session_id))
            await sim_world.inject(chat, friend, f"question {n}")

            async def replied(n: int = n) -> bool:
                return len(await replies(sim_world, chat, account)) == n

            await eventually(replied, timeout=30)
        shown = (await sim_world.request("GET", "/stats"))["typing"] - before
        assert shown == (0 if model == "gpt" else 1), model  # at once: none; slow: one
        # the overhead's parts: one observation each, the model's 1.5 s in none of them
        grew = {k: v - stages_before[k] for k, v in _stage_samples().items()}
        assert {k: round(n) for k, n in grew.items() if k[1] == "count"} == {
            (stage, "count"): 1 for stage in ("queued", "decide", "write")
        }
        assert sum(n for k, n in grew.items() if k[1] == "sum") < 1.0


def _stage_samples() -> dict[tuple[str, str], float]:
    """(stage, "count" | "sum") of ``vibee_pipeline_stage_seconds`` now."""
    out = {}
    for stage in ("queued", "decide", "write"):
        for kind in ("count", "sum"):
            name = f"vibee_pipeline_stage_seconds_{kind}"
            out[(stage, kind)] = REGISTRY.get_sample_value(name, {"stage": stage}) or 0.0
    return out


async def test_flood_wait_on_sends_delays_but_every_reply_arrives(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "flooded")
    friends = [(await sim_world.user())[0] for _ in range(10)]
    chats = [await sim_world.chat("private", [account.user_id, f]) for f in friends]
    for chat in chats:
        await answer_at_once(pool, user, session_id, chat.seen_by(account.user_id))
    async with Vibee(pool, sim_world, sim_llm):
        await eventually(lambda: _connected(pool, user, session_id))
        await sim_world.fault("flood_wait", account=account, seconds=1, count=1)
        for chat, friend in zip(chats, friends, strict=True):
            await sim_world.inject(chat, friend, "ping")

        async def all_replied() -> bool:
            for chat in chats:
                if len(await replies(sim_world, chat, account)) != 1:
                    return False
            return True

        await eventually(all_replied, timeout=60)
    dead = await pool.fetchval("SELECT count(*) FROM dead_letters")
    assert dead == 0


async def test_a_forbidden_chat_goes_to_dead_letters_and_can_be_replayed(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str, clean_env: Path, db_url: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "deadletters")
    owner, _ = await sim_world.user()
    channel = await sim_world.chat("channel", [owner, account.user_id], admins=[owner])
    tg_chat = channel.seen_by(account.user_id)
    await automation.set_chat_config(pool, user, session_id, tg_chat, mode="observe")
    outbox_id = await pool.fetchval(
        "INSERT INTO messages (user_id, session_id, tg_chat_id, direction, text, random_id, "
        "state) VALUES ($1, $2, $3, 'out', 'hello channel', 99, 'pending') RETURNING id",
        user,
        session_id,
        tg_chat,
    )
    async with Vibee(pool, sim_world, sim_llm):

        async def dead() -> bool:
            state = await pool.fetchval("SELECT state FROM messages WHERE id = $1", outbox_id)
            return bool(state == "dead")

        await eventually(dead)
    env = {**os.environ, "VIBEE_DATABASE__URL": db_url}
    listed = subprocess.run(
        [sys.executable, "-m", "vibee", "dlq", "list"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert "This account cannot write in this chat." in line and "hello channel" in line
    letter = line.split("\t")[0]
    replayed = subprocess.run(
        [sys.executable, "-m", "vibee", "dlq", "replay", letter],
        capture_output=True,
        text=True,
        env=env,
    )
    assert replayed.returncode == 0 and "replayed" in replayed.stdout
    assert await pool.fetchval("SELECT state FROM messages WHERE id = $1", outbox_id) == "pending"
    # with VIBEE running (sweeping hourly), a replay from the command line is tried at once
    async with Vibee(pool, sim_world, sim_llm, sweep_s=3600) as vibee:
        await eventually(lambda: _connected(pool, user, session_id))
        vibee.pipeline.notify([(session_id, tg_chat)])  # as the API does for a send
        await eventually(dead)  # the channel still refuses it
        (line,) = subprocess.run(
            [sys.executable, "-m", "vibee", "dlq", "list"], capture_output=True, text=True, env=env
        ).stdout.splitlines()
        again = subprocess.run(
            [sys.executable, "-m", "vibee", "dlq", "replay", line.split("\t")[0]],
            capture_output=True,
            text=True,
            env=env,
        )
        assert again.returncode == 0, again.stderr
        await eventually(dead, timeout=10)  # tried again (and refused) long before a sweep
    missing = subprocess.run(
        [sys.executable, "-m", "vibee", "dlq", "drop", "424242"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 1 and "no dead letter 424242" in missing.stderr


async def test_sniper_records_one_lead_per_sender_per_hour_and_tells_the_owner(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "sniper")
    buyer, buyer_name = await sim_world.user()
    other, _ = await sim_world.user()
    market = await sim_world.chat("group", [account.user_id, buyer, other])
    inbox = await sim_world.chat("group", [account.user_id, other])  # where lead cards go
    tg_market = market.seen_by(account.user_id)
    await automation.set_chat_config(
        pool,
        user,
        session_id,
        tg_market,
        mode="sniper",
        trigger_words=["купить квартиру", "бот"],
        lead_chat_id=inbox.seen_by(account.user_id),
    )
    async with Vibee(pool, sim_world, sim_llm):
        await eventually(lambda: _connected(pool, user, session_id))
        await sim_world.inject(market, buyer, "Хочу КУПИТЬ   квартиру в центре!")
        await sim_world.inject(market, buyer, "И ещё раз: купить квартиру")  # same hour
        await sim_world.inject(market, other, "Ищу работу")  # 'бот' inside 'работу'
        await sim_world.inject(market, other, "Нужен бот для магазина")

        async def cards() -> list[dict[str, Any]]:
            found = await replies(sim_world, inbox, account)
            return found if len(found) >= 2 else []

        sent = await eventually(cards, timeout=30)
        await asyncio.sleep(1.0)
        assert len(await replies(sim_world, inbox, account)) == 2
    leads = await pool.fetch("SELECT sender_id, trigger FROM leads ORDER BY id")
    assert [(r["sender_id"], r["trigger"]) for r in leads] == [
        (buyer, "купить квартиру"),
        (other, "бот"),
    ]
    assert "купить квартиру" in sent[0]["text"] and "КУПИТЬ" in sent[0]["text"]
    assert f"From @{buyer_name} (user {buyer}) in chat " in sent[0]["text"]
    assert await replies(sim_world, market, account) == []  # no invitation configured
    events = await pool.fetch("SELECT reason, data->>'detail' AS detail FROM analytics_events")
    assert sorted(r["reason"] for r in events) == ["lead", "lead", "lead_duplicate", "no_trigger"]
    why = {r["reason"]: r["detail"] for r in events}
    assert why["lead"].endswith("lead recorded")
    assert why["lead_duplicate"] == (
        "trigger 'купить квартиру' matched; "
        "no new lead: this sender already has one in this chat this hour"
    )


async def test_the_sweep_takes_owned_sessions_only_and_recover_takes_one_over(
    pool: asyncpg.Pool,
) -> None:
    user = await vibee_user(pool, "owner-of-two")
    mine = (await sessions.create(pool, user, "+15550001")).id
    theirs = (await sessions.create(pool, user, "+15550002")).id
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        await store_batch(
            conn,
            [
                InboxRow(user, s, 10, "private", m, "in", 5, f"m{m}", None, m, 0, now)
                for s in (mine, theirs)
                for m in (1, 2)
            ],
        )
    owned = {mine}
    pipeline = Pipeline(
        pool, lambda: None, lambda: None, sweep_s=3600, owns=owned.__contains__, seed=1
    )
    await pipeline.start()
    try:

        async def states(session_id: int) -> set[str]:
            rows = await pool.fetch("SELECT state FROM messages WHERE session_id = $1", session_id)
            return {r["state"] for r in rows}

        await eventually(lambda: _equals(states(mine), {"skipped"}))  # observe: decided
        await asyncio.sleep(0.5)
        assert await states(theirs) == {"received"}  # another instance's
        owned.add(theirs)
        await pipeline.recover(theirs)  # this instance took it over
        await eventually(lambda: _equals(states(theirs), {"skipped"}))
    finally:
        await pipeline.stop(10)


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def test_a_reply_queued_elsewhere_goes_out_in_a_chat_the_pipeline_remembers(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "queued")
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    tg_chat = chat.seen_by(account.user_id)
    chat_row = await answer_at_once(pool, user, session_id, tg_chat)
    async with Vibee(pool, sim_world, sim_llm, sweep_s=3600) as vibee:  # no sweep to help
        await eventually(lambda: _connected(pool, user, session_id))
        await sim_world.inject(chat, friend, "hello")
        await eventually(lambda: replies(sim_world, chat, account))  # remembered now
        await chats.enqueue_send(pool, user, chat_row, "written in the app", None)
        vibee.pipeline.notify([(session_id, tg_chat)])  # what the API's notice does

        async def both() -> bool:
            return len(await replies(sim_world, chat, account)) == 2

        await eventually(both)
    sent = await replies(sim_world, chat, account)
    assert sent[1]["text"] == "written in the app"


async def test_the_remembered_dialog_is_the_stored_one(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "talker")
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    tg_chat = chat.seen_by(account.user_id)
    await answer_at_once(pool, user, session_id, tg_chat)
    async with Vibee(pool, sim_world, sim_llm) as vibee:
        await eventually(lambda: _connected(pool, user, session_id))
        for n in range(3):
            await sim_world.inject(chat, friend, f"question {n}")

            async def answered(n: int = n) -> bool:
                return len(await replies(sim_world, chat, account)) == n + 1

            await eventually(answered)
        await sim_world.inject(chat, account.user_id, "and one from my phone")
        stored = await eventually(lambda: _dialog_of(pool, session_id, tg_chat, 7))
        state = vibee.pipeline._chats.peek((session_id, tg_chat))
        assert state is not None and state.dialog is not None and state.dialog.loaded
        assert state.dialog.render() == stored


async def _dialog_of(
    pool: asyncpg.Pool, session_id: int, tg_chat: int, n: int
) -> list[tuple[str, str]]:
    """The stored dialog once it has ``n`` messages and no pending reply."""
    dialog = await outbox.recent_dialog(pool, session_id, tg_chat)
    pending = await outbox.pending(pool, session_id, tg_chat)
    return dialog if len(dialog) == n and not pending else []


async def test_a_config_changed_by_another_instance_applies_at_once(
    pool: asyncpg.Pool, sim_world: SimWorld, sim_llm: str, db_url: str
) -> None:
    user, session_id, account = await setup_account(pool, sim_world, "elsewhere")
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    tg_chat = chat.seen_by(account.user_id)
    await automation.set_chat_config(pool, user, session_id, tg_chat, mode="observe")
    other = await asyncpg.connect(db_url)  # another instance's API, say
    try:
        async with Vibee(pool, sim_world, sim_llm):
            await eventually(lambda: _connected(pool, user, session_id))
            await sim_world.inject(chat, friend, "first, only watched")

            async def decided() -> int:
                return int(await pool.fetchval("SELECT count(*) FROM analytics_events") or 0)

            await eventually(decided)  # the config is in memory now
            await automation.set_chat_config(
                other,
                user,
                session_id,
                tg_chat,
                mode="digital_twin",
                reply_delay_min_s=0.0,
                reply_delay_max_s=0.0,
            )
            await sim_world.inject(chat, friend, "second, to answer")
            answered = await eventually(lambda: replies(sim_world, chat, account))
            assert "second, to answer" in answered[0]["text"]
    finally:
        await other.close()


async def test_config_notices_arrive_and_a_lost_connection_counts_as_a_gap(
    pool: asyncpg.Pool,
) -> None:
    user = await vibee_user(pool, "noticed")
    session_id = (await sessions.create(pool, user, "+15550003")).id
    changes: list[tuple[int, int | None, int | None]] = []
    gaps: list[None] = []
    notices = ConfigNotices(pool, lambda *c: changes.append(c), lambda: gaps.append(None))
    runner = asyncio.create_task(notices.run())
    try:

        async def listening() -> bool:
            return notices.listening

        await eventually(listening)
        await automation.set_chat_config(pool, user, session_id, 77, mode="observe")
        await eventually(lambda: _equals(_now(changes), [(user, session_id, 77)]))
        before = len(gaps)
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        assert killed == 1

        async def back() -> bool:
            return len(gaps) >= before + 2 and notices.listening  # lost, then listening anew

        await eventually(back)
        await automation.set_chat_config(pool, user, session_id, 78, mode="observe")
        await eventually(lambda: _equals(_now(changes[1:]), [(user, session_id, 78)]))
        await chats.set_persona(pool, user, "Max", "", "", [])  # what the API calls
        await eventually(lambda: _equals(_now(changes[2:]), [(user, None, None)]))
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _now(value: Any) -> Any:
    return value
