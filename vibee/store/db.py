"""The database: an asyncpg pool on ``database.url`` or on the embedded Postgres.

Exceptions::

    DatabaseError        cannot reach or prepare the database (names the cause, no password)

Start-up order: start the embedded server (when no URL is configured), connect, migrate
(``migrate=True``), then register the pgvector codec on every pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy
from pgvector.asyncpg import register_vector

from vibee.config import DatabaseConfig
from vibee.store import DB_ERRORS, embedded
from vibee.store.migrate import Migrator

log = logging.getLogger("vibee.store.db")


class DatabaseError(Exception):
    """The database cannot be reached or prepared; the message names the cause."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` set, unless the URL already carries one."""
    parts = urlsplit(url)
    if not password or parts.password is not None or not parts.netloc:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


async def init_connection(conn: asyncpg.Connection) -> None:
    """Set up a new connection as VIBEE's pool does: jsonb as JSON, pgvector types."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await register_vector(conn)


async def hand_back(
    pool: asyncpg.Pool, conn: PoolConnectionProxy[asyncpg.Record], *, broken: bool = False
) -> None:
    """Return a connection held for a while (asyncpg resets it: one round trip), closing it
    first when ``broken`` (the pool then opens a fresh one). One already gone is not an
    error: the pool replaces it."""
    try:
        if broken:
            conn.terminate()
        await pool.release(conn)
    except DB_ERRORS as exc:
        log.debug("connection not handed back", extra={"error": repr(exc)})


class Database:
    """Owns the embedded server (if any) and the pool. ``open`` then ``close``."""

    def __init__(self, config: DatabaseConfig, state_dir: Path, password: str | None = None):
        self._config = config
        self._state_dir = state_dir
        self._password = password
        self._embedded: embedded.EmbeddedPostgres | None = None
        self._pool: asyncpg.Pool | None = None
        self.url = ""

    @property
    def embedded(self) -> embedded.EmbeddedPostgres | None:
        """The embedded server, when this database runs one."""
        return self._embedded

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (after :meth:`open`)."""
        if self._pool is None:
            raise DatabaseError("the database is not open")
        return self._pool

    async def start_server(self) -> str:
        """Start the embedded server when no URL is configured. Returns the URL to use."""
        if self._config.url:
            self.url = with_password(self._config.url, self._password)
        elif self._embedded is None:
            datadir = self._state_dir / "pg"
            starting = asyncio.ensure_future(asyncio.to_thread(embedded.start, datadir))
            try:
                self._embedded = await asyncio.shield(starting)
            except asyncio.CancelledError:
                # the thread goes on starting the server: keep it, for close() to stop it
                # (whatever the thread ends with, the cancellation is what goes on)
                with contextlib.suppress(Exception):
                    self._embedded = await starting
                raise
            except embedded.EmbeddedError as exc:
                raise DatabaseError(str(exc)) from None
            self.url = self._embedded.url
        return self.url

    async def connect(self) -> asyncpg.Connection:
        """One connection outside the pool (migrations, CLI commands)."""
        url = await self.start_server()
        try:
            return await asyncpg.connect(url, timeout=self._config.connect_timeout_s)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseError(
                f"cannot connect to {redact_url(url)}: {exc.__class__.__name__}: {exc}"
            ) from None

    async def open(self, migrate: bool = True) -> None:
        """Start the server if embedded, migrate (by default) and open the pool."""
        if migrate:
            conn = await self.connect()
            try:
                await Migrator(conn).up()
            finally:
                await conn.close()
        else:
            await self.start_server()
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._config.pool_min_size,
                max_size=self._config.pool_max_size,
                timeout=self._config.connect_timeout_s,
                command_timeout=self._config.command_timeout_s,
                init=init_connection,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseError(
                f"cannot open a pool on {redact_url(self.url)}: {exc.__class__.__name__}: {exc}"
            ) from None

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise unless the database answers ``SELECT 1`` within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                async with self.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except DB_ERRORS as exc:
            raise DatabaseError(f"database does not answer: {exc.__class__.__name__}") from None

    async def close(self) -> None:
        """Close the pool and stop the embedded server this process runs."""
        if self._pool is not None:
            try:
                async with asyncio.timeout(10):
                    await self._pool.close()
            except TimeoutError:
                log.warning("database pool did not close in time; terminating connections")
                self._pool.terminate()
            self._pool = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None
