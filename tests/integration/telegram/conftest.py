"""The simulated Telegram network as a real process, and a world per test over it."""

from __future__ import annotations

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
