"""Memory of constructed (unconnected) Telethon clients with VIBEE's session class.

Run: ``.venv/bin/python bench/telethon_clients.py [N]`` (default 1,000; prints one JSON
object). For the record, not a target: the 10,000-session budget is measured against the
sim. Nothing connects and nothing touches a database: each client gets a
``TelethonSession`` (its writer is not started) loaded with a credential, as the session
actor would build it, and, separately, a whole ``TelethonGateway`` (client, connection
state, handlers, event buffer). RSS is read from ``/proc/self/statm`` after a full
collection, before and after building the objects (all kept alive), in one process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import resource
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from telethon import TelegramClient

from vibee.secrets import Keyring, new_keyring_text
from vibee.telegram.telethon_credential import TelethonCredential
from vibee.telegram.telethon_gateway import TelethonGateway
from vibee.telegram.telethon_session import TelethonSession

API_ID = 12345
API_HASH = "0123456789abcdef0123456789abcdef"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size now (Linux)."""
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * _PAGE


def settled_rss() -> int:
    """RSS after a full garbage collection."""
    gc.collect()
    return rss_bytes()


def credential(n: int) -> bytes:
    """A distinct, authorized credential."""
    return TelethonCredential(2, "149.154.167.51", 443, os.urandom(256), 1_000_000 + n).encode()


async def measure(n: int) -> dict[str, Any]:
    """Build ``n`` clients, then ``n`` gateways; RSS before and after each."""
    keyring = Keyring.parse("session_keys", new_keyring_text())
    db: Any = None  # the writer is never started: nothing is written
    blobs = [credential(i) for i in range(n)]

    base = settled_rss()
    started = time.perf_counter()
    clients = []
    for i, blob in enumerate(blobs):
        session = TelethonSession(i + 1, keyring, db)
        decoded = TelethonCredential.decode(blob)
        session.set_dc(decoded.dc_id, decoded.server_address, decoded.port)
        clients.append(TelegramClient(session, API_ID, API_HASH, catch_up=True))
    client_seconds = time.perf_counter() - started
    with_clients = settled_rss()

    started = time.perf_counter()
    gateways = [
        TelethonGateway(API_ID, API_HASH, blob, session=TelethonSession(n + i + 1, keyring, db))
        for i, blob in enumerate(blobs)
    ]
    gateway_seconds = time.perf_counter() - started
    with_gateways = settled_rss()
    assert len(clients) == len(gateways) == n

    kib = 1024
    return {
        "benchmark": "telethon_clients",
        "clients": n,
        "rss_base_mib": round(base / kib / kib, 1),
        "client_rss_kib_each": round((with_clients - base) / n / kib, 1),
        "client_build_us_each": round(client_seconds / n * 1e6, 1),
        "gateway_rss_kib_each": round((with_gateways - with_clients) / n / kib, 1),
        "gateway_build_us_each": round(gateway_seconds / n * 1e6, 1),
        "rss_total_mib": round(with_gateways / kib / kib, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "python": platform.python_version(),
        "telethon": version("telethon"),
        "machine": platform.machine(),
    }


def main() -> None:
    """Print one JSON object."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(asyncio.run(measure(n))))


if __name__ == "__main__":
    main()
