"""The gateway for the configured backend: the simulated network or Telegram (Telethon)."""

from __future__ import annotations

from vibee.config import Config
from vibee.secrets import SecretStore
from vibee.telegram.gateway import Gateway
from vibee.telegram.login import GatewayFactory


class TelegramNotConfigured(Exception):
    """The Telethon backend needs ``telegram.api_id`` and the secret ``telegram_api_hash``."""


def gateway_factory(config: Config, secrets: SecretStore) -> GatewayFactory:
    """A factory of gateways for ``telegram.backend``. Raises TelegramNotConfigured."""
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
    from vibee.telegram.telethon_gateway import TelethonGateway

    def telethon(session_id: int, credential: bytes | None) -> Gateway:
        return TelethonGateway(
            telegram.api_id,
            api_hash.value,
            credential,
            device_model=telegram.device_model,
            app_version=telegram.app_version,
            flood_sleep_threshold=telegram.flood_sleep_threshold_s,
            connection_retries=telegram.retry_attempts,
            retry_delay=telegram.retry_delay_s,
        )

    return telethon
