"""The gateway for the configured backend: the simulated network or Telegram (Telethon)."""

from __future__ import annotations

from vibee.config import Config
from vibee.secrets import SecretStore
from vibee.telegram.gateway import Gateway
from vibee.telegram.login import GatewayFactory


def gateway_factory(config: Config, secrets: SecretStore) -> GatewayFactory:
    """A factory of gateways for ``telegram.backend``."""
    telegram = config.telegram
    if telegram.backend == "sim":
        from vibee.telegram.sim_gateway import SimGateway

        def sim(session_id: int, credential: bytes | None) -> Gateway:
            return SimGateway(telegram.sim_url, credential)

        return sim
    raise NotImplementedError("the Telethon backend is not wired yet")
