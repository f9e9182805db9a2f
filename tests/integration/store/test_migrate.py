"""Migrations: round trip, concurrency under the advisory lock, refusing edited or newer
schemas."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from vibee.store.migrate import (
    Migration,
    MigrationEdited,
    MigrationError,
    Migrator,
    SchemaTooNew,
    load_migrations,
)


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


SEED_TABLES = {"users", "telegram_sessions", "messages", "chat_configs", "analytics_events"}


async def test_up_down_up_round_trip(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        migrator = Migrator(conn)
        applied = await migrator.up()
        assert [m.version for m in applied] == [m.version for m in load_migrations()]
        assert SEED_TABLES <= await tables(conn)
        assert await migrator.up() == []

        reverted = await migrator.down(len(applied))
        assert [m.version for m in reverted] == [m.version for m in reversed(applied)]
        assert await tables(conn) == {"schema_migrations"}
        status = await migrator.status()
        assert status.applied == [] and len(status.pending) == len(applied)

        await migrator.up()
        assert SEED_TABLES <= await tables(conn)
    finally:
        await conn.close()


async def test_schema_has_hnsw_index_and_unique_inbox_key(conn: asyncpg.Connection) -> None:
    index = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_embedding_idx'"
    )
    assert "USING hnsw" in index
    user = await conn.fetchval(
        "INSERT INTO users (username, password_hash) VALUES ('u', 'x') RETURNING id"
    )
    session = await conn.fetchval(
        "INSERT INTO telegram_sessions (user_id) VALUES ($1) RETURNING id", user
    )
    insert = (
        "INSERT INTO messages (user_id, session_id, tg_chat_id, message_id, direction, state) "
        "VALUES ($1, $2, 10, 5, 'in', 'received') "
        "ON CONFLICT (session_id, tg_chat_id, message_id, direction) DO NOTHING RETURNING id"
    )
    assert await conn.fetchval(insert, user, session) is not None
    assert await conn.fetchval(insert, user, session) is None  # a replayed update is a no-op
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO messages (user_id, session_id, tg_chat_id, direction, state) "
            "VALUES ($1, $2, 10, 'in', 'bogus')",
            user,
            session,
        )


async def test_edited_applied_file_is_refused(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        await Migrator(conn).up()
        originals = load_migrations()
        edited = [replace(originals[0], up=originals[0].up + "\n-- edited\n"), *originals[1:]]
        with pytest.raises(MigrationEdited, match="0001_initial.sql was edited"):
            await Migrator(conn, edited).up()
        with pytest.raises(MigrationEdited):
            await Migrator(conn, edited).status()
    finally:
        await conn.close()


async def test_database_newer_than_code_is_refused(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        future = Migration(len(load_migrations()) + 1, "from_the_future", "SELECT 1;", None)
        await Migrator(conn, [*load_migrations(), future]).up()
        with pytest.raises(SchemaTooNew, match="run a newer VIBEE"):
            await Migrator(conn).up()
    finally:
        await conn.close()


async def test_down_without_a_down_file_is_refused(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        one_way = Migration(len(load_migrations()) + 1, "one_way", "SELECT 1;", None)
        await Migrator(conn, [*load_migrations(), one_way]).up()
        with pytest.raises(MigrationError, match="no .down.sql file"):
            await Migrator(conn, [*load_migrations(), one_way]).down(1)
    finally:
        await conn.close()


def test_bad_file_names_and_gaps_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="expected migration number 0002"):
        load_migrations(tmp_path)
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="named NNNN_name.sql"):
        load_migrations(tmp_path)


async def test_two_processes_migrating_at_once_apply_each_file_once(empty_db_url: str) -> None:
    env = {**os.environ, "VIBEE_DATABASE__URL": empty_db_url}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vibee",
            "migrate",
            "up",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outputs = sorted(out.decode().strip() for out, _ in results)
    assert outputs[1] == "up to date"  # the second waited on the lock, then found nothing to do
    assert outputs[0].startswith("applied  0001_initial.sql")
    conn = await asyncpg.connect(empty_db_url)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations")
        assert len(versions) == len(load_migrations())
    finally:
        await conn.close()


async def test_a_failing_migration_is_one_clear_error(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        broken = Migration(1, "broken", "CREATE EXTENSION no_such_extension_here;", None)
        with pytest.raises(MigrationError, match="0001_broken.sql failed: .*no_such_extension"):
            await Migrator(conn, [broken]).up()
        assert await Migrator(conn, [broken]).status() is not None  # nothing half-applied
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == 0
    finally:
        await conn.close()
