"""The gateway contract suite against SimGateway and a real sim process."""

from __future__ import annotations

import pytest

from tests.integration.telegram.contract import GatewayContract
from tests.integration.telegram.world import SimWorld


class TestSimGateway(GatewayContract):
    """Every contract test, through the sim's WebSocket protocol."""

    @pytest.fixture
    def world(self, sim_world: SimWorld) -> SimWorld:
        """The sim's world."""
        return sim_world
