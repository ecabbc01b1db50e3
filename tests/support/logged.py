"""What a test's log observer saw, as the text a reader of the log would see."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent


def messages(events: EventLoggingObserver, level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


def observer(record: Callable[[LogEvent], None]) -> ILogObserver:
    """A callable as a log observer: Twisted takes any callable of one event; only zope wants it declared."""
    return cast(ILogObserver, record)
