"""systemd's notify protocol without a library: ``READY=1``, ``STATUS=…``, ``STOPPING=1``,
``WATCHDOG=1``.

Each message is one datagram to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a
leading ``@`` names the abstract namespace and becomes ``\\0``). Without ``$NOTIFY_SOCKET``
(not started by systemd with ``Type=notify``) every call is a no-op. Sending never raises
and never blocks: the socket is non-blocking, and a failure is logged and reported as
``False`` — a daemon must not stop because its supervisor's socket went away.

The watchdog (:func:`run_watchdog`) is a task on the event loop that pings every half
``$WATCHDOG_USEC`` while a health callable says True. A blocked event loop cannot run the
task, so the pings stop and systemd restarts the service; that is the point of running it
on the loop rather than in a thread. Run it next to the root supervisor or under it as a
``TRANSIENT`` child (it returns at once when there is no watchdog), e.g.
``Service("watchdog", partial(run_watchdog, notifier, lambda: root.healthy))``.

Exceptions: none (failures are logged and returned as False).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "run_watchdog", "watchdog_interval"]

log = logging.getLogger("vibee.runtime")


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None


class Notifier:
    """Sends notify messages to systemd (or does nothing when not run by systemd)."""

    def __init__(self, notify_socket: str | None) -> None:
        """Talk to ``notify_socket`` (the value of ``$NOTIFY_SOCKET``); None disables."""
        self._address = _address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            log.warning("unsupported NOTIFY_SOCKET address", extra={"address": notify_socket})
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` of ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if it was sent."""
        if self._address is None:
            return False
        data = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as exc:
            log.warning(
                "systemd notify failed",
                extra={"error": str(exc), "notify": data.decode(errors="replace")},
            )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (startup finished), optionally with a status line."""
        return self.notify("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=text``: a one-line status shown by ``systemctl status``."""
        return self.notify(_status(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (shutdown started), optionally with a status line."""
        return self.notify("STOPPING=1", *([_status(status)] if status else []))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: we are alive."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket (it is reopened on the next message)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or None when the watchdog is off or meant for
    another process (``$WATCHDOG_PID`` set to a pid other than ours)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2_000_000


async def run_watchdog(
    notifier: Notifier, healthy: Callable[[], bool], interval: float | None = None
) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` s (default: :func:`watchdog_interval`) while
    ``healthy()`` is True; runs until cancelled. Returns at once when there is nothing to
    do (no socket or no watchdog)."""
    if interval is None:
        interval = watchdog_interval()
    if interval is None or interval <= 0 or not notifier.enabled:
        return
    was_healthy = True
    while True:
        try:
            ok = healthy()
        except Exception:
            log.exception("watchdog health check failed")
            ok = False
        if ok:
            notifier.watchdog()
        elif was_healthy:
            log.warning("unhealthy: watchdog pings suspended")
        was_healthy = ok
        await asyncio.sleep(interval)
