"""Faults the control API injects into the sim: flood waits, slow mode, latency.

(Disconnects and revocations act at once, in the WebSocket layer and ``telegram_auth``.)

* flood_wait: the next ``count`` sends of the account (in ``chat_id`` only, if given) fail
  with FLOOD_WAIT ``seconds``; like Telegram, once one fired, sends in that scope keep
  failing with the remaining seconds until the wait is over.
* slow_mode: in ``chat_id``, each account (or only ``account_id``) may send one message
  per ``seconds``; a faster send fails with SLOWMODE_WAIT and the remaining seconds.
* latency: the next ``count`` calls (all, if no count) of the account (any account, if no
  ``account_id``) are answered ``seconds`` late.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from vibee.telegram.gateway import FloodWait, SlowModeWait


@dataclass(slots=True)
class FloodFault:
    """Armed: fires on the next ``count`` sends in scope."""

    seconds: int
    count: int
    chat_id: int | None


@dataclass(slots=True)
class LatencyFault:
    """Delays the next ``count`` calls (None: until cleared)."""

    seconds: float
    account_id: int | None
    count: int | None


class Faults:
    """The armed faults; ``check_send`` and ``delay_for`` consult them."""

    def __init__(self) -> None:
        self.flood: dict[int, list[FloodFault]] = {}
        self.flood_until: dict[tuple[int, int | None], float] = {}
        self.slow_mode: dict[int, tuple[int, int | None]] = {}
        self.last_send: dict[tuple[int, int], float] = {}
        self.latency: list[LatencyFault] = []
        self.fired = 0

    def clear(self) -> None:
        """Disarm everything (``DELETE /faults``)."""
        self.flood.clear()
        self.flood_until.clear()
        self.slow_mode.clear()
        self.last_send.clear()
        self.latency.clear()

    def add_flood(self, account_id: int, seconds: int, count: int, chat_id: int | None) -> None:
        """Arm a flood wait for the account's next ``count`` sends."""
        self.flood.setdefault(account_id, []).append(FloodFault(seconds, count, chat_id))

    def set_slow_mode(self, chat_id: int, seconds: int, account_id: int | None) -> None:
        """Turn slow mode on (``seconds`` > 0) or off (0) for a chat."""
        if seconds > 0:
            self.slow_mode[chat_id] = (seconds, account_id)
        else:
            self.slow_mode.pop(chat_id, None)

    def add_latency(self, seconds: float, account_id: int | None, count: int | None) -> None:
        """Delay calls."""
        self.latency.append(LatencyFault(seconds, account_id, count))

    def check_send(self, account_id: int, chat_id: int) -> None:
        """Raise FloodWait / SlowModeWait if a send by ``account_id`` in ``chat_id`` must wait."""
        now = time.monotonic()
        for scope in ((account_id, None), (account_id, chat_id)):
            until = self.flood_until.get(scope)
            if until is not None:
                if until > now:
                    raise FloodWait(max(1, math.ceil(until - now)))
                del self.flood_until[scope]
        armed = self.flood.get(account_id)
        if armed:
            for fault in armed:
                if fault.chat_id is None or fault.chat_id == chat_id:
                    fault.count -= 1
                    if fault.count <= 0:
                        armed.remove(fault)
                    self.flood_until[(account_id, fault.chat_id)] = now + fault.seconds
                    self.fired += 1
                    raise FloodWait(fault.seconds)
        slow = self.slow_mode.get(chat_id)
        if slow is not None and slow[1] in (None, account_id):
            last = self.last_send.get((chat_id, account_id))
            if last is not None and now - last < slow[0]:
                self.fired += 1
                raise SlowModeWait(max(1, math.ceil(slow[0] - (now - last))))

    def record_send(self, account_id: int, chat_id: int) -> None:
        """Remember a successful send (for slow mode)."""
        if chat_id in self.slow_mode:
            self.last_send[(chat_id, account_id)] = time.monotonic()

    def delay_for(self, account_id: int | None) -> float:
        """How late to answer a call by ``account_id`` (uses up counted latency faults)."""
        if not self.latency:
            return 0.0
        for fault in self.latency:
            if fault.account_id is None or fault.account_id == account_id:
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.latency.remove(fault)
                return fault.seconds
        return 0.0
