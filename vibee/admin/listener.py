"""An aiohttp application served as a supervised child: the admin endpoint, the API."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from vibee.runtime import Service

log = logging.getLogger("vibee.http")


class HttpListener(Service):
    """Serves ``app`` on ``host:port``. The socket is bound in ``on_start``, so the next
    sibling starts only once this one accepts connections; port 0 picks a free one, logged
    as ``"<name> listening"`` with the bound port."""

    def __init__(self, name: str, host: str, port: int, app: web.Application) -> None:
        super().__init__(name)
        self._host, self._port = host, port
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.bound_port = 0

    async def on_start(self) -> None:
        """Bind the listening socket."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.bound_port = self._runner.addresses[0][1]
        log.info(f"{self.name} listening", extra={"host": self._host, "port": self.bound_port})

    async def run(self) -> None:
        """Serve until stopped."""
        await asyncio.Event().wait()

    async def on_stop(self) -> None:
        """Close the listener and open connections."""
        await self._runner.cleanup()
