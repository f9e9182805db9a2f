"""Writes for a session carry its lease epoch: a stale holder's are refused."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.integration.store.test_sessions_inbox import new_user
from vibee.store import outbox, sessions, turns


async def session_with_messages(conn: asyncpg.Connection, n: int) -> tuple[int, int]:
    user = await new_user(conn, "fenced")
    row = await sessions.create(conn, user, "+10000000077")
    await conn.execute(
        "INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, sender_id, text, "
        "direction, state) SELECT $1, $2, 10, g, 99, 'hi ' || g, 'in', 'received' "
        "FROM generate_series(1, $3) AS g",
        user,
        row.id,
        n,
    )
    return user, row.id


def reply(rows: list[outbox.InboundRow], epoch: int | None) -> turns.ReplyWrite:
    return turns.ReplyWrite(rows, "answer", 1000 + rows[-1].id, None, None, "{}", epoch)


async def test_only_the_current_holder_writes_a_reply(conn: asyncpg.Connection) -> None:
    _, session = await session_with_messages(conn, 3)
    assert [r.id for r in await sessions.fence(conn, {session: 5})] == [session]
    assert await sessions.fence(conn, {session: 5}) == []  # not newer: stale
    rows = await outbox.received(conn, session, 10)
    stale = await turns.write_replies(conn, [reply(rows[:2], 4)])
    assert stale[0].outbox_id is None
    assert len(await outbox.received(conn, session, 10)) == 3  # left for the holder
    current = await turns.write_replies(conn, [reply(rows, 5)])
    assert current[0].outbox_id is not None
    assert await outbox.received(conn, session, 10) == []
    unfenced = await turns.write_replies(conn, [reply(rows, None)])
    assert unfenced[0].outbox_id is None  # the same random_id: written before


async def test_a_new_holder_and_the_old_one_racing_answer_once(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """The old holder writes while the new one fences: whoever commits second sees the
    other's work, so the messages are answered by exactly one reply."""
    _, session = await session_with_messages(conn, 2)
    await sessions.fence(conn, {session: 1})
    rows = await outbox.received(conn, session, 10)
    old = await asyncpg.connect(db_url)
    new = await asyncpg.connect(db_url)
    try:
        transaction = old.transaction()
        await transaction.start()
        first = await turns.write_replies(old, [reply(rows, 1)])  # holds FOR KEY SHARE
        assert first[0].outbox_id is not None
        # ingest and the actor update the same row meanwhile, without waiting for it
        await asyncio.wait_for(sessions.save_last_seq(new, session, 42), 5)
        await asyncio.wait_for(sessions.set_state(new, session, "connected", epoch=1), 5)
        fencing = asyncio.create_task(sessions.fence(new, {session: 2}))
        await asyncio.sleep(0.2)
        assert not fencing.done()  # the new holder waits for the old one's statement
        await transaction.commit()
        assert [r.id for r in await fencing] == [session]
        assert await outbox.received(new, session, 10) == []  # nothing left to answer twice
        late = await turns.write_replies(old, [reply(rows[:1], 1)])
        assert late[0].outbox_id is None  # after the fence, the old holder writes nothing
    finally:
        await old.close()
        await new.close()


@pytest.mark.parametrize("epoch", [None, 3])
async def test_state_writes_are_fenced_only_when_an_epoch_is_given(
    conn: asyncpg.Connection, epoch: int | None
) -> None:
    _, session = await session_with_messages(conn, 0)
    await sessions.fence(conn, {session: 4})
    if epoch is None:
        await sessions.set_state(conn, session, "connected")
    else:
        with pytest.raises(sessions.StaleEpoch):
            await sessions.set_state(conn, session, "connected", epoch=epoch)
    state = await conn.fetchval("SELECT state FROM telegram_sessions WHERE id = $1", session)
    assert state == ("connected" if epoch is None else "new")
