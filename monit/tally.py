"""Keeping a flood of bad input from becoming a flood of log lines, without hiding it."""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class Tally:
    """Says the first of each kind at once, then every ``interval`` seconds how many more came.

    The count is reported on its own timer, so it is said even when nothing
    more arrives; the timer runs only while there is something to report.
    """

    def __init__(self, clock: IReactorTime, log: Logger, what: str, interval: float = 10.0) -> None:
        self._log = log
        self._what = what
        self._interval = interval
        self._said: set[str] = set()
        self._more: Counter[str] = Counter()
        self._report = LoopingCall(self._say_more)
        self._report.clock = clock

    def add(self, kind: str, reason: str, count: int = 1) -> None:
        """``count`` more of ``kind`` (a subject, say), for this reason."""
        if kind not in self._said:
            self._said.add(kind)
            self._log.warn("{what} on {kind}: {reason}", what=self._what, kind=kind, reason=reason)
            if not self._report.running:
                self._report.start(self._interval, now=False)
            return
        self._more[kind] += count

    def _say_more(self) -> None:
        if not self._more:
            self._report.stop()
            self._said.clear()
            return
        self._log.warn(
            "{what}: {count} more in the last {interval:g} s ({counts})",
            what=self._what,
            count=sum(self._more.values()),
            interval=self._interval,
            counts=", ".join(f"{kind}: {count}" for kind, count in self._more.most_common()),
        )
        self._more.clear()

    def stop(self) -> None:
        """Say what is held, and stop the timer (at shutdown)."""
        if self._more:
            self._say_more()
        if self._report.running:
            self._report.stop()
        self._said.clear()
