"""What every handler of the public API shares: settings and the parts built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from vibee.api.access import AccessTokens
from vibee.api.auth import Authenticator, HashGate, PoolSource, UserCache
from vibee.api.ratelimit import RateLimits
from vibee.api.tiers import Tiers
from vibee.automation.events import EventBus
from vibee.coord.notices import NoNotices, Notices


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The API's configuration (see :func:`vibee.api.app.settings_from_config`)."""

    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    tiers: Tiers = field(default_factory=Tiers)
    auth_per_minute_per_ip: int = 10
    token_per_minute_per_ip: int = 60
    max_body_bytes: int = 64 * 1024
    user_cache_ttl_s: float = 2.0
    allow_registration: bool = True
    hash_slots: int = 4
    hash_queue: int = 64


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The parts of the API, built once per application."""

    settings: ApiSettings
    pool: PoolSource
    tokens: AccessTokens
    users: UserCache
    auth: Authenticator
    limits: RateLimits
    hashing: HashGate
    events: EventBus = field(default_factory=EventBus)
    notices: Notices = field(default_factory=NoNotices)

    @property
    def tiers(self) -> Tiers:
        """The subscription tiers."""
        return self.settings.tiers
