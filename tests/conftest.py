"""Shared fixtures: one embedded Postgres per test session, a fresh database per test."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from vibee.store import embedded
from vibee.store.migrate import Migrator

TEMPLATE = "vibee_template"
_counter = itertools.count()


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.EmbeddedPostgres]:
    """The embedded Postgres the product uses, started once for the whole session."""
    server = embedded.start(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: embedded.EmbeddedPostgres) -> str:
    """A migrated template database; each test's database is a copy of it."""

    async def build() -> None:
        admin = await asyncpg.connect(pg_server.url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await admin.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(database_url(pg_server.url, TEMPLATE))
        try:
            await Migrator(conn).up()
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE


async def _create_database(server_url: str, template: str) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await admin.close()
    return name


async def _drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db_url(pg_server: embedded.EmbeddedPostgres, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = await _create_database(pg_server.url, pg_template)
    yield database_url(pg_server.url, name)
    await _drop_database(pg_server.url, name)


@pytest.fixture
async def empty_db_url(pg_server: embedded.EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = await _create_database(pg_server.url, "template1")
    yield database_url(pg_server.url, name)
    await _drop_database(pg_server.url, name)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's migrated database."""
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No VIBEE_* or systemd variables from the outside; a temporary state directory."""
    for name in list(os.environ):
        if name.startswith("VIBEE_") or name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    monkeypatch.setenv("VIBEE_RUNTIME__STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    return state
