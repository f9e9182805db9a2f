"""Readiness: named checks run together, each with a deadline; the failing ones named."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Check = Callable[[], Awaitable[None]]
"""A readiness check: returns when healthy, raises (any Exception) naming what is wrong."""


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of one readiness probe: per check, ``"ok"`` or the reason it failed."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        """True when every check passed."""
        return all(result == "ok" for result in self.checks.values())

    @property
    def failing(self) -> list[str]:
        """The names of the checks that failed."""
        return [name for name, result in self.checks.items() if result != "ok"]


class Readiness:
    """A set of named checks, probed concurrently."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout_s = timeout_s

    def add(self, name: str, check: Check) -> None:
        """Register (or replace) the check called ``name``."""
        self._checks[name] = check

    async def _run(self, check: Check) -> str:
        try:
            async with asyncio.timeout(self._timeout_s):
                await check()
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # a failing check is a result, not a crash
            return str(exc) or exc.__class__.__name__
        return "ok"

    async def probe(self) -> Report:
        """Run every check at once and report each result."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[name]) for name in names))
        return Report(dict(zip(names, results, strict=True)))
