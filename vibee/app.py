"""Composition root: configuration → secrets → logging → database → (supervisor tree)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from vibee.config import Config
from vibee.obs import logging as vlog
from vibee.secrets import SecretStore
from vibee.store.db import Database

log = logging.getLogger("vibee.app")


def prepare_state(config: Config) -> tuple[Path, SecretStore]:
    """Create the state directory, generate missing secrets (embedded database only) and
    register every secret with the log redactor."""
    state_dir = config.state_dir()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SecretStore(config, state_dir)
    if not config.database.url:
        made = store.ensure_generated()
        if made:
            log.info("generated secrets in the state directory", extra={"names": made})
    for name in store.names:
        secret = store.get(name)
        if secret is not None:
            vlog.register_secret(secret.value)
    return state_dir, store


async def serve(config: Config) -> int:
    """Open the database, report readiness and wait for SIGTERM or SIGINT."""
    state_dir, store = prepare_state(config)
    password = store.get("database_password")
    db = Database(config.database, state_dir, password.value if password else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await db.open()
        log.info("vibee ready", extra={"state_dir": str(state_dir)})
        await stop.wait()
        log.info("vibee stopping")
    finally:
        await db.close()
    return 0


def main(config: Config) -> int:
    """Run the daemon in this process; returns the exit code."""
    vlog.configure(config.logging.level, config.logging.format)
    try:
        import uvloop

        return uvloop.run(serve(config))
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we run
        return asyncio.run(serve(config))
