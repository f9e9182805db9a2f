"""Session rows, sealed credentials, key rotation and the idempotent inbox batch insert."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from vibee.secrets import DecryptError, Keyring, new_keyring_text
from vibee.store import sessions
from vibee.store.inbox import FLAG_OUTGOING, InboxRow, store_batch
from vibee.telegram.session_store import reseal_all, seal, unseal


async def new_user(conn: asyncpg.Connection, name: str) -> int:
    user_id = await conn.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ($1, 'x') RETURNING id", name
    )
    assert isinstance(user_id, int)
    return user_id


async def test_a_user_never_sees_another_users_session(conn: asyncpg.Connection) -> None:
    alice, bob = await new_user(conn, "alice"), await new_user(conn, "bob")
    row = await sessions.create(conn, alice, "+10000000001")
    assert (await sessions.get(conn, alice, row.id)).phone == "+10000000001"
    with pytest.raises(sessions.SessionNotFound):
        await sessions.get(conn, bob, row.id)
    assert await sessions.list_for_user(conn, bob) == []
    assert not await sessions.delete(conn, bob, row.id)
    again = await sessions.create(conn, alice, "+10000000001")
    assert again.id == row.id  # the same phone is the same session


async def test_credentials_are_sealed_to_their_row(conn: asyncpg.Connection) -> None:
    ring = Keyring.parse("session_keys", new_keyring_text())
    user = await new_user(conn, "carol")
    one = await sessions.create(conn, user, "+1")
    two = await sessions.create(conn, user, "+2")
    secret = b"\x01" * 256
    sealed, key_id = seal(ring, one.id, secret)
    await sessions.save_authorized(conn, user, one.id, 777, sealed, key_id)
    stored = await sessions.get(conn, user, one.id)
    assert stored.state == "authorized" and stored.credential is not None
    assert secret not in stored.credential
    assert unseal(ring, one.id, stored.credential) == secret
    with pytest.raises(DecryptError):  # copied onto another row, it does not open
        unseal(ring, two.id, stored.credential)


async def test_rotation_reseals_every_credential(conn: asyncpg.Connection) -> None:
    old = Keyring.parse("session_keys", new_keyring_text())
    user = await new_user(conn, "dave")
    ids = []
    for phone in ("+1", "+2", "+3"):
        row = await sessions.create(conn, user, phone)
        sealed, key_id = seal(old, row.id, phone.encode())
        await sessions.save_authorized(conn, user, row.id, 1, sealed, key_id)
        ids.append(row.id)
    text = "\n".join(f"{i}:{base64.b64encode(k).decode()}" for i, k in old)
    new = Keyring.parse("session_keys", new_keyring_text(text))
    report = await reseal_all(conn, new)
    assert (report.rotated, report.current, report.unreadable) == (3, 0, [])
    for session_id, phone in zip(ids, ("+1", "+2", "+3"), strict=True):
        row = await sessions.get(conn, user, session_id)
        assert row.credential_key_id == new.primary_id and row.credential is not None
        assert unseal(new, session_id, row.credential) == phone.encode()
    again = await reseal_all(conn, new)
    assert (again.rotated, again.current) == (0, 3)
    stranger = Keyring.parse("session_keys", new_keyring_text())  # lost the old keys
    await conn.execute("UPDATE telegram_sessions SET credential_key_id = 'gone'")
    assert (await reseal_all(conn, stranger)).unreadable == ids


def inbox_row(user: int, session: int, chat: int, message: int, seq: int) -> InboxRow:
    return InboxRow(
        user_id=user,
        session_id=session,
        tg_chat_id=chat,
        chat_kind="private",
        message_id=message,
        direction="in",
        sender_id=chat,
        text=f"message {message}",
        reply_to_msg_id=None,
        seq=seq,
        flags=0,
        tg_date=datetime.now(UTC),
    )


async def test_inbox_batches_are_idempotent_and_advance_seq(conn: asyncpg.Connection) -> None:
    user = await new_user(conn, "erin")
    s1 = (await sessions.create(conn, user, "+1")).id
    s2 = (await sessions.create(conn, user, "+2")).id
    batch = [inbox_row(user, s1, 100 + i % 3, i, i) for i in range(1, 51)]
    batch += [inbox_row(user, s2, 200, i, 10 + i) for i in range(1, 6)]
    assert await store_batch(conn, batch) == 55
    assert await store_batch(conn, batch[10:]) == 0  # replayed after a crash: a no-op
    outgoing = replace(inbox_row(user, s1, 100, 60, 60), direction="out", flags=FLAG_OUTGOING)
    assert await store_batch(conn, [outgoing]) == 1
    assert (await sessions.get(conn, user, s1)).last_seq == 60
    assert (await sessions.get(conn, user, s2)).last_seq == 15
    assert await store_batch(conn, [inbox_row(user, s1, 101, 1, 1)]) == 0
    assert (await sessions.get(conn, user, s1)).last_seq == 60  # never backwards
    chats = await conn.fetch("SELECT session_id, tg_chat_id FROM chats ORDER BY 1, 2")
    assert [(r[0], r[1]) for r in chats] == [(s1, 100), (s1, 101), (s1, 102), (s2, 200)]
    states = await conn.fetch("SELECT direction, state, count(*) FROM messages GROUP BY 1, 2")
    assert {(r[0], r[1]): r[2] for r in states} == {("in", "received"): 55, ("out", "sent"): 1}
