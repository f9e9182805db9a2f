"""The simulated Telegram network: ``vibee sim telegram --listen HOST:PORT``.

A separate process that plays Telegram for tests, ``vibee demo`` and benchmarks. It keeps
the truth (accounts, chats, transcripts with ``random_id``, per-account update logs) in
memory for its lifetime, while the daemon is killed and restarted around it.

* ``GET /ws`` — the gateway protocol: JSON over one multiplexed WebSocket per client
  process (``telegram_ws``, ``telegram_calls``; ``vibee.telegram.sim_gateway`` is the client).
* everything else — the HTTP control API (``telegram_control``): accounts, users, chats,
  injected messages, transcripts, faults, stats.

The state is in ``telegram_state`` (data, delivery), ``telegram_auth`` (keys, login, QR)
and ``telegram_faults``. ``docs/sim.md`` documents the control API and the wire protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from vibee.sim.telegram_auth import Auth
from vibee.sim.telegram_calls import Core
from vibee.sim.telegram_control import Control
from vibee.sim.telegram_faults import Faults
from vibee.sim.telegram_http import json_errors, reply
from vibee.sim.telegram_state import World
from vibee.sim.telegram_wire import WS_PATH
from vibee.sim.telegram_ws import Hub

log = logging.getLogger("vibee.sim")

__all__ = ["build_app", "main", "serve"]


def build_app(*, code_ttl: float = 300.0, qr_ttl: float = 30.0) -> web.Application:
    """The sim's aiohttp application with a fresh, empty world."""
    world = World()
    core = Core(world, Auth(world, code_ttl=code_ttl, qr_ttl=qr_ttl), Faults())
    hub = Hub(core)
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024 * 1024)
    app.router.add_get(WS_PATH, hub.handle_ws)
    app.router.add_routes(Control(core, hub).routes())

    async def health(request: web.Request) -> web.Response:
        return reply({"ok": True})

    app.router.add_get("/health", health)

    async def drop_transports(app: web.Application) -> None:
        hub.drop_all()

    app.on_shutdown.append(drop_transports)
    return app


async def serve(host: str, port: int, *, code_ttl: float = 300.0, qr_ttl: float = 30.0) -> None:
    """Serve until SIGTERM/SIGINT; prints ``listening on http://HOST:PORT`` once bound."""
    runner = web.AppRunner(build_app(code_ttl=code_ttl, qr_ttl=qr_ttl), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound}", flush=True)
    log.info("sim telegram listening on %s:%s", host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``vibee sim telegram --listen HOST:PORT`` (port 0 picks a free one)."""
    parser = argparse.ArgumentParser(
        prog="vibee sim telegram", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT")
    parser.add_argument("--code-ttl", type=float, default=300.0, help="login code lifetime (s)")
    parser.add_argument("--qr-ttl", type=float, default=30.0, help="QR token lifetime (s)")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level")
    args = parser.parse_args(None if argv is None else list(argv))
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(
            f"vibee sim telegram: --listen must be HOST:PORT, not {args.listen!r}", file=sys.stderr
        )
        return 2
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        print(f"vibee sim telegram: unknown --log-level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, stream=sys.stderr)
    try:
        import uvloop

        uvloop.run(serve(host, int(port), code_ttl=args.code_ttl, qr_ttl=args.qr_ttl))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
