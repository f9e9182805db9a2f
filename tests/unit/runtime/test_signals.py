"""ShutdownSignals: first signal → graceful shutdown, second → forced exit."""

from __future__ import annotations

import asyncio
import os
import signal

from vibee.runtime import ShutdownSignals

from .helpers import eventually


async def test_first_signal_requests_shutdown_second_forces_exit() -> None:
    shutdowns: list[int] = []
    exits: list[int] = []
    with ShutdownSignals(lambda: shutdowns.append(1), force_exit=exits.append) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.requested.wait(), 5)
        assert signals.received is signal.SIGTERM
        assert shutdowns == [1] and exits == []

        os.kill(os.getpid(), signal.SIGINT)
        await eventually(lambda: bool(exits))
        assert exits == [128 + signal.SIGINT]
        assert shutdowns == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
