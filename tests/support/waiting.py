"""Wait for a condition with a deadline, letting the reactor run meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

_T = TypeVar("_T")


async def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str | Callable[[], object] = ""
) -> None:
    """Wait until ``condition()`` holds; ``what`` (or what it returns, when called) names it if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = what() if callable(what) else what
            raise TimeoutError(f"condition not met within {timeout}s: {shown or condition}")
        await deferLater(reactor, 0.01, lambda: None)


async def within(d: Deferred[_T], timeout: float = 10.0) -> _T:
    """The Deferred's result, or a TimeoutError if it takes longer than the deadline."""
    d.addTimeout(timeout, reactor)
    return await d
