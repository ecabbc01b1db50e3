"""A caller's Deferred for work whose own chain the caller must not reach into."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def relayed(work: Deferred[T], canceller: Callable[[Deferred[T]], None] | None = None) -> Deferred[T]:
    """A new Deferred with the work's outcome, unless it has fired first (cancelled, or timed out).

    What the caller adds, and its cancelling, act on the new one only; the
    work's chain ends here, so a failure that comes after nobody waits is
    nobody's business.
    """

    def relay(outcome: T | Failure) -> None:
        if result.called:
            return
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    result: Deferred[T] = Deferred(canceller)
    work.addBoth(relay)
    return result
