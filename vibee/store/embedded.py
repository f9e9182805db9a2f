"""The embedded Postgres (the ``pgserver`` wheel: PostgreSQL 16 with pgvector).

Used when ``database.url`` is empty. The data directory is ``<state>/pg``; the server
listens on a unix socket only. A server left running by a crashed VIBEE is found and
reused; one VIBEE stopping stops the server it started or adopted.

pgserver keeps a list of the processes that use a server in ``.handle_pids.json`` and
stops the server only when the last of them leaves. A crash leaves a dead pid in that
list, after which nobody would ever stop the server: :func:`start` drops dead pids first.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vibee.store.embedded")


class EmbeddedError(Exception):
    """The embedded Postgres could not be started (the message says why)."""


@dataclass(slots=True)
class EmbeddedPostgres:
    """A running embedded server and what is needed to stop it."""

    datadir: Path
    url: str
    _handle: Any

    def stop(self) -> None:
        """Stop the server (blocking: run it in a thread from async code)."""
        self._handle.cleanup()


def _drop_dead_pids(datadir: Path) -> None:
    pid_file = datadir / ".handle_pids.json"
    try:
        pids = json.loads(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        log.info("embedded postgres: forgetting users that exited", extra={"dead": len(pids)})
        pid_file.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a pid reused by us is a stale entry: we have not registered yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _import_pgserver() -> Any:
    # platformdirs warns at import time when $XDG_RUNTIME_DIR is unset (systemd services,
    # CI); pgserver then keeps its lock file under /tmp, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def bin_dir() -> Path:
    """Where the embedded ``pg_ctl``, ``postgres`` and ``psql`` live."""
    return Path(_import_pgserver().__file__).parent / "pginstall" / "bin"


def start(datadir: Path) -> EmbeddedPostgres:
    """Start (or adopt) the server in ``datadir`` and return it. Blocking, about 0.5 s."""
    pgserver = _import_pgserver()

    datadir.mkdir(parents=True, exist_ok=True)
    _drop_dead_pids(datadir)
    try:
        handle = pgserver.get_server(datadir, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        logfile = datadir / "log"
        tail = ""
        if logfile.exists():
            tail = " | ".join(logfile.read_text(errors="replace").strip().splitlines()[-3:])
        raise EmbeddedError(
            f"the embedded Postgres in {datadir} did not start ({exc.__class__.__name__}: "
            f"{exc}){'; its log ends: ' + tail if tail else ''}"
        ) from None
    url = handle.get_uri()
    log.info("embedded postgres ready", extra={"datadir": str(datadir)})
    return EmbeddedPostgres(datadir=datadir, url=url, _handle=handle)
