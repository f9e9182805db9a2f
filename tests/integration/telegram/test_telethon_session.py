"""TelethonSession against a real Postgres: write-through, reload, the auth key sealed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import pytest
from telethon.crypto import AuthKey
from telethon.tl import functions, types

from tests.unit.telegram.test_telethon_fakes import API_HASH, API_ID, ME, NOW, install, me_user
from vibee.secrets import DecryptError, Keyring, new_keyring_text
from vibee.store import sessions, telethon_state, users
from vibee.telegram import telethon_session
from vibee.telegram.session_store import unseal
from vibee.telegram.telethon_credential import TelethonCredential
from vibee.telegram.telethon_gateway import TelethonGateway, telethon_gateways
from vibee.telegram.telethon_session import TelethonSession

ALICE = types.User(id=456, access_hash=4560, first_name="Alice", username="Alice", phone="4471")
CHANNEL = types.Channel(
    id=777, title="News", photo=types.ChatPhotoEmpty(), date=NOW, broadcast=True, access_hash=77
)


def state(pts: int, seq: int = 1) -> Any:
    return types.updates.State(pts=pts, qts=3, date=NOW, seq=seq, unread_count=0)


async def until_sent(sender: Any, kind: type) -> None:
    """Let Telethon's update loop run until it sent a ``kind`` request (bounded)."""
    for _ in range(200):
        if sender.sent(kind):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"no {kind.__name__} was sent")


@pytest.fixture
async def session_id(conn: asyncpg.Connection) -> int:
    """A Telegram session row (and its user)."""
    owner = await users.create(conn, "owner", "long-enough-password")
    return (await sessions.create(conn, owner.id, "+447700900123")).id


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse("session_keys", new_keyring_text())


async def test_persists_and_reloads_with_the_auth_key_sealed(
    pool: asyncpg.Pool, conn: asyncpg.Connection, session_id: int, keyring: Keyring
) -> None:
    key = os.urandom(256)
    first = TelethonSession(session_id, keyring, pool)
    await first.open(fresh=True)
    first.set_dc(4, "149.154.167.91", 443)
    first.auth_key = AuthKey(key)
    first.user_id = ME
    first.set_update_state(0, state(100, seq=7))
    first.set_update_state(1000000777, state(55))
    first.process_entities(
        types.contacts.ResolvedPeer(peer=types.PeerUser(456), users=[ALICE], chats=[CHANNEL])
    )
    assert await first.flush()
    await first.aclose()

    raw = await conn.fetchrow(
        "SELECT credential, credential_key_id FROM telegram_sessions WHERE id = $1", session_id
    )
    assert raw is not None and raw["credential_key_id"] == keyring.primary_id
    sealed = bytes(raw["credential"])
    assert key not in sealed and key[:32] not in sealed  # encrypted at rest
    opened = TelethonCredential.decode(unseal(keyring, session_id, sealed))
    assert (opened.auth_key, opened.dc_id, opened.user_id) == (key, 4, ME)
    with pytest.raises(DecryptError):  # bound to its row: another row's data does not open it
        keyring.decrypt(sealed, associated_data=f"telegram_session:{session_id + 1}".encode())

    second = TelethonSession(session_id, keyring, pool)
    await second.open(fresh=False)
    assert second.get_update_state(0).pts == 100 and second.get_update_state(0).seq == 7
    assert second.get_update_state(1000000777).pts == 55
    assert second.get_input_entity(456) == types.InputPeerUser(456, 4560)
    assert second.get_input_entity("alice") == types.InputPeerUser(456, 4560)
    assert second.get_input_entity("+4471") == types.InputPeerUser(456, 4560)
    assert second.get_input_entity(-1000000000777) == types.InputPeerChannel(777, 77)
    await second.aclose()


async def test_a_fresh_key_forgets_the_old_state(
    pool: asyncpg.Pool, session_id: int, keyring: Keyring
) -> None:
    old = TelethonSession(session_id, keyring, pool)
    await old.open(fresh=True)
    old.set_update_state(0, state(100))
    old.process_entities(types.contacts.ResolvedPeer(types.PeerUser(456), [ALICE], []))
    await old.aclose()
    assert await telethon_state.load_states(pool, session_id) != []

    new = TelethonSession(session_id, keyring, pool)
    await new.open(fresh=True)  # a new login on the same row
    assert await new.flush()
    await new.aclose()
    assert await telethon_state.load_states(pool, session_id) == []
    assert await telethon_state.load_entities(pool, session_id, 10) == []


async def test_writes_coalesce_and_only_changes_are_written(
    pool: asyncpg.Pool, conn: asyncpg.Connection, session_id: int, keyring: Keyring
) -> None:
    s = TelethonSession(session_id, keyring, pool)
    await s.open(fresh=True)
    for pts in range(1, 501):
        s.set_update_state(0, state(pts))
    assert await s.flush()
    assert (await telethon_state.load_states(pool, session_id))[0].pts == 500
    peer = types.contacts.ResolvedPeer(types.PeerUser(456), [ALICE], [])
    s.process_entities(peer)
    assert await s.flush()
    await conn.execute("UPDATE telethon_entities SET name = 'changed behind its back'")
    s.process_entities(peer)  # unchanged: nothing to write
    assert await s.flush()
    assert await conn.fetchval("SELECT name FROM telethon_entities") == "changed behind its back"
    await s.aclose()


async def test_a_failed_write_is_kept_and_retried(
    pool: asyncpg.Pool, session_id: int, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = telethon_state.save
    calls: list[int] = []

    async def flaky(db: Any, sid: int, write: Any) -> bool:
        calls.append(sid)
        if len(calls) == 1:
            raise OSError("connection refused")
        return await real_save(db, sid, write)

    monkeypatch.setattr(telethon_state, "save", flaky)
    monkeypatch.setattr(telethon_session, "BASE_BACKOFF_S", 0.0)
    s = TelethonSession(session_id, keyring, pool)
    await s.open(fresh=False)
    s.set_update_state(0, state(42))
    assert await s.flush()
    assert len(calls) >= 2
    assert (await telethon_state.load_states(pool, session_id))[0].pts == 42
    await s.aclose()


async def test_a_deleted_session_row_stops_the_writes(
    pool: asyncpg.Pool, conn: asyncpg.Connection, session_id: int, keyring: Keyring
) -> None:
    s = TelethonSession(session_id, keyring, pool)
    await s.open(fresh=True)
    await conn.execute("DELETE FROM telegram_sessions WHERE id = $1", session_id)
    s.set_update_state(0, state(1))
    s.process_entities(types.contacts.ResolvedPeer(types.PeerUser(456), [ALICE], []))
    assert await s.flush()  # settled: nothing left to write, nothing raised
    await s.aclose()
    assert await conn.fetchval("SELECT count(*) FROM telethon_entities") == 0


async def test_memory_holds_at_most_max_entities(
    pool: asyncpg.Pool, session_id: int, keyring: Keyring
) -> None:
    s = TelethonSession(session_id, keyring, pool, max_entities=3)
    await s.open(fresh=True)
    people = [
        types.User(id=500 + i, access_hash=i + 1, first_name=f"P{i}", username=f"p{i}x")
        for i in range(5)
    ]
    s.process_entities(types.contacts.ResolvedPeer(types.PeerUser(500), people, []))
    assert await s.flush()
    assert s.get_entity_rows_by_id(500) is None and s.get_entity_rows_by_username("p0x") is None
    assert s.get_entity_rows_by_id(504) == (504, 5)
    assert len(await telethon_state.load_entities(pool, session_id, 100)) == 3
    await s.aclose()


async def test_the_gateway_logs_in_catches_up_and_resumes_from_postgres(
    pool: asyncpg.Pool, conn: asyncpg.Connection, session_id: int, keyring: Keyring
) -> None:
    """Login on one gateway; a new one built from the row resumes from the stored state."""
    from vibee.config import TelegramConfig

    build = telethon_gateways(TelegramConfig(api_id=API_ID), API_HASH, keyring, pool)
    first = build(session_id, None)
    sender = install(first, me=None)
    assert await first.connect() is None
    sender.handlers[functions.auth.SignInRequest] = lambda req: types.auth.Authorization(
        user=me_user()
    )
    result = await first.sign_in("+447700900123", "12345", "h")
    assert result.credential is not None  # type: ignore[union-attr]
    await first.disconnect()  # Telethon saves its update state; the session flushes it
    sender.me, sender.pts = me_user(), 110  # updates arrived while it was away
    sender.requests.clear()
    assert await first.connect() is not None  # again, as the session actor does
    await until_sent(sender, functions.updates.GetDifferenceRequest)
    await first.disconnect()
    assert sender.sent(functions.updates.GetDifferenceRequest)[0].pts == 100  # caught up

    row = await conn.fetchrow("SELECT credential FROM telegram_sessions WHERE id = $1", session_id)
    assert row is not None
    stored = unseal(keyring, session_id, bytes(row["credential"]))
    assert TelethonCredential.decode(stored).user_id == ME  # written through, sealed
    assert [s.pts for s in await telethon_state.load_states(pool, session_id)] == [100]

    second = build(session_id, stored)
    assert isinstance(second, TelethonGateway)
    other = install(second, me=me_user())
    me = await second.connect(last_seq=97)
    assert me is not None and me.id == ME
    await until_sent(other, functions.updates.GetDifferenceRequest)
    await second.disconnect()
    (diff, *_) = other.sent(functions.updates.GetDifferenceRequest)
    assert diff.pts == 97  # the stored state, rewound to the last stored update
