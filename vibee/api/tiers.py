"""Subscription tiers: the limits and quotas of each tier, from the configuration.

The ``[limits]`` values are the limits of the default tier, ``free`` (the default of
``users.subscription_tier``). Each ``[limits.tiers.<name>]`` table overrides some of them
for users of that tier; keys it leaves out keep the ``[limits]`` value::

    [limits]
    api_per_minute = 100
    ai_requests_per_day = 1000

    [limits.tiers.pro]
    api_per_minute = 600
    ai_requests_per_day = 20000

A user whose tier is not configured (it was removed from the config) gets the default
tier's limits.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TIER = "free"


class TierLimits(BaseModel):
    """What one tier may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_per_minute: int = Field(100, gt=0, description="API requests per minute.")
    ai_requests_per_day: int = Field(1000, gt=0, description="AI requests per UTC day.")
    ai_tokens_per_day: int = Field(1_000_000, gt=0, description="AI tokens per UTC day.")
    chat_messages_per_minute: int = Field(
        10, gt=0, description="Messages sent per chat per minute."
    )


class Tiers:
    """Tier name → limits; an unknown name gets the default tier's limits."""

    def __init__(
        self,
        base: TierLimits | None = None,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """``base`` is the default tier; ``overrides`` maps other tiers to partial limits.
        Raises pydantic's ValidationError for an unknown key or a bad value."""
        self.default = base or TierLimits()
        self._tiers: dict[str, TierLimits] = {DEFAULT_TIER: self.default}
        for name, partial in (overrides or {}).items():
            merged = {**self.default.model_dump(), **dict(partial)}
            self._tiers[name] = TierLimits.model_validate(merged)
        self.default = self._tiers[DEFAULT_TIER]

    @property
    def names(self) -> list[str]:
        """Every configured tier, the default first."""
        return list(self._tiers)

    def __contains__(self, name: object) -> bool:
        return name in self._tiers

    def limits(self, name: str) -> TierLimits:
        """The limits of tier ``name`` (the default tier's when it is not configured)."""
        return self._tiers.get(name, self.default)
