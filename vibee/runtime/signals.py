"""SIGTERM / SIGINT → graceful shutdown; a second signal → immediate exit.

:class:`ShutdownSignals` installs handlers on the running loop. The first signal sets
:attr:`ShutdownSignals.requested` (and calls ``on_shutdown`` if given): the caller stops
its supervisor tree within its shutdown timeout. A second signal while that is in progress
means the operator wants out now: it is logged and the process ends with
``os._exit(128 + signum)``, skipping cleanup that may be what hangs.

Exceptions: none of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Iterable
from types import TracebackType

__all__ = ["ShutdownSignals"]

log = logging.getLogger("vibee.runtime")


class ShutdownSignals:
    """Signal handlers for graceful shutdown; use as a context manager or call
    :meth:`install` / :meth:`remove`."""

    def __init__(
        self,
        on_shutdown: Callable[[], None] | None = None,
        *,
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
        force_exit: Callable[[int], object] = os._exit,
    ) -> None:
        """Call ``on_shutdown`` on the first of ``signals``; ``force_exit(code)`` on the second."""
        self._on_shutdown = on_shutdown
        self._signals = tuple(signals)
        self._force_exit = force_exit
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requested = asyncio.Event()
        self.received: signal.Signals | None = None

    def install(self) -> None:
        """Install the handlers on the running loop."""
        self._loop = asyncio.get_running_loop()
        for sig in self._signals:
            self._loop.add_signal_handler(sig, self._handle, sig)

    def remove(self) -> None:
        """Restore the default handlers."""
        if self._loop is None:
            return
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)
        self._loop = None

    def __enter__(self) -> ShutdownSignals:
        """Install the handlers."""
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Remove the handlers."""
        self.remove()

    def _handle(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
            log.info("shutdown requested", extra={"signal": sig.name})
            self.requested.set()
            if self._on_shutdown is not None:
                self._on_shutdown()
            return
        log.critical(
            "second signal during shutdown: exiting now",
            extra={"signal": sig.name, "first_signal": self.received.name},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._force_exit(128 + sig)
