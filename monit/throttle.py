"""Keeping a flood of bad input from becoming a flood of log lines."""
from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class Throttle:
    """At most one line per key per ``interval`` seconds; counts the lines it held back."""

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """None to hold this line back; else how many were held back since the last one let through."""
        now = self._clock.seconds()
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval:
            self._last[key] = (last, held + 1)
            return None
        self._last[key] = (now, 0)
        return held
