"""Simulators shared by the integration tests: the Telegram sim and the fake LLM providers,
each a real process on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.integration.telegram.world import SimWorld, sim_process


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """Base URL of one ``vibee.sim.telegram`` process shared by the session's tests.

    Tests create their own accounts and chats, so they do not see each other's traffic.
    """
    with sim_process() as (url, _):
        yield url


@pytest.fixture
async def sim_world(sim_url: str) -> AsyncIterator[SimWorld]:
    """A world over the shared sim; afterwards no account of the test ever had two
    connections at once (``max_connections_per_account`` stays 1)."""
    async with aiohttp.ClientSession() as http:
        world = SimWorld(sim_url, http)
        yield world
        for account in world.accounts:
            assert await world.max_connections(account) <= 1, account


@pytest.fixture(scope="session")
def sim_llm() -> Iterator[str]:
    """Base URL of a running fake-provider server."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibee.sim.llm", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(timeout=10)
