"""The gateway for the configured backend: the simulated network or Telegram (Telethon)."""

from __future__ import annotations

from collections.abc import Callable

from vibee.config import Config
from vibee.secrets import SecretStore
from vibee.store import Executor
from vibee.telegram.gateway import Gateway
from vibee.telegram.login import GatewayFactory


class TelegramNotConfigured(Exception):
    """The Telethon backend needs ``telegram.api_id`` and the secret ``telegram_api_hash``."""


def gateway_factory(
    config: Config, secrets: SecretStore, db: Callable[[], Executor]
) -> GatewayFactory:
    """A factory of gateways for ``telegram.backend``; ``db`` gives the database that keeps
    Telethon's session state (called when a gateway is built). Raises TelegramNotConfigured."""
    telegram = config.telegram
    if telegram.backend == "sim":
        from vibee.telegram.sim_gateway import SimGateway

        def sim(session_id: int, credential: bytes | None) -> Gateway:
            return SimGateway(telegram.sim_url, credential)

        return sim
    api_hash = secrets.get("telegram_api_hash")
    if not telegram.api_id or api_hash is None:
        raise TelegramNotConfigured(
            "telegram.api_id and the secret telegram_api_hash are not set (get them at "
            "https://my.telegram.org): Telegram accounts cannot connect"
        )
    from vibee.telegram.telethon_gateway import telethon_gateways

    keyring = secrets.keyring("session_keys")

    def telethon(session_id: int, credential: bytes | None) -> Gateway:
        build = telethon_gateways(telegram, api_hash.value, keyring, db())
        return build(session_id, credential)

    return telethon
