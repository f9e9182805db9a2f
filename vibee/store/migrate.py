"""Schema migrations: numbered SQL files applied in order, once, under an advisory lock.

Exceptions::

    MigrationError              the database and the code disagree; the message says how
    ├── SchemaTooNew            the database has migrations this code does not know
    └── MigrationEdited         an applied file changed since (checksum mismatch)

Files live in ``vibee/store/migrations``: ``NNNN_name.sql`` (up) and ``NNNN_name.down.sql``
(down). Each runs in its own transaction together with its row in ``schema_migrations``
(version, name, sha256 checksum of the up file, applied_at). Every command takes
``pg_advisory_lock`` first, so two instances starting together apply each file once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

log = logging.getLogger("vibee.store.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 0x76_69_62_65_65  # "vibee"
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The schema cannot be brought in line with this code; the message says why."""


class SchemaTooNew(MigrationError):
    """The database holds migrations this version of VIBEE does not have."""


class MigrationEdited(MigrationError):
    """A migration file was changed after it was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration: its up SQL, its down SQL (if any) and the up file's checksum."""

    version: int
    name: str
    up: str
    down: str | None

    @property
    def checksum(self) -> str:
        """sha256 of the up SQL."""
        return hashlib.sha256(self.up.encode()).hexdigest()

    @property
    def filename(self) -> str:
        """``NNNN_name.sql``."""
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True, slots=True)
class Applied:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class Status:
    """Where the database stands against the code."""

    applied: list[Applied]
    pending: list[Migration]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in ``directory``, ordered. Raises MigrationError on a gap or a bad name."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(".down.sql"):
            continue
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        down_path = path.with_name(path.name[: -len(".sql")] + ".down.sql")
        down = down_path.read_text(encoding="utf-8") if down_path.exists() else None
        found.append(
            Migration(int(match["version"]), match["name"], path.read_text(encoding="utf-8"), down)
        )
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"{migration.filename}: expected migration number {expected:04d}")
    return found


class Migrator:
    """Runs migrations on one connection (holding the advisory lock while it works)."""

    def __init__(self, conn: asyncpg.Connection, migrations: list[Migration] | None = None):
        self._conn = conn
        self._migrations = load_migrations() if migrations is None else migrations

    async def _applied(self) -> list[Applied]:
        await self._conn.execute(_TABLE)
        rows = await self._conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
        return [Applied(r["version"], r["name"], r["checksum"], r["applied_at"]) for r in rows]

    def _check(self, applied: list[Applied]) -> None:
        known = {m.version: m for m in self._migrations}
        for row in applied:
            migration = known.get(row.version)
            if migration is None:
                newest = max(known, default=0)
                raise SchemaTooNew(
                    f"the database has migration {row.version:04d}_{row.name} but this VIBEE "
                    f"only knows up to {newest:04d}: run a newer VIBEE (or restore a backup)"
                )
            if migration.checksum != row.checksum:
                raise MigrationEdited(
                    f"{migration.filename} was edited after it was applied (checksum "
                    f"mismatch); restore the original file and add a new migration instead"
                )

    async def status(self) -> Status:
        """Applied and pending migrations, after checking the applied ones against the code."""
        async with self._locked():
            applied = await self._applied()
            self._check(applied)
            done = {row.version for row in applied}
            return Status(applied, [m for m in self._migrations if m.version not in done])

    async def up(self) -> list[Migration]:
        """Apply every pending migration in order. Returns what was applied."""
        async with self._locked():
            applied = await self._applied()
            self._check(applied)
            done = {row.version for row in applied}
            ran = []
            for migration in self._migrations:
                if migration.version in done:
                    continue
                try:
                    async with self._conn.transaction():
                        await self._conn.execute(migration.up)
                        await self._conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    hint = ""
                    if "vector" in str(exc):
                        hint = " (VIBEE needs the pgvector extension on this server)"
                    raise MigrationError(f"{migration.filename} failed: {exc}{hint}") from None
                log.info("migration applied", extra={"migration": migration.filename})
                ran.append(migration)
            return ran

    async def down(self, steps: int = 1) -> list[Migration]:
        """Roll back the last ``steps`` applied migrations, newest first."""
        if steps < 1:
            raise MigrationError("down: the number of steps must be at least 1")
        async with self._locked():
            applied = await self._applied()
            self._check(applied)
            known = {m.version: m for m in self._migrations}
            targets = [known[row.version] for row in reversed(applied)][:steps]
            missing = [m.filename for m in targets if m.down is None]
            if missing:
                raise MigrationError(f"{', '.join(missing)}: no .down.sql file, cannot roll back")
            for migration in targets:
                assert migration.down is not None
                async with self._conn.transaction():
                    await self._conn.execute(migration.down)
                    await self._conn.execute(
                        "DELETE FROM schema_migrations WHERE version = $1", migration.version
                    )
                log.info("migration rolled back", extra={"migration": migration.filename})
            return targets

    def _locked(self) -> _AdvisoryLock:
        return _AdvisoryLock(self._conn)


class _AdvisoryLock:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> None:
        await self._conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
