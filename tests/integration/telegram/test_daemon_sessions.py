"""Logins and session actors as the daemon runs them: the real sim process, real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.integration.telegram.world import AccountRef, SimWorld, eventually
from vibee.automation.ingest import Ingest
from vibee.runtime import Supervisor
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import sessions
from vibee.telegram.gateway import Gateway, PasswordInvalid, PhoneCodeInvalid, QrLogin
from vibee.telegram.login import LoginFlow, LoginStepError
from vibee.telegram.manager import SessionManager
from vibee.telegram.session_actor import SessionActor
from vibee.telegram.session_store import seal, unseal
from vibee.telegram.sim_gateway import SimGateway

KEYRING = Keyring.parse("session_keys", new_keyring_text())


async def vibee_user(pool: asyncpg.Pool, name: str = "owner") -> int:
    user_id = await pool.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ($1, 'x') RETURNING id", name
    )
    assert isinstance(user_id, int)
    return user_id


def flow(pool: asyncpg.Pool, sim_world: SimWorld) -> LoginFlow:
    """A fresh LoginFlow: as if on another instance, nothing shared but Postgres."""
    return LoginFlow(pool, KEYRING, lambda _id, cred: SimGateway(sim_world.url, cred))


async def unauthorized_account(sim_world: SimWorld, password: str | None = None) -> str:
    phone = f"+1555{len(sim_world.accounts):03d}{id(sim_world) % 100000:05d}"
    await sim_world.request("POST", "/accounts", {"phone": phone, "password": password})
    return phone


async def test_code_login_finished_on_another_instance(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    user = await vibee_user(pool)
    phone = await unauthorized_account(sim_world)
    step = await flow(pool, sim_world).start(user, phone)
    assert step.state == "code_sent"
    row = await sessions.get(pool, user, step.session_id)
    assert row.state == "code_sent" and row.phone_code_hash
    with pytest.raises(PhoneCodeInvalid):
        await flow(pool, sim_world).submit_code(user, step.session_id, "00000")
    code = await sim_world.login_code(phone)
    done = await flow(pool, sim_world).submit_code(user, step.session_id, code)
    assert done.state == "authorized" and done.telegram_user_id
    row = await sessions.get(pool, user, step.session_id)
    assert row.state == "authorized" and row.phone_code_hash is None
    assert row.credential is not None and row.credential_key_id == KEYRING.primary_id
    gateway = SimGateway(sim_world.url, unseal(KEYRING, row.id, row.credential))
    me = await gateway.connect()
    await gateway.disconnect()
    assert me is not None and me.id == done.telegram_user_id
    with pytest.raises(LoginStepError):  # a code again, after the login finished
        await flow(pool, sim_world).submit_code(user, step.session_id, code)


async def test_two_step_password(pool: asyncpg.Pool, sim_world: SimWorld) -> None:
    user = await vibee_user(pool)
    phone = await unauthorized_account(sim_world, password="hunter22")
    step = await flow(pool, sim_world).start(user, phone)
    code = await sim_world.login_code(phone)
    step = await flow(pool, sim_world).submit_code(user, step.session_id, code)
    assert step.state == "password_needed"
    with pytest.raises(PasswordInvalid):
        await flow(pool, sim_world).submit_password(user, step.session_id, "wrong")
    step = await flow(pool, sim_world).submit_password(user, step.session_id, "hunter22")
    assert step.state == "authorized"


async def authorized_session(pool: asyncpg.Pool, user: int, account: AccountRef) -> int:
    row = await sessions.create(pool, user, account.phone)
    assert account.credential is not None
    sealed, key_id = seal(KEYRING, row.id, account.credential)
    await sessions.save_authorized(pool, user, row.id, account.user_id, sealed, key_id)
    return row.id


class Daemon:
    """ingest + sessions supervisor + manager, as vibee/app.py composes them."""

    def __init__(self, pool: asyncpg.Pool, sim_world: SimWorld) -> None:
        self.ingest = Ingest(pool, batch_size=50, queue_size=200)
        self.sessions = Supervisor("sessions", concurrent_stop=True)
        self.gateways: list[Gateway] = []

        def gateway(_session_id: int, credential: bytes | None) -> Gateway:
            made = SimGateway(sim_world.url, credential)
            self.gateways.append(made)
            return made

        self.manager = SessionManager(
            lambda: self.sessions, pool, KEYRING, gateway, self.ingest, retry_delay_s=0.05
        )

    async def __aenter__(self) -> Daemon:
        await self.ingest.start()
        await self.sessions.start()
        await self.manager.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.manager.stop(2)
        await self.sessions.stop(10)
        await self.ingest.stop(10)

    def actor(self, session_id: int) -> SessionActor | None:
        child = self.sessions.get(f"session:{session_id}")
        return child if isinstance(child, SessionActor) else None


async def stored_texts(pool: asyncpg.Pool, session_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT text FROM messages WHERE session_id = $1 AND direction = 'in' ORDER BY seq",
        session_id,
    )
    return [r["text"] for r in rows]


async def test_messages_are_stored_across_a_dropped_connection(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    user = await vibee_user(pool)
    account = await sim_world.account()
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    session_id = await authorized_session(pool, user, account)
    async with Daemon(pool, sim_world) as daemon:
        await daemon.manager.sweep()

        async def connected() -> bool:
            actor = daemon.actor(session_id)
            return actor is not None and actor.state == "connected"

        await eventually(connected)
        sent = [f"burst {i}" for i in range(200)]

        async def burst() -> None:
            for i, text in enumerate(sent):
                await sim_world.inject(chat, friend, text)
                if i == 80:
                    await sim_world.fault("disconnect", account=account)

        await burst()

        async def all_stored() -> bool:
            return await stored_texts(pool, session_id) == sent

        await eventually(all_stored, timeout=60)
        row = await sessions.get(pool, user, session_id)
        assert row.last_seq >= 200 and row.state == "connected"
    assert (await sessions.get(pool, user, session_id)).state != "logged_out"


async def test_restart_resumes_from_the_stored_seq(pool: asyncpg.Pool, sim_world: SimWorld) -> None:
    user = await vibee_user(pool)
    account = await sim_world.account()
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    session_id = await authorized_session(pool, user, account)
    async with Daemon(pool, sim_world) as daemon:
        await daemon.manager.sweep()
        await eventually(lambda: _state_is(pool, user, session_id, "connected"))
        await sim_world.inject(chat, friend, "before")
        await eventually(lambda: _has(pool, session_id, 1))
    # stopped: logged in, not connected (a `vibee history import` may use it now)
    assert (await sessions.get(pool, user, session_id)).state == "authorized"
    for i in range(5):  # while VIBEE is down
        await sim_world.inject(chat, friend, f"while down {i}")
    async with Daemon(pool, sim_world) as daemon:
        await daemon.manager.sweep()
        await eventually(lambda: _has(pool, session_id, 6))
    assert await stored_texts(pool, session_id) == ["before"] + [
        f"while down {i}" for i in range(5)
    ]


async def _has(pool: asyncpg.Pool, session_id: int, n: int) -> bool:
    return len(await stored_texts(pool, session_id)) >= n


async def test_revoked_session_is_logged_out_without_reconnect_loop(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    user = await vibee_user(pool)
    account = await sim_world.account()
    session_id = await authorized_session(pool, user, account)
    async with Daemon(pool, sim_world) as daemon:
        await daemon.manager.sweep()
        await eventually(lambda: _state_is(pool, user, session_id, "connected"))
        await sim_world.fault("revoke", account=account)
        await eventually(lambda: _state_is(pool, user, session_id, "logged_out"))
        await eventually(lambda: _no_actor(daemon, session_id))
        assert await daemon.manager.sweep() == 0  # not runnable any more
        await asyncio.sleep(0.5)
        assert len(daemon.gateways) == 1  # no new connection attempts
        row = await sessions.get(pool, user, session_id)
        assert row.state_reason and "log in again" in row.state_reason


async def _state_is(pool: asyncpg.Pool, user: int, session_id: int, state: str) -> bool:
    return (await sessions.get(pool, user, session_id)).state == state


async def _no_actor(daemon: Daemon, session_id: int) -> bool:
    return daemon.actor(session_id) is None


async def test_flood_wait_delays_the_send_and_never_drops_it(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    user = await vibee_user(pool)
    account = await sim_world.account()
    friend, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, friend])
    session_id = await authorized_session(pool, user, account)
    async with Daemon(pool, sim_world) as daemon:
        await daemon.manager.sweep()
        await eventually(lambda: _state_is(pool, user, session_id, "connected"))
        actor = daemon.actor(session_id)
        assert actor is not None
        await sim_world.fault("flood_wait", account=account, seconds=1, count=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = await actor.send(chat.seen_by(account.user_id), "hello", random_id=4242)
        assert first is not None and loop.time() - started >= 0.9
        again = await actor.send(chat.seen_by(account.user_id), "hello", random_id=4242)
        assert again is None  # RANDOM_ID_DUPLICATE: already sent, not sent twice
        texts = [m["text"] for m in await sim_world.transcript(chat)]
        assert texts.count("hello") == 1


async def test_qr_login_refreshes_then_asks_for_the_password(
    pool: asyncpg.Pool, sim_world: SimWorld
) -> None:
    user = await vibee_user(pool)
    account = await sim_world.account(password="qr-two-step")
    shown: list[str] = []
    asked: list[str] = []
    scans: list[asyncio.Task[None]] = []

    def show(token: QrLogin) -> None:
        url = token.url
        shown.append(url)
        if len(shown) == 2:  # the first code "expires" unscanned; the refreshed one is used
            scans.append(asyncio.ensure_future(sim_world.qr_accept(url, account)))

    async def password() -> str:
        asked.append("x")
        return "wrong" if len(asked) == 1 else "qr-two-step"

    login = LoginFlow(pool, KEYRING, lambda _id, cred: SimGateway(sim_world.url, cred))
    original_wait = SimGateway.qr_wait

    async def short_wait(self: SimGateway, timeout: float) -> object:
        return await original_wait(self, min(timeout, 0.3))

    SimGateway.qr_wait = short_wait  # type: ignore[method-assign,assignment]
    try:
        step = await login.qr(user, show, password, timeout_s=30)
    finally:
        SimGateway.qr_wait = original_wait  # type: ignore[method-assign]
        await asyncio.gather(*scans)
    assert step.state == "authorized" and step.telegram_user_id == account.user_id
    assert (
        len(shown) == 2
        and shown[0] != shown[1]
        and all(u.startswith("tg://login?token=") for u in shown)
    )
    assert len(asked) == 2


async def test_a_deleted_session_is_disconnected(pool: asyncpg.Pool, sim_world: SimWorld) -> None:
    user = await vibee_user(pool)
    account = await sim_world.account()
    session_id = await authorized_session(pool, user, account)
    async with Daemon(pool, sim_world) as daemon:
        await daemon.manager.sweep()
        await eventually(lambda: _state_is(pool, user, session_id, "connected"))
        assert await sessions.delete(pool, user, session_id)
        await daemon.manager.sweep()
        assert daemon.actor(session_id) is None
        info = await sim_world.info(account)
        assert info["connections"] == 0
