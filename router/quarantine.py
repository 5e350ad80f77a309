"""Slides whose requests keep killing workers are refused for a while.

A task counts a crash when the worker handling it dies; a task that crashed
``CRASHES_PER_STRIKE`` workers is a strike against its slide, and ``STRIKES`` strikes
quarantine the slide for ``SECONDS``: its requests are answered ``quarantined`` instead
of taking down worker after worker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from config.errors import Quarantined

log = logging.getLogger(__name__)

CRASHES_PER_STRIKE = 2
STRIKES = 2
SECONDS = 300.0


class Quarantine:
    def __init__(self, strikes: int = STRIKES, seconds: float = SECONDS) -> None:
        self.strikes_needed = strikes
        self.seconds = seconds
        self._strikes: Counter[str] = Counter()
        self._until: dict[str, float] = {}
        self.quarantines = 0  # slides quarantined since start (a counter for /metrics)

    def check(self, slide: str) -> None:
        """Quarantined while ``slide`` is refused; a lapsed quarantine starts afresh."""
        until = self._until.get(slide)
        if until is None:
            return
        if time.monotonic() < until:
            raise Quarantined(f"slide {slide!r} crashed workers repeatedly; refused")
        del self._until[slide]
        self._strikes.pop(slide, None)

    def crashed(self, slide: str, crashes: int) -> bool:
        """A task for ``slide`` has now crashed ``crashes`` workers; True when that makes
        the slide quarantined just now."""
        if crashes < CRASHES_PER_STRIKE:
            return False
        self._strikes[slide] += 1
        if self._strikes[slide] < self.strikes_needed or slide in self._until:
            return False
        self._until[slide] = time.monotonic() + self.seconds
        self.quarantines += 1
        log.error("slide %r quarantined after crashing workers repeatedly", slide)
        return True

    def slides(self) -> list[str]:
        return sorted(self._until)
