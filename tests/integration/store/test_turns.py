"""The pipeline's grouped statements: replies marked sent, the account's own copies dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from tests.integration.store.test_fencing import reply, session_with_messages
from vibee.store import inbox, outbox, turns


async def pending_replies(conn: asyncpg.Connection, n: int) -> list[outbox.OutboxRow]:
    """A session whose chat 10 has ``n`` replies written and not yet sent."""
    _, session = await session_with_messages(conn, n)
    rows = await outbox.received(conn, session, 10)
    await turns.write_replies(conn, [reply([row], None) for row in rows])
    return await outbox.pending(conn, session, 10)


def own_copy(item: outbox.OutboxRow, message_id: int) -> inbox.InboxRow:
    """The account's own update for a sent reply, as ingest stores it."""
    return inbox.InboxRow(
        item.user_id, item.session_id, item.tg_chat_id, "private", message_id, "out", 1,
        item.text, None, 0, inbox.FLAG_OUTGOING, datetime.now(UTC),
    )  # fmt: skip


async def out_rows(conn: asyncpg.Connection, session: int) -> list[tuple[int | None, str, bool]]:
    rows = await conn.fetch(
        "SELECT message_id, state, random_id IS NOT NULL AS ours FROM messages "
        "WHERE session_id = $1 AND direction = 'out' ORDER BY message_id NULLS LAST",
        session,
    )
    return [(r["message_id"], r["state"], r["ours"]) for r in rows]


async def test_replies_are_marked_sent_in_one_statement(conn: asyncpg.Connection) -> None:
    items = await pending_replies(conn, 3)
    session = items[0].session_id
    # one was already sent before a crash: Telegram refused the random_id, no message id
    await turns.mark_sent_batch(conn, [(items[2], None), (items[0], 501), (items[1], 502)])
    assert await outbox.pending(conn, session, 10) == []
    assert await out_rows(conn, session) == [
        (501, "sent", True),
        (502, "sent", True),
        (None, "sent", True),
    ]
    attempts = await conn.fetch(
        "SELECT attempts FROM messages WHERE session_id = $1 AND direction = 'out'", session
    )
    assert [r["attempts"] for r in attempts] == [1, 1, 1]


async def test_the_accounts_own_copy_gives_way_to_the_reply(conn: asyncpg.Connection) -> None:
    items = await pending_replies(conn, 2)
    session = items[0].session_id
    # the account's update for the first reply was stored before the send returned
    await inbox.store_new(conn, [own_copy(items[0], 601)])
    await turns.mark_sent_batch(conn, [(items[0], 601), (items[1], 602)])
    assert await out_rows(conn, session) == [(601, "sent", True), (602, "sent", True)]


async def test_a_copy_committed_meanwhile_is_dropped_on_the_next_try(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """Ingest stores the copy in a transaction still open while the reply is marked: the
    mark waits for it, meets the unique key, and drops the copy the second time."""
    items = await pending_replies(conn, 2)
    session = items[0].session_id
    ingest = await asyncpg.connect(db_url)
    try:
        transaction = ingest.transaction()
        await transaction.start()
        await inbox.store_new(ingest, [own_copy(items[1], 702)])
        marking = asyncio.create_task(
            turns.mark_sent_batch(conn, [(items[0], 701), (items[1], 702)])
        )
        await asyncio.sleep(0.2)
        assert not marking.done()  # waits for the other transaction's key
        await transaction.commit()
        await asyncio.wait_for(marking, 10)
    finally:
        await ingest.close()
    assert await out_rows(conn, session) == [(701, "sent", True), (702, "sent", True)]


async def test_a_copy_is_looked_up_by_its_key_not_among_everything_received(
    conn: asyncpg.Connection,
) -> None:
    """With ``session_id = … AND random_id IS NULL`` in the same condition, Postgres took
    the (session, random_id) unique index for a one-row lookup and read every message
    the session ever received, once per reply marked sent."""
    user, session = await session_with_messages(conn, 1)
    await conn.execute(  # a long history: what it received, and what VIBEE answered
        "INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, sender_id, text, "
        "direction, state, random_id) SELECT $1, $2, g % 1000, g, 1, 'x', "
        "CASE WHEN g % 2 = 0 THEN 'out' ELSE 'in' END, 'done', "
        "CASE WHEN g % 2 = 0 THEN g END FROM generate_series(10, 100000) AS g",
        user,
        session,
    )
    await conn.execute("SET plan_cache_mode = force_generic_plan")  # as the lanes run it
    try:
        await conn.execute("PREPARE mark(bigint, bigint, bigint, bigint) AS " + turns._MARK_SENT)
        plan = "\n".join(
            r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE mark(1, {session}, 10, 5000)")
        )
    finally:
        await conn.execute("DEALLOCATE ALL")
        await conn.execute("RESET plan_cache_mode")
    assert "random_id_key" not in plan, plan
