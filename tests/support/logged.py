"""What a test's log observer saw, as the text a reader of the log would see."""
from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent


def messages(events: EventLoggingObserver, level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]
