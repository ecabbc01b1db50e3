"""Waiting for something that happens once, each caller with a Deferred of its own."""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")


class OneShotObserver(Generic[T]):
    """Hands out Deferreds for one outcome; ``fire`` settles them all.

    Every caller of ``when_fired`` gets a fresh Deferred, so one caller's
    callbacks cannot change what the next one sees, and cancelling it only
    stops that caller waiting. Once fired, later callers get the outcome at
    once. Something that happens again (a new connection, a new fetch) takes
    a new observer each time.
    """

    def __init__(self) -> None:
        self._waiters: dict[Deferred[T], None] = {}  # an ordered set: a cancel removes one at once
        self._outcome: T | Failure | None = None
        self._fired = False

    @property
    def fired(self) -> bool:
        return self._fired

    def when_fired(self) -> Deferred[T]:
        if self._fired:
            outcome = self._outcome
            return fail(outcome) if isinstance(outcome, Failure) else succeed(outcome)  # type: ignore[arg-type]
        waiter: Deferred[T] = Deferred(self._forget)
        self._waiters[waiter] = None
        return waiter

    def fire(self, outcome: T | Failure) -> None:
        """Settle every waiter with the outcome (a result, or a Failure); only the first call counts."""
        if self._fired:
            return
        self._fired, self._outcome = True, outcome
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    def _forget(self, waiter: Deferred[T]) -> None:
        self._waiters.pop(waiter, None)
