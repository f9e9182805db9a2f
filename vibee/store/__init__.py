"""Postgres: the pool, the embedded server, migrations, one module per aggregate."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]
    """A connection, plain or borrowed from a pool."""
    Executor: TypeAlias = asyncpg.Pool | Conn
    """Anything that runs a statement: the pool or a connection."""
else:
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection | PoolConnectionProxy
    Executor = asyncpg.Pool | Conn

DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a pooled connection dropped by a Postgres restart
)
"""What a database that went away (or never answered) raises: callers retry or report."""

ID_MAX = 2**63 - 1
"""The largest value of a ``bigint`` column (every id): a larger one makes Postgres fail
the statement, so input is checked against it first."""
