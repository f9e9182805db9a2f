"""``vibee demo``: VIBEE end to end on one machine, no credentials, no network.

Starts the simulated Telegram network and the fake LLM providers as child processes,
runs the daemon in this process on a throw-away embedded Postgres, connects a demo
account with four chats (a digital twin, an observed group, a lead sniper, a bot), plays
a short script of incoming messages and prints, as it happens, what arrives, what VIBEE
answers and why — or why not. Ctrl-C (or the end of the script) stops everything and
leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from vibee.config import Config
from vibee.store import automation, sessions
from vibee.telegram.session_store import seal

SCRIPT: list[tuple[float, str, str, str]] = [
    (1.0, "twin", "Anna", "Hi! Are you coming to the meetup on Friday?"),
    (2.5, "group", "Boris", "Has anyone tried the new cafe downstairs?"),
    (1.5, "sniper", "Chloe", "Hello all, what's the price for a website redesign?"),
    (1.0, "bot", "NewsBot", "Breaking: automated news digest #42"),
    (1.5, "twin", "Anna", "Also, can you bring the projector?"),
    (0.3, "twin", "Anna", "And the HDMI cable please :)"),
    (2.0, "sniper", "Chloe", "I'd like to buy the premium plan as well"),
    (1.5, "sniper", "Dmitri", "Работаю над сайтом, ищу подрядчика"),
]
REASONS = {
    "replied": "answered as the owner's digital twin",
    "observe": "not answered: this chat is only observed",
    "bot": "not answered: the sender is a bot",
    "lead": "lead captured; the owner gets a card",
    "lead_duplicate": "lead already captured this hour",
    "no_trigger": "no lead: no trigger word",
    "not_addressed": "not answered: not addressed to the owner",
}


@contextlib.contextmanager
def simulator(module: str) -> Iterator[str]:
    """A simulator child process on a free loopback port; yields its base URL."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", module, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"{module} did not start")
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def demo_config(state_dir: Path, sim_url: str, llm_url: str) -> Config:
    """A configuration for the demo: the simulators, a temporary state directory."""
    return Config.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "admin": {"port": 0},
            "runtime": {"state_dir": str(state_dir), "shutdown_timeout_s": 10},
            "telegram": {"backend": "sim", "sim_url": sim_url},
            "logging": {"level": "error", "format": "text"},
            "ai": {
                "chain": ["openai", "canned"],
                "providers": {
                    "openai": {"base_url": f"{llm_url}/openai/v1", "model": "sim:latency_ms=400"}
                },
            },
        }
    )


@dataclass(slots=True)
class World:
    """What the demo created in the simulated network."""

    account_user_id: int
    chats: dict[str, int]
    peers: dict[str, int]
    our_chat_ids: dict[int, str]


async def build_world(sim_url: str, pool: asyncpg.Pool, config: Config) -> World:
    """A demo user, its Telegram account, four chats with their modes."""
    from vibee.secrets import SecretStore
    from vibee.store import users

    async with aiohttp.ClientSession() as http:

        async def call(path: str, body: dict[str, Any]) -> Any:
            async with http.post(sim_url + path, json=body) as response:
                response.raise_for_status()
                return await response.json()

        account = await call("/accounts", {"phone": "+15550000001", "authorize": True})
        peers = {}
        for name in ("Anna", "Boris", "Chloe", "Dmitri"):
            peers[name] = (await call("/users", {"name": name, "username": name.lower()}))[
                "user_id"
            ]
        peers["NewsBot"] = (await call("/users", {"name": "NewsBot", "bot": True}))["user_id"]
        me = account["user_id"]
        members = {
            "twin": [me, peers["Anna"]],
            "group": [me, peers["Boris"], peers["Anna"]],
            "sniper": [me, peers["Chloe"], peers["Dmitri"]],
            "bot": [me, peers["NewsBot"]],
            "leads": [me, peers["Boris"]],
        }
        kinds = {"twin": "private", "bot": "private"}
        chats: dict[str, int] = {}
        ours: dict[int, str] = {}
        for name, who in members.items():
            made = await call("/chats", {"type": kinds.get(name, "group"), "members": who})
            chats[name] = made["chat_id"]
            ours[made["peer_ids"].get(str(me), made["chat_id"])] = name

    async with pool.acquire() as conn:
        user = await users.create(conn, "demo", "demo-password")
    row = await sessions.create(pool, user.id, "+15550000001")
    keyring = SecretStore(config, config.state_dir()).keyring("session_keys")
    sealed, key_id = seal(keyring, row.id, bytes.fromhex(account["session"]))
    await sessions.save_authorized(pool, user.id, row.id, me, sealed, key_id)
    by_name = {v: k for k, v in ours.items()}
    fast = {"reply_delay_min_s": 1.0, "reply_delay_max_s": 2.0}
    await automation.set_chat_config(
        pool, user.id, row.id, by_name["twin"], mode="digital_twin", **fast
    )
    await automation.set_chat_config(pool, user.id, row.id, by_name["group"], mode="observe")
    await automation.set_chat_config(pool, user.id, row.id, by_name["bot"], mode="digital_twin")
    await automation.set_chat_config(
        pool,
        user.id,
        row.id,
        by_name["sniper"],
        mode="sniper",
        trigger_words=["price", "buy", "website"],
        lead_chat_id=by_name["leads"],
    )
    return World(me, chats, peers, ours)


async def play(sim_url: str, world: World) -> None:
    """Inject the script's messages, pausing between them."""
    async with aiohttp.ClientSession() as http:
        for pause, chat, sender, text in SCRIPT:
            await asyncio.sleep(pause)
            body = {"from": world.peers[sender], "text": text}
            async with http.post(f"{sim_url}/chats/{world.chats[chat]}/messages", json=body) as r:
                r.raise_for_status()


async def narrate(pool: asyncpg.Pool, world: World, stop: asyncio.Event) -> None:
    """Print each decision as it is recorded, with the reply when there is one."""
    seen = 0
    while not stop.is_set():
        rows = await pool.fetch(
            "SELECT e.id, e.reason, m.text, m.tg_chat_id, "
            "(SELECT o.text FROM messages o WHERE o.in_reply_to = m.id LIMIT 1) AS reply "
            "FROM analytics_events e JOIN messages m ON m.id = e.message_id "
            "WHERE e.id > $1 ORDER BY e.id",
            seen,
        )
        for row in rows:
            seen = row["id"]
            chat = world.our_chat_ids.get(row["tg_chat_id"], "?")
            print(f"\n[{chat} chat] → {row['text']!r}")
            print(f"   {REASONS.get(row['reason'], row['reason'])}")
            if row["reply"]:
                print(f"   VIBEE: {row['reply']!r}")
            elif row["reason"] == "replied":
                print("   (in one reply with the message after it)")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                await stop.wait()


async def run_demo(config: Config, sim_url: str) -> int:
    """The daemon, the world, the script and the narration, until done or interrupted."""
    from vibee.app import build, prepare_state
    from vibee.runtime import Notifier
    from vibee.telegram.manager import SessionManager

    state_dir, secrets = prepare_state(config)
    app = build(config, state_dir, secrets, Notifier(None))
    stop = asyncio.Event()
    try:
        await app.root.start()  # inside: Ctrl-C while starting still stops what started
        world = await build_world(sim_url, app.db.pool, config)
        manager = app.root.get("session-manager")
        if isinstance(manager, SessionManager):
            manager.wake()  # connect the account now rather than at the next sweep
        print("VIBEE demo: a connected account with 4 chats — twin, observed group, sniper, bot.")
        print("Incoming messages and what VIBEE does with them:")
        narrator = asyncio.create_task(narrate(app.db.pool, world, stop))
        try:
            await play(sim_url, world)
            await asyncio.sleep(8)  # let the last replies go out
        finally:
            stop.set()
            await narrator
        leads = await app.db.pool.fetchval("SELECT count(*) FROM leads")
        counts = await app.db.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE in_reply_to IS NOT NULL), "
            "count(*) FILTER (WHERE in_reply_to IS NULL) FROM messages "
            "WHERE direction = 'out' AND state = 'sent' AND random_id IS NOT NULL"
        )
        replies, cards = (counts[0], counts[1]) if counts is not None else (0, 0)
        print(
            f"\nDone: VIBEE sent {_n(replies, 'reply', 'replies')} and "
            f"{_n(cards, 'lead card')}; {_n(leads, 'lead')} captured."
        )
    finally:
        await app.root.stop(config.runtime.shutdown_timeout_s)
    return 0


def _n(count: int, one: str, many: str | None = None) -> str:
    """``count`` and the noun, singular or plural."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def main() -> int:
    """Run the demo; returns the exit code."""
    import uvloop

    from vibee.obs import logging as vlog

    os.environ.setdefault("VIBEE_AI_OPENAI_API_KEY", "demo-key")
    with tempfile.TemporaryDirectory(prefix="vibee-demo-") as tmp:
        # the embedded Postgres (run as the pgserver user under root) must enter it
        Path(tmp).chmod(0o755)
        with simulator("vibee.sim.telegram") as sim_url, simulator("vibee.sim.llm") as llm:
            config = demo_config(Path(tmp) / "state", sim_url, llm)
            vlog.configure(config.logging.level, config.logging.format, sys.stderr)
            try:
                return uvloop.run(run_demo(config, sim_url))
            except KeyboardInterrupt:
                print("\nstopped", file=sys.stderr)
                return 130
