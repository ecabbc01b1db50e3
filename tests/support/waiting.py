"""Wait for a condition with a deadline, letting the reactor run meanwhile."""
from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater


async def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {what or condition}")
        await deferLater(reactor, 0.01, lambda: None)


async def within(d: Deferred, timeout: float = 10.0):
    """The Deferred's result, or a TimeoutError if it takes longer than the deadline."""
    d.addTimeout(timeout, reactor)
    return await d
