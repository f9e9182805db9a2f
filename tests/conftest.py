"""Shared fixtures: one embedded Postgres per test session, a fresh database per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from vibee.store import embedded
from vibee.store.db import init_connection
from vibee.store.migrate import Migrator

TEMPLATE = "vibee_template"
_counter = itertools.count()


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def outside_pytest_tmp(prefix: str) -> Path:
    """A fresh directory under the system temp dir, not under pytest's base temp.

    As root, the embedded Postgres runs as the ``pgserver`` user, which must traverse the
    path; pytest resets its ``pytest-of-<user>`` folder to mode 0700 whenever a pytest
    process starts, which would cut a running server off from its own data.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[embedded.EmbeddedPostgres]:
    """The embedded Postgres the product uses, started once for the whole session."""
    root = outside_pytest_tmp("vibee-test-pg-")
    server = embedded.start(root / "data")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


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
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this test's migrated database, set up as the daemon's is."""
    created = await asyncpg.create_pool(db_url, min_size=2, max_size=10, init=init_connection)
    assert created is not None
    yield created
    await created.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No VIBEE_* or systemd variables from the outside; a temporary state directory."""
    for name in list(os.environ):
        if name.startswith("VIBEE_") or name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(name)
    state = outside_pytest_tmp("vibee-test-state-") / "state"
    monkeypatch.setenv("VIBEE_RUNTIME__STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)
    yield state
    stop_leftover_postgres(state / "pg")
    shutil.rmtree(state.parent, ignore_errors=True)


def pg_ctl(datadir: Path, *args: str, check: bool = True) -> None:
    """The embedded Postgres's own pg_ctl on ``datadir`` (as the pgserver user under root)."""
    command = [str(embedded.bin_dir() / "pg_ctl"), "-D", str(datadir), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "pgserver", "--", *command]
    subprocess.run(command, check=check, capture_output=True, timeout=60)


def stop_leftover_postgres(datadir: Path) -> None:
    """Stop an embedded Postgres a killed daemon left running in ``datadir``."""
    if (datadir / "postmaster.pid").exists():
        pg_ctl(datadir, "stop", "-m", "immediate", check=False)
